"""Index generations on the consumers' side, against the real broker, Chroma and Ray: a generation's
resources dropped, and the supervisor that runs one consumer group per generation."""

from __future__ import annotations

import chromadb
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import OffsetAndMetadata
from chromadb.errors import NotFoundError

from consumers.generation_resources import drop_generation
from engines.chroma import open_collection
from schemas import Settings
from schemas.generations import Generation, IndexShape
from streams.topics import ensure_topics

pytestmark = [pytest.mark.integration]


#: Small and quick on 2 cores: one consumer per generation at half a Ray CPU, so that two
#: generations and a member being replaced fit beside each other.
QUICK = {
    "partitions": 2,
    "consumer_input": "events",  # no changes stage: the consumers read the events topic
    "consumers_min": 1,
    "consumers_max": 1,
    "consumer_num_cpus": 0.5,
    "consumer_memory_bytes": 500_000_000,
    "torch_threads": 1,
    "fetch_max_records": 64,
}


@pytest.fixture(scope="module")
def base_settings(kafka_broker, chroma_server, module_namespace, tmp_path_factory) -> Settings:
    """Generation 0's settings, with chunks of 1000 characters."""
    servers, state = kafka_broker.bootstrap_servers, tmp_path_factory.mktemp("generations-state")
    where = {"bootstrap_servers": servers, "chroma_port": chroma_server.port, "state_dir": state}
    return Settings.model_validate(QUICK | where | {"chunk_size": 1000}).namespaced(module_namespace)


def shaped(settings: Settings, chunk_size: int, chunk_overlap: int) -> IndexShape:
    return IndexShape(settings.model, chunk_size, chunk_overlap, settings.precision)


async def collection_names(settings: Settings) -> set[str]:
    client = await chromadb.AsyncHttpClient(host=settings.chroma_host, port=settings.chroma_port)
    return {collection.name for collection in await client.list_collections()}


class Broker:
    """What an operator would list on the broker: topics, consumer groups, committed offsets."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    async def __aenter__(self) -> Broker:
        self._admin = AIOKafkaAdminClient(bootstrap_servers=self._settings.bootstrap_servers)
        await self._admin.start()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self._admin.close()

    async def topics(self) -> set[str]:
        return set(await self._admin.list_topics())

    async def groups(self) -> set[str]:
        return {group for group, *_ in await self._admin.list_consumer_groups()}

    async def offsets(self, group: str) -> dict[TopicPartition, OffsetAndMetadata]:
        return await self._admin.list_consumer_group_offsets(group)


async def commit_offset(settings: Settings, offset: int) -> None:
    """Commit ``offset`` on the input topic's partition 0 for the generation's consumer group."""
    tp = TopicPartition(settings.input_topic, 0)
    servers, group = settings.bootstrap_servers, settings.consumer_group
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.commit({tp: offset})
    finally:
        await consumer.stop()


async def test_dropping_a_generation_deletes_its_collection_chunk_log_and_offsets_and_nothing_else(
    base_settings,
):
    gen = Generation(7, shaped(base_settings, 400, 40)).settings(base_settings)
    await ensure_topics(base_settings)
    await ensure_topics(gen)
    client = await chromadb.AsyncHttpClient(host=gen.chroma_host, port=gen.chroma_port)
    await open_collection(client, gen.collection)
    await open_collection(client, base_settings.collection)
    await commit_offset(gen, 0)
    await commit_offset(base_settings, 0)
    async with Broker(base_settings) as broker:
        assert await broker.offsets(gen.consumer_group)

        await drop_generation(gen, active=base_settings)

        assert gen.collection not in await collection_names(gen)
        assert gen.chunks_topic not in await broker.topics()
        assert gen.consumer_group not in await broker.groups()
        assert not await broker.offsets(gen.consumer_group)
        # The active generation's resources, and the topics all generations share, stay.
        assert base_settings.collection in await collection_names(gen)
        assert {base_settings.chunks_topic, gen.input_topic, gen.control_topic} <= await broker.topics()
        assert await broker.offsets(base_settings.consumer_group)


async def test_dropping_a_generation_again_finds_nothing_to_do(base_settings):
    gen = Generation(8, shaped(base_settings, 400, 40)).settings(base_settings)

    await drop_generation(gen, active=base_settings)
    await drop_generation(gen, active=base_settings)

    with pytest.raises(NotFoundError):
        await (await chromadb.AsyncHttpClient(host=gen.chroma_host, port=gen.chroma_port)).get_collection(
            gen.collection
        )


async def test_the_active_generations_resources_are_never_dropped(base_settings):
    await ensure_topics(base_settings)
    client = await chromadb.AsyncHttpClient(host=base_settings.chroma_host, port=base_settings.chroma_port)
    await open_collection(client, base_settings.collection)
    active = Generation(3, shaped(base_settings, 400, 40)).settings(base_settings)

    with pytest.raises(ValueError, match="active generation"):
        await drop_generation(active, active=active)
    with pytest.raises(ValueError, match="active generation"):
        await drop_generation(base_settings, active=base_settings)

    assert base_settings.collection in await collection_names(base_settings)
