"""``/metrics?name[]=…`` answers only the series asked for, and asks Kafka nothing unless the
consumer lag is among them: no broker listens here, so a lag read could only fail."""

from __future__ import annotations

import socket

from query_api.prometheus_metrics import PipelineMetrics
from query_api.stats import StatsTail
from schemas import Settings
from schemas.kafka_connection import KafkaConnection
from streams.lag import LagReader


def _nothing_listening() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"  # closed again before use


def _metrics() -> tuple[PipelineMetrics, LagReader]:
    servers = _nothing_listening()
    reader = LagReader(KafkaConnection(servers), request_timeout_ms=500, retry_timeout_s=0.5)
    settings = Settings(bootstrap_servers=servers)
    return PipelineMetrics(
        StatsTail(KafkaConnection(servers), settings.stats_topic), reader, settings, lag_timeout_s=2
    ), reader


async def test_named_series_come_alone_and_kafka_is_not_asked() -> None:
    metrics, reader = _metrics()

    text = (await metrics.render(["ragstream_api_gc_pause_seconds_count"])).decode()

    series = [line.split("{")[0] for line in text.splitlines() if line and not line.startswith("#")]
    assert series and set(series) == {"ragstream_api_gc_pause_seconds_count"}
    assert not reader.started


async def test_asking_for_the_lag_reads_it_and_a_whole_scrape_still_answers_without_it() -> None:
    metrics, _ = _metrics()

    named = (await metrics.render(["ragstream_consumer_lag", "ragstream_events_consumed_total"])).decode()
    whole = (await metrics.render()).decode()

    # The broker is unreachable: the lag is left out (not shown as 0), the counters are there.
    assert "ragstream_events_consumed_total 0.0" in named.splitlines()
    assert not any(line.startswith("ragstream_consumer_lag{") for line in named.splitlines())
    assert "ragstream_events_consumed_total 0.0" in whole.splitlines()
    assert 'ragstream_api_gc_pause_seconds_count{generation="2"}' in whole
