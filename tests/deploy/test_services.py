"""The local stack's services start, answer clients, and survive a restart with their data."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import chromadb
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from chromadb.config import Settings

from deploy import ChromaServer, KafkaBroker, free_port
from deploy._process import ManagedProcess


async def _create_topic(bootstrap_servers: str) -> str:
    topic = f"test-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    return topic


async def _produce(bootstrap_servers: str, topic: str, key: bytes, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def _read_one(bootstrap_servers: str, topic: str) -> tuple[bytes | None, bytes | None]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers,
        group_id=f"group-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        records = await consumer.getmany(timeout_ms=30_000, max_records=1)
    finally:
        await consumer.stop()
    messages = [record for batch in records.values() for record in batch]
    assert messages, f"no message read from {topic}"
    return messages[0].key, messages[0].value


@pytest.mark.integration
async def test_broker_delivers_a_produced_message_to_a_consumer(kafka_broker: KafkaBroker) -> None:
    topic = await _create_topic(kafka_broker.bootstrap_servers)

    await _produce(kafka_broker.bootstrap_servers, topic, b"doc-1", b"hello")

    assert await _read_one(kafka_broker.bootstrap_servers, topic) == (b"doc-1", b"hello")


@pytest.mark.integration
@pytest.mark.parametrize("halt", ["stop", "kill"])
async def test_broker_keeps_messages_when_restarted_on_its_data_dir(
    kafka_broker: KafkaBroker, tmp_path: Path, halt: str
) -> None:
    # A broker of its own, so that the session broker stays up for other tests;
    # depending on kafka_broker skips this test where Kafka cannot run at all.
    broker = KafkaBroker(tmp_path, free_port())
    broker.start()
    try:
        topic = await _create_topic(broker.bootstrap_servers)
        await _produce(broker.bootstrap_servers, topic, b"doc-1", b"kept")

        getattr(broker, halt)()
        assert broker.pid is None
        broker.start()

        assert await _read_one(broker.bootstrap_servers, topic) == (b"doc-1", b"kept")
    finally:
        broker.stop()


@pytest.mark.integration
def test_chroma_answers_heartbeat_and_returns_an_upserted_vector(chroma_server: ChromaServer) -> None:
    client = chromadb.HttpClient(
        host="127.0.0.1", port=chroma_server.port, settings=Settings(anonymized_telemetry=False)
    )
    assert client.heartbeat() > 0
    collection = client.create_collection(f"test-{uuid.uuid4().hex[:8]}", embedding_function=None)

    collection.upsert(
        ids=["near", "far"],
        embeddings=[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]],
        documents=["close to the query", "far from the query"],
    )
    result = collection.query(query_embeddings=[[0.9, 0.1, 0.0]], n_results=1)

    assert result["ids"] == [["near"]]
    assert result["documents"] == [["close to the query"]]


def test_process_can_be_stopped_from_its_pid_file_alone(tmp_path: Path) -> None:
    # What `make down` does from another shell: only the pid file connects it to the process.
    files = {"log_file": tmp_path / "sleeper.log", "pid_file": tmp_path / "sleeper.pid"}
    started = ManagedProcess("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], **files)
    started.start()
    found = ManagedProcess("sleeper", [], **files)
    assert found.pid == started.pid

    found.stop()
    found.stop()

    assert not started.is_running()
    assert not (tmp_path / "sleeper.pid").exists()
