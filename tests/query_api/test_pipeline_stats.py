"""``GET /v1/stats`` as a client sees it while consumers drain a backlog: the rate and the actor count."""

from __future__ import annotations

import time
from types import SimpleNamespace

import orjson
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from consumers.controller import ScalingReport
from query_api.routes.stats import router
from query_api.stats import StatsTail
from schemas import Settings
from schemas.kafka_connection import KafkaConnection


def _counters(consumer_id: str, events_consumed: int, seconds_ago: float) -> tuple[bytes, bytes]:
    message = {
        "consumer_id": consumer_id,
        "events_consumed": events_consumed,
        "updated_at": time.time() - seconds_ago,
    }
    return consumer_id.encode(), orjson.dumps(message)


def _stats_route(*messages: tuple[bytes, bytes]) -> TestClient:
    """The route on an app of its own, as on a replica that has just started."""
    tail = StatsTail(KafkaConnection("127.0.0.1:1"), "stats")
    for key, value in messages:
        tail.apply(key, value)
    app = FastAPI()
    app.include_router(router)
    app.state.services = SimpleNamespace(stats=tail, settings=Settings())
    return TestClient(app)


def test_the_first_request_to_a_replica_already_shows_the_events_per_second_of_a_draining_backlog() -> None:
    # One consumer's batches, as the stats topic holds them: 100 events every 5 s.
    client = _stats_route(*(_counters("a", 100 * n, seconds_ago=40 - 5 * n) for n in range(9)))

    rate = client.get("/v1/stats").json()["events_per_s"]

    assert rate == pytest.approx(20.0, rel=0.2)


def test_a_client_that_polls_less_often_than_the_window_still_gets_the_rate() -> None:
    client = _stats_route(_counters("a", 0, seconds_ago=30), _counters("a", 300, seconds_ago=2))

    first = client.get("/v1/stats").json()["events_per_s"]
    second = client.get("/v1/stats").json()["events_per_s"]

    assert first is not None and first > 0
    assert second is not None and second > 0


def test_an_idle_pipeline_reads_zero_events_per_second_not_null() -> None:
    client = _stats_route(_counters("a", 500, seconds_ago=3600), _counters("a", 900, seconds_ago=3000))

    assert client.get("/v1/stats").json()["events_per_s"] == 0


def test_events_per_second_is_null_until_any_consumer_has_reported() -> None:
    assert _stats_route().get("/v1/stats").json()["events_per_s"] is None


def test_consumers_counts_the_actors_that_answer_not_every_consumer_that_ever_reported() -> None:
    # Two consumers died and were restarted under new ids; the controller sees one actor answer.
    report = ScalingReport(Settings().consumer_group, 1, 1, 1, "lag 0", time.time())
    client = _stats_route(
        _counters("a", 100, seconds_ago=300),
        _counters("b", 200, seconds_ago=200),
        _counters("c", 50, seconds_ago=1),
        (report.key, report.to_json()),
    )

    stats = client.get("/v1/stats").json()

    assert stats["consumers"] == 1
    # What the dead ones consumed still counts.
    assert stats["events_consumed"] == 350


def test_without_a_controller_only_consumers_that_reported_lately_are_counted() -> None:
    client = _stats_route(_counters("a", 100, seconds_ago=3600), _counters("b", 50, seconds_ago=5))

    assert client.get("/v1/stats").json()["consumers"] == 1
