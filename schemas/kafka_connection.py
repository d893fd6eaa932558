"""How a client reaches Kafka: the brokers and, on a secured cluster, TLS and SASL credentials.

Plain data, built from the settings (``Settings.kafka``) and handed to whatever opens a Kafka
client; `streams.kafka_clients` turns it into aiokafka's and faust's options.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

__all__ = ["KafkaConnection", "SaslMechanism", "SecurityProtocol"]

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"]


@dataclass(frozen=True)
class KafkaConnection:
    """The brokers (``host:port``, comma-separated) and how to authenticate to them.

    With the defaults it is a plaintext connection, as to a local development broker.
    """

    bootstrap_servers: str
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism = "SCRAM-SHA-512"
    sasl_username: str | None = None
    # Kept out of repr, so that a logged connection never shows the password.
    sasl_password: str | None = field(default=None, repr=False)
    #: CA bundle that signed the brokers' certificates; None trusts the system's CAs.
    ssl_cafile: Path | None = None
    #: Client certificate and its key, for brokers that ask for one (mutual TLS).
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    def __post_init__(self) -> None:
        if self.uses_sasl and not (self.sasl_username and self.sasl_password):
            raise ValueError(
                f"{self.security_protocol} needs a SASL user name and password "
                "(RAGSTREAM_KAFKA_SASL_USERNAME, RAGSTREAM_KAFKA_SASL_PASSWORD)"
            )
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError(
                "a client certificate needs its key, and a key its certificate "
                "(RAGSTREAM_KAFKA_SSL_CERTFILE, RAGSTREAM_KAFKA_SSL_KEYFILE)"
            )

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def describe(self) -> str:
        """How it connects, in words and without secrets, for error messages."""
        login = f" as {self.sasl_username!r} ({self.sasl_mechanism})" if self.uses_sasl else ""
        return f"Kafka at {self.bootstrap_servers} over {self.security_protocol}{login}"
