"""Kafka client options from settings, including the Event Hubs constraints (a pure function)."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from consumers.kafka_config import build_kafka_config
from ml.errors import SettingsError
from ml.settings import Settings

EVENT_HUBS = "ns.servicebus.windows.net:9093"
SECRET = "Endpoint=sb://ns/;SharedAccessKeyName=k;SharedAccessKey=TOPSECRET"


def test_plaintext_defaults() -> None:
    config = build_kafka_config(Settings())
    assert config.client_options()["security_protocol"] == "PLAINTEXT"
    assert "sasl_mechanism" not in config.client_options()
    consumer = config.consumer_options()
    assert consumer["enable_auto_commit"] is False
    assert consumer["auto_offset_reset"] == "earliest"
    assert consumer["session_timeout_ms"] == 10_000
    assert config.producer_options()["acks"] == "all"
    # Apache Kafka: idempotent producers, so a retried produce never writes a record twice.
    assert config.producer_options()["enable_idempotence"] is True


def test_session_timeout_is_configurable() -> None:
    config = build_kafka_config(Settings(kafka_session_timeout_ms=6000))
    assert config.consumer_options()["session_timeout_ms"] == 6000
    assert config.consumer_options()["heartbeat_interval_ms"] < 6000


def test_event_hubs_constraints_are_applied() -> None:
    settings = Settings(
        kafka_bootstrap_servers=EVENT_HUBS, kafka_security_protocol="SASL_SSL", kafka_sasl_password=SECRET
    )
    config = build_kafka_config(settings)
    options = config.producer_options()
    assert options["connections_max_idle_ms"] == 180_000
    assert options["metadata_max_age_ms"] == 180_000
    assert options["request_timeout_ms"] >= 60_000
    assert options["max_request_size"] <= 1_000_000
    assert options["enable_idempotence"] is False and "transactional_id" not in options
    assert options["sasl_mechanism"] == "PLAIN"
    assert options["sasl_plain_username"] == "$ConnectionString"
    assert options["sasl_plain_password"] == SECRET
    assert options["ssl_context"] is not None
    assert SECRET not in repr(config) and SECRET not in str(config.describe())


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        (
            {"kafka_security_protocol": "PLAINTEXT"},
            "IRIS_KAFKA_SECURITY_PROTOCOL",
        ),  # Event Hubs needs TLS + SASL
        ({"kafka_security_protocol": "SASL_PLAINTEXT"}, "IRIS_KAFKA_SECURITY_PROTOCOL"),
        ({"kafka_sasl_mechanism": "SCRAM-SHA-256"}, "IRIS_KAFKA_SASL_MECHANISM"),  # PLAIN only
        ({"max_message_bytes": 1_000_001}, "IRIS_MAX_MESSAGE_BYTES"),  # 1 MB message limit
        ({"kafka_sasl_password": None}, "IRIS_KAFKA_SASL_PASSWORD"),  # the connection string
    ],
)
def test_event_hubs_contradictions_name_the_variable(overrides: dict[str, object], variable: str) -> None:
    values: dict[str, object] = {
        "kafka_bootstrap_servers": EVENT_HUBS,
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_password": SECRET,
    }
    values.update(overrides)
    with pytest.raises(SettingsError) as caught:
        build_kafka_config(Settings.model_validate(values))
    assert variable in caught.value.message
    assert SECRET not in caught.value.message
    assert caught.value.exit_code == 2


def test_sasl_needs_credentials_and_a_sasl_protocol() -> None:
    with pytest.raises(SettingsError, match="IRIS_KAFKA_SASL_USERNAME"):
        build_kafka_config(Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_password="x"))
    with pytest.raises(SettingsError, match="IRIS_KAFKA_SASL_MECHANISM"):
        build_kafka_config(Settings(kafka_sasl_mechanism="PLAIN"))
    config = build_kafka_config(
        Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_username="u", kafka_sasl_password="p")
    )
    assert config.client_options()["sasl_mechanism"] == "PLAIN"
    assert "ssl_context" not in config.client_options()


def test_requests_fit_a_dlq_copy_of_the_largest_message() -> None:
    config = build_kafka_config(Settings(max_message_bytes=2_000_000))
    assert config.max_request_size > 2_000_000


def test_static_membership_is_off_unless_an_instance_id_is_set() -> None:
    assert "group_instance_id" not in build_kafka_config(Settings()).consumer_options()
    config = build_kafka_config(Settings(kafka_group_instance_id="iris-worker-7d9f-abcde"))
    assert config.consumer_options()["group_instance_id"] == "iris-worker-7d9f-abcde"
    assert config.describe()["group_instance_id"] == "iris-worker-7d9f-abcde"


def test_a_blank_instance_id_is_unset_and_a_bad_one_is_refused() -> None:
    assert Settings(kafka_group_instance_id="  ").kafka_group_instance_id is None
    with pytest.raises(ValueError, match="kafka_group_instance_id"):
        Settings(kafka_group_instance_id="x" * 250)


def test_a_private_ca_file_is_used_for_tls_and_a_bad_one_is_named(tmp_path: Path) -> None:
    """IRIS_KAFKA_SSL_CA_FILE: a Kafka behind a private CA (Event Hubs needs none: public CAs)."""
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "iris test CA")])
    now = datetime.datetime.now(datetime.UTC)
    ca = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = tmp_path / "ca.pem"
    pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    config = build_kafka_config(Settings(kafka_security_protocol="SSL", kafka_ssl_ca_file=pem))
    context = config.client_options()["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert any(c.get("subject") == ((("commonName", "iris test CA"),),) for c in context.get_ca_certs())
    assert "ssl_context" not in build_kafka_config(Settings(kafka_ssl_ca_file=pem)).client_options()
    for bad in (tmp_path / "missing.pem", tmp_path):
        with pytest.raises(SettingsError, match="IRIS_KAFKA_SSL_CA_FILE"):
            build_kafka_config(Settings(kafka_security_protocol="SSL", kafka_ssl_ca_file=bad))
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(SettingsError, match=r"IRIS_KAFKA_SSL_CA_FILE.*junk\.pem"):
        build_kafka_config(Settings(kafka_security_protocol="SSL", kafka_ssl_ca_file=tmp_path / "junk.pem"))


def test_exactly_once_is_off_by_default_and_reads_committed_when_on() -> None:
    assert Settings().delivery == "at_least_once"
    assert "isolation_level" not in build_kafka_config(Settings()).consumer_options()
    config = build_kafka_config(Settings(delivery="exactly_once"))
    assert config.exactly_once and config.consumer_options()["isolation_level"] == "read_committed"
    producer = config.transactional_producer_options("iris-scorer.iris.requests.3")
    assert producer["transactional_id"] == "iris-scorer.iris.requests.3"
    assert producer["enable_idempotence"] is True and producer["acks"] == "all"
    with pytest.raises(ValueError, match="delivery"):
        Settings(delivery="exactly-once")


def test_exactly_once_is_refused_on_event_hubs_with_the_reason() -> None:
    with pytest.raises(SettingsError, match="IRIS_DELIVERY=exactly_once") as refused:
        build_kafka_config(
            Settings(
                kafka_bootstrap_servers=EVENT_HUBS,
                kafka_security_protocol="SASL_SSL",
                kafka_sasl_password=SECRET,
                delivery="exactly_once",
            )
        )
    assert "transactions" in str(refused.value) and "at_least_once" in str(refused.value)
    assert SECRET not in str(refused.value)
