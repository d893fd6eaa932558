"""A broker that takes only TLS connections logging in with SCRAM-SHA-512, reached with aiokafka."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError
from aiokafka.helpers import create_ssl_context
from unavailable import skip_or_fail

from deploy import BrokerSecurity, CertificateAuthority, DeployError, KafkaBroker
from deploy._process import free_port
from schemas.kafka_connection import KafkaConnection

#: What a refused client may take at most: a refusal is an answer, not a timeout.
_REFUSED_WITHIN_S = 10.0


@pytest.fixture(scope="module")
def secured_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    state = tmp_path_factory.mktemp("sasl-kafka")
    users = {"indexer": secrets.token_urlsafe(16), "reader": secrets.token_urlsafe(16)}
    security = BrokerSecurity(CertificateAuthority.create(state / "ca"), users)
    broker = KafkaBroker(state, free_port(), security=security)
    try:
        broker.start()
    except (DeployError, OSError) as exc:
        broker.stop()
        skip_or_fail(f"secured Kafka broker could not be started: {exc}")
    yield broker
    broker.stop()


def _aiokafka_options(connection: KafkaConnection) -> dict[str, Any]:
    assert connection.ssl_cafile is not None
    return {
        "bootstrap_servers": connection.bootstrap_servers,
        "security_protocol": connection.security_protocol,
        "sasl_mechanism": connection.sasl_mechanism,
        "sasl_plain_username": connection.sasl_username,
        "sasl_plain_password": connection.sasl_password,
        "ssl_context": create_ssl_context(cafile=str(connection.ssl_cafile)),
    }


async def _round_trip(options: dict[str, Any], value: bytes) -> list[bytes | None]:
    """Create a topic, write `value` to it and read it back, each step as the user in `options`."""
    topic = f"secured-{uuid.uuid4().hex[:8]}"
    async with contextlib.AsyncExitStack() as admin_open:
        admin = AIOKafkaAdminClient(**options)
        admin_open.push_async_callback(admin.close)
        await admin.start()
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    async with AIOKafkaProducer(**options) as producer:
        await producer.send_and_wait(topic, value, key=b"doc-1")
    async with AIOKafkaConsumer(topic, auto_offset_reset="earliest", group_id=None, **options) as consumer:
        batch = await consumer.getmany(timeout_ms=10_000)
    return [record.value for records in batch.values() for record in records]


async def _refused(options: dict[str, Any]) -> None:
    """Start a producer that must not get in, and see it refused well before its request timeout."""
    producer = AIOKafkaProducer(request_timeout_ms=30_000, **options)
    try:
        # aiokafka tells every failed bootstrap apart only in its log; start() raises one error.
        with pytest.raises(KafkaConnectionError, match="Unable to bootstrap from"):
            async with asyncio.timeout(_REFUSED_WITHIN_S):
                await producer.start()
    finally:
        await producer.stop()


@pytest.mark.integration
async def test_a_user_produces_and_consumes_through_the_secured_listener(secured_broker: KafkaBroker) -> None:
    indexer = _aiokafka_options(secured_broker.client_connection("indexer"))

    values = await _round_trip(indexer, b"secret text")

    assert values == [b"secret text"]
    assert secured_broker.secure_bootstrap_servers != secured_broker.bootstrap_servers


@pytest.mark.integration
@pytest.mark.parametrize(
    ("user", "password"),
    [("reader", "not-the-password"), ("mallory", None)],
    ids=["wrong password", "unknown user"],
)
async def test_a_wrong_login_is_refused_at_once_with_the_reason_in_the_log(
    secured_broker: KafkaBroker, caplog: pytest.LogCaptureFixture, user: str, password: str | None
) -> None:
    options = _aiokafka_options(secured_broker.client_connection("reader"))
    options["sasl_plain_username"] = user
    options["sasl_plain_password"] = password or options["sasl_plain_password"]

    with caplog.at_level(logging.ERROR, logger="aiokafka"):
        await _refused(options)

    # Kafka answers an unknown user as it does a wrong password, so that users cannot be guessed.
    assert "SaslAuthenticationFailed" in caplog.text
    assert "invalid credentials with SASL mechanism SCRAM-SHA-512" in caplog.text


@pytest.mark.integration
async def test_a_client_that_does_not_trust_the_ca_is_refused(
    secured_broker: KafkaBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    options = _aiokafka_options(secured_broker.client_connection("reader"))
    # A CA of the same name: only its key tells it apart.
    stranger = CertificateAuthority.create(tmp_path / "other-ca")
    options["ssl_context"] = create_ssl_context(cafile=str(stranger.ca_file))

    with caplog.at_level(logging.ERROR, logger="aiokafka"):
        await _refused(options)

    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text


@pytest.mark.integration
@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SASL_PLAINTEXT"])
async def test_a_client_without_tls_does_not_get_in_on_the_secured_port(
    secured_broker: KafkaBroker, protocol: str
) -> None:
    options = _aiokafka_options(secured_broker.client_connection("reader"))
    options["security_protocol"] = protocol
    if protocol == "PLAINTEXT":
        for key in ("sasl_mechanism", "sasl_plain_username", "sasl_plain_password"):
            del options[key]

    await _refused(options)


@pytest.mark.integration
async def test_the_secured_port_and_the_users_stay_when_the_broker_starts_again(
    secured_broker: KafkaBroker,
) -> None:
    assert secured_broker.security is not None
    users = dict(secured_broker.security.users)
    secured_broker.stop()
    # As `make up` in another shell would: new launcher objects on the same folders.
    authority = CertificateAuthority.load(secured_broker.security.authority.directory)
    again = KafkaBroker(
        secured_broker.home.parent, secured_broker.port, security=BrokerSecurity(authority, users)
    )
    again.start()

    assert again.secure_port == secured_broker.secure_port
    options = _aiokafka_options(again.client_connection("reader"))
    assert await _round_trip(options, b"after a restart") == [b"after a restart"]


def test_an_unsecured_broker_has_no_secured_address_or_users(tmp_path: Path) -> None:
    broker = KafkaBroker(tmp_path, free_port())

    assert broker.secure_port is None
    with pytest.raises(DeployError, match="no secured listener"):
        _ = broker.secure_bootstrap_servers
    with pytest.raises(DeployError, match="no SCRAM user 'reader'"):
        broker.client_connection("reader")


def test_a_scram_password_the_storage_tool_would_misread_is_refused(tmp_path: Path) -> None:
    authority = CertificateAuthority.create(tmp_path)
    with pytest.raises(DeployError, match="'alice'"):
        BrokerSecurity(authority, {"alice": "pass,word]"})
