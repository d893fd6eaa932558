"""The options every Kafka client of ours is opened with, from one `KafkaConnection`.

aiokafka's producers, consumers, admin and low-level clients take the same security options, and
faust takes them as broker credentials; building them here keeps a secured cluster (TLS, SASL
logins) one setting away for every process, with no client left speaking plaintext.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Any

import faust
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed, UnsupportedSaslMechanismError
from aiokafka.helpers import create_ssl_context

from schemas.kafka_connection import KafkaConnection

__all__ = ["KafkaRefused", "check_kafka_connection", "client_options", "faust_broker_options"]


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


class KafkaRefused(Exception):
    """The brokers refuse this connection (login, certificate or protocol): retrying cannot help."""


async def check_kafka_connection(kafka: KafkaConnection, timeout_s: float = 10.0) -> None:
    """Raise `KafkaRefused`, saying what to fix, when the first broker that answers refuses us.

    aiokafka's clients report a refused login or an untrusted certificate only as "Unable to
    bootstrap" (the reason goes to its log) and are then retried like a broker that is down, so a
    wrong password would look like a hang. One direct connection tells them apart in well under a
    second. A broker that cannot be reached at all is not a refusal: the callers wait for brokers.
    """
    options = client_options(kafka)
    del options["bootstrap_servers"]
    for address in kafka.bootstrap_servers.split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            connection = await asyncio.wait_for(create_conn(host, int(port), **options), timeout_s)
        except (SaslAuthenticationFailed, UnsupportedSaslMechanismError) as exc:
            raise KafkaRefused(
                f"{kafka.describe()}: the broker refused the login ({exc}); check "
                "RAGSTREAM_KAFKA_SASL_USERNAME, RAGSTREAM_KAFKA_SASL_PASSWORD and "
                "RAGSTREAM_KAFKA_SASL_MECHANISM"
            ) from exc
        except ssl.SSLError as exc:
            raise KafkaRefused(
                f"{kafka.describe()}: TLS with {address} failed ({exc}); check RAGSTREAM_KAFKA_SSL_CAFILE "
                "(the CA that signed the brokers' certificates) and that the address is one the "
                "certificate names"
            ) from exc
        except (KafkaConnectionError, ConnectionResetError) as exc:
            if _port_open(host, int(port)):
                raise KafkaRefused(
                    f"{kafka.describe()}: {address} closed the connection at once ({exc}); is "
                    f"RAGSTREAM_KAFKA_SECURITY_PROTOCOL={kafka.security_protocol} the protocol of "
                    "the broker's listener on that port?"
                ) from exc
            continue
        except (OSError, TimeoutError):
            continue  # down or unreachable: the next address, or the callers' own waiting
        connection.close()
        return


def _port_open(host: str, port: int) -> bool:
    # A broker that was restarting also closes connections: only a port that still accepts them
    # right after is taken to speak another protocol.
    try:
        socket.create_connection((host, port), timeout=2.0).close()
    except OSError:
        return False
    return True
