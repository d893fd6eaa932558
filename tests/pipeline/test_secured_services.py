"""The whole pipeline through a Kafka broker that takes only TLS + SCRAM-SHA-512 logins.

Every hop (the changes stage's faust workers, the Ray consumers, the API's chunk-log views,
publishers, lag readers) connects over SASL_SSL with the settings a user would set; a wrong
password ends a command at once with what to fix.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import pytest
from aiokafka import AIOKafkaProducer
from stage_process import REPO

from deploy import BrokerSecurity, CertificateAuthority, KafkaBroker, free_port
from schemas import DocumentEvent, EventOp, Settings
from streams.dlq import read_dead_letters
from streams.kafka_clients import client_options

pytestmark = pytest.mark.integration

USER, PASSWORD = "ragstream", "a-long-random-password"


@pytest.fixture(scope="module")
def secured_broker(tmp_path_factory):
    state = tmp_path_factory.mktemp("secured-kafka")
    authority = CertificateAuthority.create(state / "ca")
    broker = KafkaBroker(state, free_port(), security=BrokerSecurity(authority, {USER: PASSWORD}))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="module")
def pipeline_settings(secured_broker, chroma_server, module_namespace, tmp_path_factory) -> Settings:
    """The pipeline's settings with the secured listener only: the plaintext port is the launcher's."""
    kafka = secured_broker.client_connection(USER)
    return Settings(
        bootstrap_servers=kafka.bootstrap_servers,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username=USER,
        kafka_sasl_password=PASSWORD,
        kafka_ssl_cafile=kafka.ssl_cafile,
        chroma_port=chroma_server.port,
        partitions=2,
        state_dir=tmp_path_factory.mktemp("secured-state"),
    ).namespaced(module_namespace)


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
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGSTREAM_")}
    env |= pipeline_settings.to_env() | {"RAGSTREAM_KAFKA_SASL_PASSWORD": "not-the-password"}
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
