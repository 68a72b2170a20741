"""The stream worker's topic contract: the typed messages and headers of its AsyncAPI document.

The request and drift payloads are pydantic models; the prediction is :class:`ml.schema.
PredictionModel`. FastStream 0.7 documents payloads only: its AsyncAPI messages carry no
``headers`` and always a ``correlationId`` at ``$message.header#/correlation_id``, a header
only FastStream's own publisher (the drift messages) sends: requests do not carry it and the
bulk-produced predictions and dead letters do not either. :class:`WorkerAsyncAPI` is FastStream's
own ``AsyncAPI`` factory with that corrected: every message gets the headers it really carries,
and a correlation id only where one is sent.
"""

from __future__ import annotations

from typing import Any

from faststream.specification import AsyncAPI
from pydantic import BaseModel, ConfigDict, Field

from ml.schema import ID_MAX_CHARS, RecordModel

REQUEST_EXAMPLE: dict[str, Any] = {
    "id": "r-42",
    "sepal_length": 5.1,
    "sepal_width": 3.5,
    "petal_length": 1.4,
    "petal_width": 0.2,
    "sent_at": "2026-11-26T10:00:00Z",
}


class StreamRequestModel(RecordModel):
    """A scoring request on the stream (JSON, UTF-8, one per Kafka message; key: the id)."""

    model_config = ConfigDict(
        extra="ignore",
        title="IrisStreamRequest",
        strict=True,
        json_schema_extra={"examples": [REQUEST_EXAMPLE]},
    )

    id: str = Field(min_length=1, max_length=ID_MAX_CHARS, examples=["r-42"])


class FeatureDriftModel(BaseModel):
    """One feature's drift test in a window."""

    model_config = ConfigDict(title="IrisFeatureDrift")

    test: str = Field(description="the statistical test (Evidently's method name)")
    score: float = Field(description="the test's p-value or distance")
    drifted: bool


class DriftMessageModel(BaseModel):
    """One ``iris.drift`` message per closed window (:func:`ml.drift_reports.drift_message`)."""

    model_config = ConfigDict(title="IrisDriftWindow")

    window_start: str = Field(description="UTC, ISO 8601 with milliseconds")
    window_end: str = Field(description="UTC, ISO 8601 with milliseconds")
    rows: int
    dataset_drift: bool
    drifted_share: float
    features: dict[str, FeatureDriftModel]
    model_version: str | None
    report: str | None = Field(description="path of the window's HTML report")


class ShadowMessageModel(BaseModel):
    """One ``iris.shadow`` message per shadow-scored request (:func:`ml.experiment.shadow_records`);
    key: the request id."""

    model_config = ConfigDict(title="IrisShadowComparison")

    id: str
    champion_version: str
    challenger_version: str
    champion_label: str
    challenger_label: str
    champion_probabilities: dict[str, float]
    challenger_probabilities: dict[str, float]
    agree: bool = Field(description="both models gave the same label")
    scored_at: str = Field(description="UTC, ISO 8601 with milliseconds")


class ModelPerformanceModel(BaseModel):
    """One model version's numbers on the labelled predictions of a window."""

    model_config = ConfigDict(title="IrisModelPerformance")

    alias: str = Field(description="champion or challenger")
    model_version: str
    count: int = Field(description="labelled predictions this model made in the window")
    accuracy: float
    f1_macro: float
    confusion: list[list[int]] = Field(description="rows: true label, columns: predicted (order: labels)")


class PerformanceMessageModel(BaseModel):
    """One ``iris.performance`` message per window of labelled predictions (:class:`ml.feedback.LiveWindow`)."""

    model_config = ConfigDict(title="IrisLivePerformance")

    window_start: str
    window_end: str
    labelled: int
    labels: list[str]
    models: list[ModelPerformanceModel]
    paired: list[dict[str, Any]] = Field(
        description=(
            "shadow: champion against challenger on the ids both labelled, per version pair "
            "(champion_version, challenger_version, count, champion, challenger); what "
            "promote --from-live sums"
        )
    )


def _bytes_header(description: str) -> dict[str, Any]:
    return {"type": "string", "description": description}


#: Headers a request may carry: none is read, and every one is copied unchanged to the request's
#: prediction and dead-letter record.
REQUEST_HEADERS: dict[str, Any] = {
    "type": "object",
    "description": (
        "Optional. The worker reads no header; whatever the producer sets (any bytes, not only "
        "UTF-8) is copied unchanged to the request's prediction or dead-letter record."
    ),
    "additionalProperties": _bytes_header("any header of the producer's"),
}

PREDICTION_HEADERS: dict[str, Any] = {
    "type": "object",
    "description": "The request's own headers, unchanged (none when it had none).",
    "additionalProperties": _bytes_header("a header of the request"),
}

DLQ_HEADERS: dict[str, Any] = {
    "type": "object",
    "description": (
        "The request's own headers, unchanged, then these (a consumer reading the headers as a "
        "map sees the worker's values)."
    ),
    "properties": {
        "error": {
            "type": "string",
            "enum": ["empty", "too_large", "invalid_json", "validation_error"],
            "description": "why the request was not scored",
        },
        "error_detail": _bytes_header("one human-readable sentence (UTF-8, at most 500 characters)"),
        "source_topic": _bytes_header("the topic the request was read from"),
        "source_partition": _bytes_header("its partition (decimal)"),
        "source_offset": _bytes_header("its offset (decimal)"),
        "tombstone": _bytes_header('"1" when the request had no value (its copy keeps no value)'),
    },
    "required": ["error", "error_detail", "source_topic", "source_partition", "source_offset"],
    "additionalProperties": _bytes_header("a header of the request"),
}

#: Set by FastStream's publisher, which sends the drift messages.
DRIFT_HEADERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "content-type": {"type": "string", "const": "application/json"},
        "correlation_id": _bytes_header("a fresh UUID per message (FastStream's publisher)"),
    },
    "required": ["content-type", "correlation_id"],
}


NO_HEADERS: dict[str, Any] = {"type": "object", "description": "None.", "additionalProperties": False}


def headers_by_topic(
    requests: str,
    predictions: str,
    dlq: str,
    drift: str,
    shadow: str = "iris.shadow",
    feedback_dlq: str = "iris.feedback.dlq",
    performance: str = "iris.performance",
) -> dict[str, dict[str, Any]]:
    return {
        requests: REQUEST_HEADERS,
        predictions: PREDICTION_HEADERS,
        dlq: DLQ_HEADERS,
        drift: DRIFT_HEADERS,
        shadow: NO_HEADERS,
        feedback_dlq: DLQ_HEADERS,
        performance: NO_HEADERS,
    }


class WorkerAsyncAPI(AsyncAPI):
    """FastStream's AsyncAPI 3.0 factory, with real headers and without the phantom correlation id."""

    def __init__(self, *args: Any, headers: dict[str, dict[str, Any]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.headers = headers

    def to_specification(self) -> Any:
        specification: Any = super().to_specification()  # AsyncAPI 3.0: an ApplicationSchema
        messages = specification.components.messages or {}
        for message in messages.values():
            headers = self.headers.get((message.title or "").split(":", 1)[0])
            if headers is None:
                continue
            message.headers = headers  # an extra field of FastStream's Message model
            if "correlation_id" not in headers.get("properties", {}):
                message.correlationId = None
        return specification
