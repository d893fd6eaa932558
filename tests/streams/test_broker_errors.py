"""Kafka failures leave the publisher classified, and still as the KafkaError its callers catch."""

from __future__ import annotations

import pytest
from aiokafka.errors import KafkaError

from deploy import free_port
from schemas import DocumentEvent, EventOp
from schemas.kafka_connection import KafkaConnection
from streams.errors import BrokerUnavailable
from streams.publisher import EventPublisher


async def test_a_publisher_without_a_broker_raises_a_retriable_kafka_error_that_says_where() -> None:
    publisher = EventPublisher(KafkaConnection(f"127.0.0.1:{free_port()}"), "docs.events")

    with pytest.raises(BrokerUnavailable) as caught:
        async with publisher:
            await publisher.publish(DocumentEvent(doc_id="a", op=EventOp.UPSERT, content="text"))

    # The API answers 503 to any KafkaError: it needs no other clause for ours.
    assert isinstance(caught.value, KafkaError) and caught.value.retriable
    assert str(caught.value).startswith("connecting the publisher to docs.events: KafkaConnectionError")
