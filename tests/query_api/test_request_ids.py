"""Every HTTP request has an id: the caller's X-Request-ID when usable, else a new one; it comes back
in the response and is on every log line written while the request is handled."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog
from fastapi import FastAPI
from fastapi.testclient import TestClient

from query_api.request_ids import RequestIdMiddleware
from schemas.logs import configure_logging


@pytest.fixture
def client() -> Iterator[TestClient]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    configure_logging("api", "json")
    app = FastAPI()

    @app.get("/v1/thing")
    async def thing() -> dict[str, str]:
        logging.getLogger("query_api.thing").info("handling")
        return {"ok": "yes"}

    app.add_middleware(RequestIdMiddleware)
    with TestClient(app) as test_client:
        yield test_client
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def _logged_request_ids(err: str) -> list[str]:
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    return [line.get("request_id") for line in lines if line["logger"] == "query_api.thing"]


def test_the_callers_request_id_comes_back_and_is_on_the_log_line(
    client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    response = client.get("/v1/thing", headers={"X-Request-ID": "caller-42"})

    assert response.headers["x-request-id"] == "caller-42"
    assert _logged_request_ids(capsys.readouterr().err) == ["caller-42"]


def test_a_request_without_an_id_gets_a_new_one_per_request(
    client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    first = client.get("/v1/thing").headers["x-request-id"]
    second = client.get("/v1/thing").headers["x-request-id"]

    assert first and second and first != second
    assert _logged_request_ids(capsys.readouterr().err) == [first, second]


def test_an_unusable_request_id_is_replaced(client: TestClient) -> None:
    forged = 'x\n{"level": "error"}'
    response = client.get("/v1/thing", headers={"X-Request-ID": forged.replace("\n", " ")})

    assert response.headers["x-request-id"] != forged.replace("\n", " ")
    assert len(response.headers["x-request-id"]) == 32
