"""Kafka client options from :class:`~ml.settings.Settings`, as one pure function.

:func:`build_kafka_config` checks the security settings and, for an Azure Event Hubs namespace
(``settings.is_event_hubs``), applies its constraints: SASL_SSL with PLAIN, idle and metadata
timeouts of 180 s (Event Hubs closes idle connections after 240 s), request timeout of at least
60 s, requests of at most 1,000,000 bytes and no transactions (``IRIS_DELIVERY=exactly_once`` is
refused there). A setting that contradicts them
stops start-up with a :class:`~ml.errors.SettingsError` naming the variable.

The password stays a ``SecretStr`` until a client is built; the config's repr never shows it.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from ml.errors import SettingsError
from ml.settings import Settings

EVENT_HUBS_MAX_REQUEST_BYTES = 1_000_000
EVENT_HUBS_IDLE_MS = 180_000
EVENT_HUBS_METADATA_MAX_AGE_MS = 180_000
EVENT_HUBS_MIN_REQUEST_TIMEOUT_MS = 60_000
EVENT_HUBS_USERNAME = "$ConnectionString"

DEFAULT_REQUEST_TIMEOUT_MS = 40_000
DEFAULT_IDLE_MS = 540_000
DEFAULT_METADATA_MAX_AGE_MS = 300_000
# Room for the key, headers and record overhead around a DLQ copy of a maximal message.
REQUEST_OVERHEAD_BYTES = 64 * 1024
#: A transaction open longer than this is aborted by the broker (a batch takes milliseconds).
TRANSACTION_TIMEOUT_MS = 60_000


@dataclass(frozen=True)
class KafkaConfig:
    """Validated client options shared by the worker's consumer and producer (and the publisher)."""

    bootstrap_servers: str
    security_protocol: str
    sasl_mechanism: str | None
    sasl_username: str | None
    sasl_password: SecretStr | None = field(repr=False)
    request_timeout_ms: int
    connections_max_idle_ms: int
    metadata_max_age_ms: int
    max_request_size: int
    session_timeout_ms: int
    heartbeat_interval_ms: int
    max_partition_fetch_bytes: int
    event_hubs: bool
    group_instance_id: str | None = None
    ssl_ca_file: Path | None = None
    exactly_once: bool = False

    @property
    def bootstrap_list(self) -> list[str]:
        """The bootstrap addresses one by one: FastStream takes a string as a single address."""
        return [address.strip() for address in self.bootstrap_servers.split(",") if address.strip()]

    @property
    def uses_ssl(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def client_options(self) -> dict[str, Any]:
        """aiokafka keyword arguments common to producers and consumers (includes the secret)."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
            "request_timeout_ms": self.request_timeout_ms,
            "connections_max_idle_ms": self.connections_max_idle_ms,
            "metadata_max_age_ms": self.metadata_max_age_ms,
        }
        if self.uses_ssl:
            options["ssl_context"] = ssl_context(self.ssl_ca_file)
        if self.sasl_mechanism is not None:
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        return options

    def producer_options(self, *, linger_ms: int = 5) -> dict[str, Any]:
        """An ``AIOKafkaProducer``: acks from all replicas, idempotent on Apache Kafka (a retried
        produce is written once), not on Event Hubs (decided by ``is_event_hubs``: its Kafka
        endpoint is not relied on for idempotent producers); no transactions."""
        return {
            **self.client_options(),
            "acks": "all",
            "enable_idempotence": not self.event_hubs,
            "max_request_size": self.max_request_size,
            "linger_ms": linger_ms,
            "max_batch_size": 256 * 1024 if not self.event_hubs else 128 * 1024,
        }

    def transactional_producer_options(self, transactional_id: str) -> dict[str, Any]:
        """A transactional ``AIOKafkaProducer`` (exactly-once delivery; never on Event Hubs)."""
        return {
            **self.producer_options(linger_ms=0),
            "transactional_id": transactional_id,
            "transaction_timeout_ms": TRANSACTION_TIMEOUT_MS,
        }

    def consumer_options(self) -> dict[str, Any]:
        """Consumer-only options (FastStream subscriber or ``AIOKafkaConsumer``): manual commits;
        static membership when ``group_instance_id`` is set (such a member does not leave the
        group on stop: its partitions wait for it up to the session timeout)."""
        options: dict[str, Any] = {
            "session_timeout_ms": self.session_timeout_ms,
            "heartbeat_interval_ms": self.heartbeat_interval_ms,
            "auto_offset_reset": "earliest",
            "enable_auto_commit": False,
            "max_partition_fetch_bytes": self.max_partition_fetch_bytes,
        }
        if self.group_instance_id is not None:
            options["group_instance_id"] = self.group_instance_id
        if self.exactly_once:  # requests written in transactions count once committed
            options["isolation_level"] = "read_committed"
        return options

    def describe(self) -> dict[str, Any]:
        """For logs: everything but the password."""
        return {
            "bootstrap": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
            "sasl_mechanism": self.sasl_mechanism,
            "event_hubs": self.event_hubs,
            "group_instance_id": self.group_instance_id,
            "delivery": "exactly_once" if self.exactly_once else "at_least_once",
            "ssl_ca_file": str(self.ssl_ca_file) if self.ssl_ca_file else None,
        }


def ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    """Verify the brokers' certificates and host names against ``ca_file`` (or the system's CAs)."""
    if ca_file is None:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SettingsError(
            f"IRIS_KAFKA_SSL_CA_FILE={ca_file} is not a readable PEM file of CA certificates ({reason})."
        ) from None


def build_kafka_config(settings: Settings) -> KafkaConfig:
    """Check and complete the Kafka settings; raise :class:`SettingsError` naming the variable."""
    protocol = settings.kafka_security_protocol
    mechanism = settings.kafka_sasl_mechanism
    username = settings.kafka_sasl_username
    password = settings.kafka_sasl_password
    event_hubs = settings.is_event_hubs
    if event_hubs:
        if protocol != "SASL_SSL":
            raise SettingsError(
                f"IRIS_KAFKA_SECURITY_PROTOCOL must be SASL_SSL for Azure Event Hubs, got {protocol}."
            )
        if mechanism not in (None, "PLAIN"):
            raise SettingsError(
                f"IRIS_KAFKA_SASL_MECHANISM must be PLAIN for Azure Event Hubs, got {mechanism}."
            )
        if settings.delivery == "exactly_once":
            raise SettingsError(
                "IRIS_DELIVERY=exactly_once needs Kafka transactions, which Azure Event Hubs Standard "
                "does not offer (a transactional producer is refused there): use IRIS_DELIVERY=at_least_once "
                "with Event Hubs, and make the consumers of the predictions tolerate a re-scored batch "
                "(a prediction's key is its request id)."
            )
        if settings.max_message_bytes > EVENT_HUBS_MAX_REQUEST_BYTES:
            raise SettingsError(
                f"IRIS_MAX_MESSAGE_BYTES must be at most {EVENT_HUBS_MAX_REQUEST_BYTES} for Azure Event Hubs "
                f"(its message limit), got {settings.max_message_bytes}."
            )
        mechanism = "PLAIN"
        username = username or EVENT_HUBS_USERNAME
    if protocol.startswith("SASL_"):
        mechanism = mechanism or "PLAIN"
        if not username:
            raise SettingsError(
                f"IRIS_KAFKA_SASL_USERNAME is required with IRIS_KAFKA_SECURITY_PROTOCOL={protocol}."
            )
        if password is None:
            raise SettingsError(
                f"IRIS_KAFKA_SASL_PASSWORD is required with IRIS_KAFKA_SECURITY_PROTOCOL={protocol}."
            )
    elif mechanism is not None:
        raise SettingsError(
            f"IRIS_KAFKA_SASL_MECHANISM is set but IRIS_KAFKA_SECURITY_PROTOCOL={protocol} does not use SASL: "
            "use SASL_SSL or SASL_PLAINTEXT."
        )
    else:
        username, password = None, None

    if settings.kafka_ssl_ca_file is not None and protocol in ("SSL", "SASL_SSL"):
        ssl_context(settings.kafka_ssl_ca_file)  # a bad CA file stops start-up, naming the variable
    session_ms = settings.kafka_session_timeout_ms
    if event_hubs:
        request_timeout_ms = max(DEFAULT_REQUEST_TIMEOUT_MS, EVENT_HUBS_MIN_REQUEST_TIMEOUT_MS)
        idle_ms, metadata_ms = EVENT_HUBS_IDLE_MS, EVENT_HUBS_METADATA_MAX_AGE_MS
        max_request = EVENT_HUBS_MAX_REQUEST_BYTES
    else:
        request_timeout_ms = DEFAULT_REQUEST_TIMEOUT_MS
        idle_ms, metadata_ms = DEFAULT_IDLE_MS, DEFAULT_METADATA_MAX_AGE_MS
        max_request = max(1_048_576, settings.max_message_bytes + REQUEST_OVERHEAD_BYTES)
    return KafkaConfig(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        security_protocol=protocol,
        sasl_mechanism=mechanism,
        sasl_username=username,
        sasl_password=password,
        request_timeout_ms=request_timeout_ms,
        connections_max_idle_ms=idle_ms,
        metadata_max_age_ms=metadata_ms,
        max_request_size=max_request,
        session_timeout_ms=session_ms,
        heartbeat_interval_ms=max(100, session_ms // 3),
        max_partition_fetch_bytes=max(1_048_576, min(max_request, 8 * 1_048_576)),
        event_hubs=event_hubs,
        group_instance_id=settings.kafka_group_instance_id,
        ssl_ca_file=settings.kafka_ssl_ca_file,
        exactly_once=settings.delivery == "exactly_once",
    )
