"""The one scoring function, and :class:`Scorer`, which records metrics around it.

REST, stream and backfill all call :func:`score` (through :class:`Scorer`), so a prediction is
computed one way only: one ``predict_proba`` call per batch of validated rows (or its verified
NumPy form, :mod:`ml.compiled`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from ml.metrics import Metrics
from ml.model import LoadedModel, ModelHolder


@dataclass(frozen=True, slots=True)
class Scores:
    """Labels and class probabilities of one batch, and the model version that scored it."""

    labels: npt.NDArray[np.str_]
    probabilities: npt.NDArray[np.float64]
    model: LoadedModel
    #: position of each label in ``model.classes`` (the argmax of its row, computed once:
    #: ``argmax(axis=1)`` over a few columns costs about 10 ns a row)
    index: npt.NDArray[np.intp]

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, rows: npt.NDArray[np.intp]) -> Scores:
        """The scores of ``rows`` only (positions in this batch), same model."""
        return Scores(self.labels[rows], self.probabilities[rows], self.model, self.index[rows])


def score(model: LoadedModel, features: npt.NDArray[np.float64]) -> Scores:
    """Score an (n, 4) matrix of validated features (see :mod:`ml.schema`) in one call."""
    if features.shape[0] == 0:
        empty = np.empty(0, dtype=np.intp)
        return Scores(model.classes[empty], np.empty((0, len(model.classes))), model, empty)
    if model.compiled is not None:  # the same arithmetic as predict_proba, verified at load
        probabilities = model.compiled(features)
    else:
        import sklearn  # here, not at the top: a compiled model is scored without scikit-learn

        # Rows were validated finite already: skip scikit-learn's second scan.
        with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
            probabilities = model.estimator.predict_proba(features)
    index = probabilities.argmax(axis=1)
    return Scores(model.classes[index], probabilities, model, index)


_stamp: tuple[int, str] = (0, "")


def utc_now_iso() -> str:
    """Now in UTC to the millisecond (``2026-12-05T01:02:03.456Z``); formatted once per millisecond."""
    global _stamp
    ms = time.time_ns() // 1_000_000
    if _stamp[0] != ms:  # one tuple, swapped whole: safe to read from any thread
        at = datetime.fromtimestamp(ms // 1000, UTC).replace(microsecond=ms % 1000 * 1000)
        _stamp = (ms, at.isoformat(timespec="milliseconds").replace("+00:00", "Z"))
    return _stamp[1]


def round6(p: float) -> float:
    """``np.round(p, 6)`` for one Python float, bit for bit: NumPy multiplies by 10**6, rounds half
    to even and divides back, and so does this (Python's ``round`` without digits is half-even)."""
    return round(p * 1e6) / 1e6


def prediction_records(
    ids: Sequence[str | None], scores: Scores, source: str, scored_at: str | None = None
) -> list[dict[str, Any]]:
    """The ``iris.predictions`` message shape, one dict per scored row."""
    scored_at = scored_at or utc_now_iso()
    classes = scores.model.class_names
    name, version, alias = scores.model.name, scores.model.version, scores.model.role
    if len(ids) == 1:  # one request, one row: REST's common case, without the per-batch set-up
        return [
            {
                "id": ids[0],
                "label": classes[int(scores.index[0])],
                "probabilities": dict(
                    zip(classes, [round6(p) for p in scores.probabilities[0].tolist()], strict=True)
                ),
                "model_name": name,
                "model_version": version,
                "model_alias": alias,
                "source": source,
                "scored_at": scored_at,
            }
        ]
    rounded = np.round(scores.probabilities, 6).tolist()
    return [
        {
            "id": record_id,
            "label": str(label),
            "probabilities": dict(zip(classes, probs, strict=True)),
            "model_name": name,
            "model_version": version,
            "model_alias": alias,
            "source": source,
            "scored_at": scored_at,
        }
        for record_id, label, probs in zip(ids, scores.labels.tolist(), rounded, strict=True)
    ]


class Scorer:
    """:func:`score` on the holder's current model, with metrics recorded once, around the core."""

    def __init__(self, holder: ModelHolder, metrics: Metrics) -> None:
        self.holder = holder
        self.metrics = metrics
        self._latency: dict[str, Any] = {}
        self._batch: dict[str, Any] = {}
        self._predictions: dict[tuple[str, str, str], Any] = {}  # label children, looked up once

    def score(self, features: npt.NDArray[np.float64], source: str) -> Scores:
        model = self.holder.current  # taken once: a swap mid-batch does not split the batch
        started = time.perf_counter()
        scores = score(model, features)
        elapsed = time.perf_counter() - started
        self._record(source, scores, elapsed)
        return scores

    def _record(self, source: str, scores: Scores, elapsed: float) -> None:
        self.observe(source, len(scores), elapsed)
        self.count(source, scores)

    def observe(self, source: str, rows: int, elapsed: float) -> None:
        """One scoring call's latency and size (a batch answered by two models is one call here)."""
        latency = self._latency.get(source)
        if latency is None:
            latency = self._latency[source] = self.metrics.scoring_latency.labels(source=source)
            self._batch[source] = self.metrics.batch_size.labels(source=source)
        latency.observe(elapsed)
        self._batch[source].observe(rows)

    def count(self, source: str, scores: Scores) -> None:
        """``iris_predictions`` for the answers in ``scores`` (by version and label)."""
        n = len(scores)
        if n == 1:
            self._counter(source, scores.model.version, scores.model.class_names[int(scores.index[0])]).inc()
        elif n:
            counts = np.bincount(scores.index, minlength=len(scores.model.classes))
            version = scores.model.version
            for label, count in zip(scores.model.class_names, counts.tolist(), strict=True):
                if count:
                    self._counter(source, version, label).inc(count)

    def _counter(self, source: str, version: str, label: str) -> Any:
        key = (source, version, label)
        child = self._predictions.get(key)
        if child is None:
            child = self._predictions[key] = self.metrics.predictions.labels(
                source=source, model_version=version, label=label
            )
        return child

    def record_errors(self, source: str, reason: str, count: int = 1) -> None:
        self.metrics.prediction_errors.labels(source=source, reason=reason).inc(count)
