"""The one typed settings object, read from ``IRIS_*`` variables and ``MLFLOW_TRACKING_URI``.

Build it once per process with :func:`load_settings` and pass it down; tests construct
``Settings(...)`` directly instead of patching the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ml.errors import SettingsError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def _default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(base) / "iris-scorer" / "models")


class Settings(BaseSettings):
    """Process configuration. Every field maps to one environment variable (``IRIS_<FIELD>``)."""

    model_config = SettingsConfigDict(
        env_prefix="IRIS_",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
        hide_input_in_errors=True,
    )

    # Kafka / Event Hubs
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    #: a PEM file of the CA(s) that signed the brokers' certificates (SSL, SASL_SSL); unset: the
    #: system's CAs (what Event Hubs needs)
    kafka_ssl_ca_file: Path | None = None
    kafka_session_timeout_ms: int = Field(default=10_000, ge=1000, le=300_000)
    # Static group membership (KIP-345): a unique, stable name per worker (the pod name in k8s)
    kafka_group_instance_id: str | None = Field(default=None, max_length=249)

    # Topics and group
    requests_topic: str = "iris.requests"
    predictions_topic: str = "iris.predictions"
    dlq_topic: str = "iris.requests.dlq"
    drift_topic: str = "iris.drift"
    shadow_topic: str = "iris.shadow"
    feedback_topic: str = "iris.feedback"
    feedback_dlq_topic: str = "iris.feedback.dlq"
    performance_topic: str = "iris.performance"
    consumer_group: str = "iris-scorer"

    # Model
    model_uri: str = "models:/iris-classifier@champion"
    mlflow_tracking_uri: str = Field(
        default=DEFAULT_TRACKING_URI,
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "mlflow_tracking_uri"),
    )
    model_poll_seconds: float = Field(default=30.0, gt=0)
    # Champion against challenger (ml/experiment.py): the challenger is used only while its alias
    # exists; shadow scores every request with both (the champion answers); a canary share of
    # requests (sticky by id) is answered by the challenger
    challenger_uri: str = "models:/iris-classifier@challenger"
    shadow: bool = False
    canary_percent: float = Field(default=0.0, ge=0, le=100)
    # shadow agreement: the gauge is the share of the last this-many compared requests
    shadow_agreement_window: int = Field(default=1000, ge=1)
    #: where backfill keeps each version's verified NumPy form (:mod:`ml.model_cache`); "": none
    model_cache_dir: str = Field(default_factory=lambda: _default_cache_dir())

    # Stream batching
    batch_max_records: int = Field(default=500, ge=1, le=100_000)
    batch_max_wait_ms: int = Field(default=200, ge=0, le=60_000)
    max_message_bytes: int = Field(default=1_000_000, ge=1024)
    # at_least_once: outputs, then the offsets (a crash re-scores up to a batch); exactly_once:
    # each batch's outputs and offsets in one Kafka transaction (read outputs with read_committed)
    delivery: Literal["at_least_once", "exactly_once"] = "at_least_once"
    # At most one offset commit per interval (Event Hubs allows 4 commits/s/partition); 0: every batch
    commit_interval_ms: int = Field(default=500, ge=0, le=600_000)

    # Drift
    drift_enabled: bool = True  # IRIS_DRIFT_ENABLED=false: score without drift windows
    drift_window_size: int = Field(default=500, ge=1)
    drift_window_seconds: float = Field(default=60.0, gt=0)
    drift_min_rows: int = Field(default=50, ge=1)
    # backfill --drift-window 1h: event-time windows open at once; a row older than them is late
    drift_max_open_windows: int = Field(default=8, ge=1)
    drift_queue_size: int = Field(default=4, ge=1)
    # at most this share of one core spent evaluating windows (later windows skipped, counted
    # as reason="budget", until the last evaluation's time is paid back); 1: no limit
    drift_cpu_share: float = Field(default=0.1, gt=0, le=1)
    # one window's evaluation in the drift process; beyond it the child is killed and replaced
    drift_eval_timeout_s: float = Field(default=120.0, gt=0)
    # Delayed labels (consumers/feedback.py): predictions kept for the join, by id, bounded by
    # count and age; a live performance window closes every this-many labelled predictions
    feedback_enabled: bool = True  # IRIS_FEEDBACK_ENABLED=false: the worker reads no labels
    join_max_ids: int = Field(default=200_000, ge=1)
    join_ttl_seconds: float = Field(default=86_400.0, gt=0)
    # a label read before its prediction waits this long for it before it counts as unmatched
    feedback_early_seconds: float = Field(default=60.0, ge=0)
    performance_window_size: int = Field(default=200, ge=1)
    # promote --from-live: the challenger may be this much worse in macro F1 and still win
    promote_f1_margin: float = Field(default=0.0, ge=0, le=1)

    reports_dir: Path = Path("reports")
    reports_keep: int = Field(default=50, ge=1)  # an HTML report is ~4 MB

    # REST
    api_key: SecretStr | None = None
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    # rows per request; unset: no cap (as MLflow's scoring server), IRIS_MAX_BODY_BYTES guards
    max_instances: int | None = Field(default=None, ge=1)
    microbatch_max_size: int = Field(default=64, ge=1)
    microbatch_max_wait_ms: float = Field(default=2.0, ge=0)
    # IRIS_ACCESS_LOG: a structured line per REST request: "errors" (status >= 400, the
    # default), "all", or "off"; true/false mean all/off. README "Access log" says why.
    access_log: Literal["all", "errors", "off"] = "errors"

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _bootstrap_has_port(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port...], got {server.strip()!r}")
        return value

    @field_validator("access_log", mode="before")
    @classmethod
    def _access_log_words(cls, value: object) -> object:
        words = {"true": "all", "1": "all", "yes": "all", "false": "off", "0": "off", "no": "off"}
        if isinstance(value, bool):
            return "all" if value else "off"
        return words.get(value.strip().lower(), value.strip().lower()) if isinstance(value, str) else value

    @field_validator("kafka_group_instance_id", mode="before")
    @classmethod
    def _blank_instance_id_is_unset(cls, value: object) -> object:
        if isinstance(value, str):
            return value.strip() or None
        return value

    @field_validator("api_key", "kafka_sasl_password", mode="before")
    @classmethod
    def _empty_secret_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @property
    def is_event_hubs(self) -> bool:
        """True when the bootstrap address is an Azure Event Hubs namespace."""
        return ".servicebus." in self.kafka_bootstrap_servers


def env_name(field: str) -> str:
    """The environment variable that sets ``field``."""
    if field == "mlflow_tracking_uri":
        return "MLFLOW_TRACKING_URI"
    return f"IRIS_{field.upper()}"


def load_settings(environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Build settings from the environment (or ``environ``), failing with a sentence naming the variable."""
    source = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for name in Settings.model_fields:
        var = env_name(name)
        if var in source:
            values[name] = source[var]
    values.update(overrides)
    try:
        # model_validate skips BaseSettings' own env reading: we validate exactly what we read.
        return Settings.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "?"
        raise SettingsError(f"{env_name(field)} is invalid: {first['msg']}.") from None
