from __future__ import annotations

import pytest
from pydantic import ValidationError

from schemas import Settings
from schemas.kafka_connection import KafkaConnection


def test_the_default_is_a_plaintext_connection_to_the_brokers() -> None:
    kafka = Settings(bootstrap_servers="b1:9092,b2:9092").kafka
    assert kafka == KafkaConnection("b1:9092,b2:9092")
    assert not kafka.uses_sasl and not kafka.uses_tls


def test_a_sasl_login_without_its_password_is_refused_with_the_variables_to_set() -> None:
    with pytest.raises(ValidationError, match="RAGSTREAM_KAFKA_SASL_PASSWORD"):
        Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_username="ragstream")


def test_a_client_certificate_without_its_key_is_refused() -> None:
    with pytest.raises(ValidationError, match="RAGSTREAM_KAFKA_SSL_KEYFILE"):
        Settings(kafka_security_protocol="SSL", kafka_ssl_certfile="/etc/client.pem")


def test_the_password_shows_in_neither_the_repr_nor_the_description() -> None:
    kafka = Settings(
        kafka_security_protocol="SASL_SSL", kafka_sasl_username="ragstream", kafka_sasl_password="s3cret"
    ).kafka
    assert kafka.sasl_password == "s3cret"
    assert "s3cret" not in repr(kafka)
    assert kafka.describe() == "Kafka at 127.0.0.1:9092 over SASL_SSL as 'ragstream' (SCRAM-SHA-512)"
