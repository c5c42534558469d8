"""Security settings reach librdkafka from KAFKA_* variables, unchanged."""

from __future__ import annotations

from agentstream.clients import security_config


def test_sasl_and_ssl_variables_become_librdkafka_properties() -> None:
    env = {
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": "svc-agents",
        "KAFKA_SASL_PASSWORD": "p@ss word=with;odd chars",
        "KAFKA_SSL_CA_LOCATION": "/etc/ssl/ca.pem",
        "KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM": "https",
    }
    assert security_config(env) == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "svc-agents",
        "sasl.password": "p@ss word=with;odd chars",
        "ssl.ca.location": "/etc/ssl/ca.pem",
        "ssl.endpoint.identification.algorithm": "https",
    }


def test_other_kafka_variables_are_not_client_settings() -> None:
    env = {"KAFKA_BOOTSTRAP_SERVERS": "b:9092", "KAFKA_HEAP_OPTS": "-Xmx1g", "KAFKA_OPTS": "-Dx=y", "PATH": "/bin"}
    assert security_config(env) == {}
