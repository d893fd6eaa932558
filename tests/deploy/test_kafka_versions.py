"""The broker version the tests run against: Kafka 4 by default, 3.9 as a second leg under --long."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.admin import ApiVersionRequest

from deploy import DeployError, KafkaBroker
from deploy.kafka import DEFAULT_KAFKA_VERSION, SECOND_KAFKA_VERSION, VERSION_VARIABLE, kafka_version

REPO = Path(__file__).resolve().parents[2]

_FETCH = 1
#: The modules the second leg runs: the admin client, produce/consume and a restart
#: (test_services), static membership and its LeaveGroup v3 (test_changes_membership), the faust
#: stage's transactions and the Ray consumers' groups and commits (test_end_to_end).
SECOND_LEG_MODULES = [
    "tests/deploy/test_services.py",
    "tests/streams/test_changes_membership.py",
    "tests/pipeline/test_end_to_end.py",
]


def test_the_broker_is_kafka_4_unless_the_variable_names_another(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(VERSION_VARIABLE, raising=False)
    assert kafka_version() == DEFAULT_KAFKA_VERSION
    assert DEFAULT_KAFKA_VERSION.startswith("4.")
    assert KafkaBroker(Path("unused"), 1, 2).version == DEFAULT_KAFKA_VERSION

    monkeypatch.setenv(VERSION_VARIABLE, SECOND_KAFKA_VERSION)
    assert KafkaBroker(Path("unused"), 1, 2).version == SECOND_KAFKA_VERSION


@pytest.mark.parametrize("value", ["4", "latest", "4.4.0; rm -rf /"])
def test_a_version_that_is_not_a_release_is_refused_with_its_name(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(VERSION_VARIABLE, value)
    with pytest.raises(DeployError, match=VERSION_VARIABLE):
        kafka_version()


async def _fetch_versions(bootstrap_servers: str) -> tuple[int, int]:
    client = AIOKafkaClient(bootstrap_servers=bootstrap_servers)
    try:
        await client.bootstrap()
        node = next(iter(client.cluster.brokers())).nodeId
        response = await client.send(node, ApiVersionRequest())
    finally:
        await client.close()
    return next((low, high) for key, low, high in response.api_versions if key == _FETCH)


@pytest.mark.integration
async def test_the_session_broker_runs_the_chosen_version(kafka_broker: KafkaBroker) -> None:
    assert kafka_broker.version == kafka_version()
    assert f"Kafka version: {kafka_broker.version}" in kafka_broker.server_log.read_text()

    oldest_fetch, _ = await _fetch_versions(kafka_broker.bootstrap_servers)
    # KIP-896: Kafka 4 refuses Fetch v0-v3 (and other versions older than 2.1's).
    assert oldest_fetch == (4 if kafka_broker.version.startswith("4.") else 0)


@pytest.mark.integration
@pytest.mark.long_only
@pytest.mark.timeout(3600)
def test_the_broker_facing_modules_pass_on_the_second_kafka_version(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    # A pytest of its own: every session fixture (the broker, the stage, Ray, the API) is then
    # built against the other broker, and this session's fixtures stay as they are.
    # The modules at their default sizes: the leg proves the protocol, not the scale.
    env = {k: v for k, v in os.environ.items() if k != "RAGSTREAM_LONG_TESTS"}
    env[VERSION_VARIABLE] = SECOND_KAFKA_VERSION
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SECOND_LEG_MODULES]
    cmd += [f"--basetemp={tmp_path / 'second-leg'}", "--junitxml", str(tmp_path / "second-leg.xml")]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)

    output = (result.stdout + result.stderr)[-6000:]
    assert result.returncode == 0, f"on Kafka {SECOND_KAFKA_VERSION}:\n{output}"
    assert " passed" in output and " skipped" not in output, output
