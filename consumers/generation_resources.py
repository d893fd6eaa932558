"""Dropping what an index generation made: its Chroma collection, its chunk-log topic and its
consumer group's committed offsets.

Run by the consumers' process once a generation's record is gone from the control topic (an
aborted reindex, or a kept generation whose time ran out) and its consumer group has stopped.
Every step is idempotent, so a drop cut short is simply run again.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    GroupIdNotFound,
    NonEmptyGroup,
    UnknownTopicOrPartitionError,
    for_code,
)
from aiokafka.protocol.admin import DeleteGroupsRequest
from chromadb.errors import NotFoundError

from consumers.errors import chroma_calls, kafka_calls
from engines.chroma_client import open_chroma
from schemas import Settings
from streams.kafka_clients import client_options

__all__ = ["drop_generation"]

log = logging.getLogger(__name__)

#: A group whose members were just stopped may still count one until the broker saw it leave
#: (at worst its session timeout, 45 s by default): its offsets can be deleted only then.
GROUP_EMPTY_WAIT_S = 60.0


async def drop_generation(settings: Settings, *, active: Settings) -> None:
    """Delete the collection, chunk-log topic and consumer-group offsets that ``settings`` (a
    generation's, from ``Generation.settings``) name; those already gone are fine.

    ``active`` is the active generation's settings: a drop that would touch any of its
    resources is refused (``ValueError``) before anything is deleted. The generation's
    consumers must have stopped: a running one would make its collection again. What Kafka and
    Chroma raise comes as an ``IndexingError`` (``consumers.errors``); the drop can be run again.
    """
    shared = [
        what
        for what, mine, theirs in (
            ("collection", settings.collection, active.collection),
            ("chunk-log topic", settings.chunks_topic, active.chunks_topic),
            ("consumer group", settings.consumer_group, active.consumer_group),
        )
        if mine == theirs
    ]
    if shared:
        raise ValueError(
            f"refusing to drop the active generation's {', '.join(shared)} "
            f"({settings.collection}, {settings.chunks_topic}, {settings.consumer_group})"
        )
    with chroma_calls(f"dropping collection {settings.collection}"):
        await _delete_collection(settings)
    with kafka_calls(f"dropping topic {settings.chunks_topic} and group {settings.consumer_group}"):
        admin = AIOKafkaAdminClient(**client_options(settings.kafka))
        await admin.start()
        try:
            await _delete_topic(admin, settings.chunks_topic)
            await _delete_group(admin, settings.consumer_group)
        finally:
            await admin.close()
    log.info(
        "dropped collection %s, topic %s and the offsets of group %s",
        settings.collection,
        settings.chunks_topic,
        settings.consumer_group,
    )


async def _delete_collection(settings: Settings) -> None:
    client = await open_chroma(settings)
    try:
        await client.delete_collection(settings.collection)
    except NotFoundError:
        log.debug("collection %s was already gone", settings.collection)


async def _delete_topic(admin: AIOKafkaAdminClient, topic: str) -> None:
    response = await admin.delete_topics([topic])
    for name, code in response.topic_error_codes:
        error = for_code(code) if code else None
        if error is not None and error is not UnknownTopicOrPartitionError:
            raise error(f"deleting topic {name}")


async def _delete_group(admin: AIOKafkaAdminClient, group: str) -> None:
    """Delete ``group`` and its committed offsets (Kafka's DeleteGroups request).

    aiokafka 0.14's admin client has no ``delete_consumer_groups``, but its protocol module has
    the request, which goes to the group's coordinator like the admin's own group requests.
    """
    deadline = time.monotonic() + GROUP_EMPTY_WAIT_S
    while True:
        coordinator = await admin.find_coordinator(group)
        response = await admin._send_request(DeleteGroupsRequest([group]), coordinator)
        [(_, code)] = response.results
        error = for_code(code) if code else None
        if error is None or error is GroupIdNotFound:
            return
        # Members still leaving, or the coordinator moving or loading: both pass.
        if (error is NonEmptyGroup or error.retriable) and time.monotonic() < deadline:
            await asyncio.sleep(1.0)
            continue
        raise error(f"deleting consumer group {group}")
