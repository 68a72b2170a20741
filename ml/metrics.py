"""Prometheus metrics (names fixed by ARCHITECTURE.md), one set per registry.

``Metrics(registry)`` is created by each process (or test) and passed down; nothing registers
at import time.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.metrics_core import Metric

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
#: Why a drift window was not evaluated (consumers/drift_monitor.py, ml/windows.py).
DRIFT_SKIP_REASONS = ("too_few_rows", "backlog", "evaluator_died", "timeout", "stopped", "error")
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """The process's metrics. The drift series exist only where drift is computed: the stream
    worker's :class:`consumers.drift_monitor.DriftMonitor` calls :meth:`enable_drift` (or pass
    ``drift=True``); the REST service never does, so it exports no always-zero drift gauges."""

    drift_share: Gauge
    dataset_drift: Gauge
    feature_drift_score: Gauge
    feature_drift_p_value: Gauge
    drift_windows: Counter
    drift_windows_skipped: Counter

    def __init__(self, registry: CollectorRegistry | None = None, *, drift: bool = False) -> None:
        """A registry of our own gets the process (CPU, memory, open files) and platform
        (``python_info``) collectors; one given by the caller is used as it is."""
        if registry is None:
            registry = CollectorRegistry()
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
        self.registry = registry
        self.drift_enabled = False
        r = self.registry
        self.predictions = Counter(
            "iris_predictions", "Predictions made.", ["source", "model_version", "label"], registry=r
        )
        self.prediction_errors = Counter(
            "iris_prediction_errors", "Records that could not be scored.", ["source", "reason"], registry=r
        )
        self.scoring_latency = Histogram(
            "iris_scoring_latency_seconds",
            "Time in the scoring function per batch.",
            ["source"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "iris_batch_size", "Rows per scoring call.", ["source"], buckets=BATCH_BUCKETS, registry=r
        )
        self.dlq_messages = Counter("iris_dlq_messages", "Messages sent to the DLQ.", ["reason"], registry=r)
        self.consumer_errors = Counter(
            "iris_consumer_errors",
            "Fetches or parses of consumed record batches that failed (the partition is retried).",
            ["reason"],
            registry=r,
        )
        self.kafka_transactions = Counter(
            "iris_kafka_transactions",
            "Exactly-once delivery: Kafka transactions by outcome (committed, aborted, fenced).",
            ["outcome"],
            registry=r,
        )
        self.model_info = Gauge(
            "iris_model_info", "Loaded model (=1).", ["name", "version", "alias"], registry=r
        )
        self.model_reloads = Counter("iris_model_reloads", "Successful model (re)loads.", registry=r)
        self.model_reload_errors = Counter(
            "iris_model_reload_errors", "Failed model loads or alias checks.", registry=r
        )
        self.http_requests = Counter(
            "iris_http_requests", "HTTP requests.", ["route", "method", "status"], registry=r
        )
        self.http_duration = Histogram(
            "iris_http_request_duration_seconds",
            "HTTP request duration.",
            ["route"],
            buckets=HTTP_BUCKETS,
            registry=r,
        )

        self.shadow_agreement = Gauge(
            "iris_shadow_agreement_ratio",
            "Share of recent shadow-scored requests on which champion and challenger agree.",
            ["champion_version", "challenger_version"],
            registry=r,
        )
        self.shadow_comparisons = Counter(
            "iris_shadow_comparisons",
            "Requests scored by both champion and challenger (shadow), by agreement.",
            ["champion_version", "challenger_version", "agree"],
            registry=r,
        )
        self.feedback = Counter(
            "iris_feedback",
            "Labels received, by outcome (matched, unmatched, rejected).",
            ["outcome"],
            registry=r,
        )
        self.feedback_unmatched = Counter(
            "iris_feedback_unmatched",
            "Labels for an id with no prediction kept for the join (older than the TTL, or never seen).",
            registry=r,
        )
        self.live_accuracy = Gauge(
            "iris_live_accuracy",
            "Accuracy on the last window of labelled predictions.",
            ["model_version", "alias"],
            registry=r,
        )
        self.live_f1_macro = Gauge(
            "iris_live_f1_macro",
            "Macro F1 on the last window of labelled predictions.",
            ["model_version", "alias"],
            registry=r,
        )
        self.live_windows = Counter(
            "iris_live_performance_windows", "Windows of labelled predictions evaluated.", registry=r
        )
        self.join_size = Gauge("iris_feedback_join_ids", "Predictions kept for the label join.", registry=r)

        if drift:
            self.enable_drift()

    def enable_drift(self) -> None:
        """Register the drift series (once). ``iris_feature_drift_score`` is higher for more
        drift whatever the stattest (1 - p for a p-value test, else the distance); the p-value
        itself, where the test has one, is ``iris_feature_drift_p_value``."""
        if self.drift_enabled:
            return
        self.drift_enabled = True
        r = self.registry
        self.drift_share = Gauge("iris_drift_share", "Share of drifted features, last window.", registry=r)
        self.dataset_drift = Gauge("iris_dataset_drift", "1 if the last window drifted.", registry=r)
        self.feature_drift_score = Gauge(
            "iris_feature_drift_score",
            "Drift per feature, last window; higher is more drift (1 - p for p-value tests).",
            ["feature", "stattest"],
            registry=r,
        )
        self.feature_drift_p_value = Gauge(
            "iris_feature_drift_p_value",
            "The stattest's p-value per feature, last window (p-value tests only; lower is more drift).",
            ["feature", "stattest"],
            registry=r,
        )
        self.drift_windows = Counter("iris_drift_windows", "Drift windows evaluated.", registry=r)
        self.drift_windows_skipped = Counter(
            "iris_drift_windows_skipped", "Windows not evaluated.", ["reason"], registry=r
        )
        for reason in DRIFT_SKIP_REASONS:  # exported at 0 from the start: rate() has data
            self.drift_windows_skipped.labels(reason=reason)

    def set_model(self, name: str, version: str, alias: str) -> None:
        """One ``iris_model_info`` series per alias: the version serving as ``alias`` now."""
        self.clear_model(alias)
        self.model_info.labels(name=name, version=version, alias=alias).set(1)

    def clear_model(self, alias: str) -> None:
        """No version serves as ``alias`` any more (an optional challenger removed)."""
        for labels in [k for k in self.model_info._metrics if k[2] == alias]:  # (name, version, alias)
            self.model_info.remove(*labels)

    def exposition(self) -> bytes:
        """The Prometheus text of this registry, without the ``_created`` series (timestamps that
        Prometheus stores as ever-changing samples; dropped here rather than through
        ``prometheus_client``'s process-wide switch)."""
        return generate_latest(_WithoutCreated(self.registry))


class _WithoutCreated:
    """A read-only view of a registry whose collected metrics have no ``*_created`` samples."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        for metric in self.registry.collect():
            metric.samples = [s for s in metric.samples if not s.name.endswith("_created")]
            yield metric
