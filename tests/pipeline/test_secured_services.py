"""The whole pipeline through a Kafka broker that takes only TLS + SCRAM-SHA-512 logins and a
Chroma server that takes only requests with its token.

Every hop (the changes stage's faust workers, the Ray consumers, the API's chunk-log views and
Chroma queries, publishers, lag readers) connects with the settings a user would set; a wrong
password ends a command at once with what to fix. The API runs in a process of its own, as
`ragstream serve` does: chromadb's async clients share one connection pool, and its headers, per
event loop, so the token could not be told apart from the tests' own Chroma clients in this one.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from stage_process import REPO

from deploy import BrokerSecurity, CertificateAuthority, ChromaServer, KafkaBroker, free_port
from schemas import DocumentEvent, EventOp, Settings
from schemas.kafka_connection import KafkaConnection
from streams.dlq import read_dead_letters
from streams.kafka_clients import KafkaRefused, check_kafka_connection, client_options

pytestmark = pytest.mark.integration

USER, PASSWORD = "ragstream", "a-long-random-password"
CHROMA_TOKEN = "chroma-token-of-this-module"


@pytest.fixture(scope="module")
def secured_broker(tmp_path_factory):
    state = tmp_path_factory.mktemp("secured-kafka")
    authority = CertificateAuthority.create(state / "ca")
    broker = KafkaBroker(state, free_port(), security=BrokerSecurity(authority, {USER: PASSWORD}))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="module")
def chroma_with_token(tmp_path_factory):
    server = ChromaServer(tmp_path_factory.mktemp("chroma-with-token"), free_port(), token=CHROMA_TOKEN)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def pipeline_settings(secured_broker, chroma_with_token, module_namespace, tmp_path_factory) -> Settings:
    """The pipeline's settings with the secured listener only (the plaintext port is the
    launcher's own) and Chroma's token."""
    kafka = secured_broker.client_connection(USER)
    return Settings(
        bootstrap_servers=kafka.bootstrap_servers,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username=USER,
        kafka_sasl_password=PASSWORD,
        kafka_ssl_cafile=kafka.ssl_cafile,
        chroma_port=chroma_with_token.port,
        chroma_token=CHROMA_TOKEN,
        api_port=free_port(),
        partitions=2,
        state_dir=tmp_path_factory.mktemp("secured-state"),
    ).namespaced(module_namespace)


def child_env(settings: Settings) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("RAGSTREAM_")} | settings.to_env()


@pytest.fixture(scope="module")
def api_process(pipeline_settings, consumer_group, tmp_path_factory):
    """`ragstream serve --replicas 0` in its own process with the module's settings, once ready."""
    log = tmp_path_factory.mktemp("secured-api") / "api.log"
    with log.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "ragstream", "serve", "--replicas", "0"],
            cwd=REPO,
            env=child_env(pipeline_settings),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_ready(f"http://127.0.0.1:{pipeline_settings.api_port}", process, log)
        yield process
    finally:
        process.terminate()
        process.wait(timeout=30)


def wait_until_ready(url: str, process: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the API exited: {log.read_text()[-3000:]}"
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/readyz").status_code == 200:
                return
        time.sleep(0.5)
    raise TimeoutError(f"the API was not ready in {timeout:.0f} s: {log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
async def api(pipeline_settings, api_process):
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{pipeline_settings.api_port}") as client:
        yield client


async def test_documents_travel_every_hop_over_sasl_ssl(pipeline):
    run = f"secured-{uuid.uuid4().hex[:8]}"
    events = [
        DocumentEvent(
            doc_id=f"{run}/{i}", op=EventOp.UPSERT, content=f"Lighthouse {i} guards the rocky {run} coast."
        )
        for i in range(5)
    ]
    await pipeline.publisher.publish_many(events)
    async with AIOKafkaProducer(**client_options(pipeline.settings.kafka), acks="all") as producer:
        await producer.send_and_wait(pipeline.settings.events_topic, b"not json", key=f"{run}/bad".encode())
    await pipeline.drain()

    hits = await pipeline.search(f"lighthouse rocky {run} coast", k=10)
    assert {hit["doc_id"] for hit in hits} >= {event.doc_id for event in events}
    letters = await read_dead_letters(pipeline.settings.kafka, pipeline.settings.dlq_topic)
    assert f"{run}/bad".encode() in [stored.letter.key for stored in letters]


def test_a_wrong_password_ends_a_command_at_once_saying_what_to_check(pipeline_settings):
    env = child_env(pipeline_settings) | {"RAGSTREAM_KAFKA_SASL_PASSWORD": "not-the-password"}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "ragstream", "status"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    took = time.monotonic() - started
    assert result.returncode == 2, result.stdout + result.stderr
    said = " ".join((result.stdout + result.stderr).split())
    assert "refused the login" in said and "RAGSTREAM_KAFKA_SASL_PASSWORD" in said, said
    assert took < 60, f"a refused login took {took:.0f} s to report"


async def test_an_untrusted_certificate_and_a_plaintext_client_are_told_apart_from_a_down_broker(
    secured_broker, tmp_path
):
    good = secured_broker.client_connection(USER)
    stranger = CertificateAuthority.create(tmp_path / "another-ca")
    with pytest.raises(KafkaRefused, match="RAGSTREAM_KAFKA_SSL_CAFILE"):
        await check_kafka_connection(replace(good, ssl_cafile=stranger.ca_file))
    with pytest.raises(KafkaRefused, match="RAGSTREAM_KAFKA_SECURITY_PROTOCOL=PLAINTEXT"):
        await check_kafka_connection(KafkaConnection(good.bootstrap_servers))
    # Nobody listening is no refusal: the processes wait for brokers that are down.
    await check_kafka_connection(replace(good, bootstrap_servers=f"127.0.0.1:{free_port()}"))
    await check_kafka_connection(good)
