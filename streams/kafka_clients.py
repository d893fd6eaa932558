"""The options every Kafka client of ours is opened with, from one `KafkaConnection`.

aiokafka's producers, consumers, admin and low-level clients take the same security options, and
faust takes them as broker credentials; building them here keeps a secured cluster (TLS, SASL
logins) one setting away for every process, with no client left speaking plaintext.
"""

from __future__ import annotations

import ssl
from typing import Any

import faust
from aiokafka.helpers import create_ssl_context

from schemas.kafka_connection import KafkaConnection

__all__ = ["client_options", "faust_broker_options"]


def client_options(kafka: KafkaConnection) -> dict[str, Any]:
    """``bootstrap_servers`` and the security options, for any aiokafka client's constructor."""
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers,
        "security_protocol": kafka.security_protocol,
    }
    if kafka.uses_tls:
        options["ssl_context"] = _ssl_context(kafka)
    if kafka.uses_sasl:
        options["sasl_mechanism"] = kafka.sasl_mechanism
        options["sasl_plain_username"] = kafka.sasl_username
        options["sasl_plain_password"] = kafka.sasl_password
    return options


def faust_broker_options(kafka: KafkaConnection) -> dict[str, Any]:
    """``broker`` and ``broker_credentials`` for a ``faust.App``."""
    broker = [
        f"kafka://{address.strip()}" for address in kafka.bootstrap_servers.split(",") if address.strip()
    ]
    credentials: faust.SASLCredentials | faust.SSLCredentials | None = None
    if kafka.uses_sasl:
        credentials = faust.SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.sasl_password,
            mechanism=kafka.sasl_mechanism,
            ssl_context=_ssl_context(kafka) if kafka.uses_tls else None,
        )
    elif kafka.uses_tls:
        credentials = faust.SSLCredentials(_ssl_context(kafka))
    return {"broker": broker, "broker_credentials": credentials}


def _ssl_context(kafka: KafkaConnection) -> ssl.SSLContext:
    # Made per client, not cached: a rotated CA or client certificate is read by the next client.
    return create_ssl_context(cafile=kafka.ssl_cafile, certfile=kafka.ssl_certfile, keyfile=kafka.ssl_keyfile)
