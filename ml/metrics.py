"""Prometheus metrics (names fixed by ARCHITECTURE.md), one set per registry.

``Metrics(registry)`` is created by each process (or test) and passed down; nothing registers
at import time.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
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
        self.model_info = Gauge(
            "iris_model_info", "Loaded model (=1).", ["name", "version", "alias"], registry=r
        )
        self.model_reloads = Counter("iris_model_reloads", "Successful model (re)loads.", registry=r)
        self.model_reload_errors = Counter(
            "iris_model_reload_errors", "Failed model loads or alias checks.", registry=r
        )
        self.drift_share = Gauge("iris_drift_share", "Share of drifted features, last window.", registry=r)
        self.dataset_drift = Gauge("iris_dataset_drift", "1 if the last window drifted.", registry=r)
        self.feature_drift_score = Gauge(
            "iris_feature_drift_score", "Drift score per feature, last window.", ["feature"], registry=r
        )
        self.drift_windows = Counter("iris_drift_windows", "Drift windows evaluated.", registry=r)
        self.drift_windows_skipped = Counter(
            "iris_drift_windows_skipped", "Windows not evaluated.", ["reason"], registry=r
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

    def set_model(self, name: str, version: str, alias: str) -> None:
        """Exactly one ``iris_model_info`` series: the model now serving."""
        self.model_info.clear()
        self.model_info.labels(name=name, version=version, alias=alias).set(1)
