"""Session fixtures for the real services: a Kafka broker and a Chroma server on free ports."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Protocol

import pytest

from deploy import ChromaServer, DeployError, KafkaBroker, free_port
from deploy.kafka import VERSION_VARIABLE, kafka_version


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long",
        action="store_true",
        help="run the bigger versions of the fault, churn and stage scenarios (minutes each)",
    )


def pytest_configure(config: pytest.Config) -> None:
    # Read by the test modules when they are imported (tests/scale.py), which is after this.
    if config.getoption("--long"):
        os.environ["RAGSTREAM_LONG_TESTS"] = "1"


def pytest_report_header() -> str:
    try:
        version = kafka_version()
    except DeployError as exc:
        return f"kafka broker: {exc}"
    return f"kafka broker: {version} (set {VERSION_VARIABLE} for another)"


class _Service(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...


def _start_or_skip(service: _Service, what: str) -> None:
    """Start `service`; if it cannot start, skip the test, or fail it under CI=true."""
    try:
        service.start()
        return
    except (DeployError, OSError) as exc:
        reason = f"{what} could not be started: {exc}"
    # It may have started and then never answered.
    service.stop()
    # CI must never pass by skipping.
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A single-node KRaft Kafka broker of `kafka_version()` (Kafka 4 unless RAGSTREAM_KAFKA_VERSION
    names another; `pytest --long` also runs a few modules on 3.9: tests/deploy/test_kafka_versions.py);
    its address is `kafka_broker.bootstrap_servers`."""
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka"), free_port())
    _start_or_skip(broker, "Kafka broker")
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromaServer]:
    """A Chroma server; its address is `chroma_server.url`."""
    server = ChromaServer(tmp_path_factory.mktemp("chroma"), free_port())
    _start_or_skip(server, "Chroma server")
    yield server
    server.stop()
