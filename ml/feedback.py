"""Delayed labels: the feedback message, the join with recent predictions, and live performance.

Ground truth arrives later than the prediction, on ``iris.feedback`` (``{"id", "label",
"labelled_at"}``, key: the id) or through ``POST /feedback``. This module holds what the join
needs and computes nothing about Kafka:

- :func:`check_feedback` validates one decoded message (the reasons are :mod:`ml.messages`'
  codes, so bad feedback is dead-lettered the way bad requests are);
- :class:`JoinState` keeps recent predictions by id: for each, which model (alias and version)
  gave which label. It is bounded by count (the oldest go first) and by age (an entry older than
  the TTL does not match);
- :class:`LiveWindow` collects labelled predictions and closes every ``size`` of them into one
  ``iris.performance`` message: per model version, accuracy, macro F1 and the confusion matrix,
  and, when both models labelled the same ids (shadow), the paired comparison that
  ``promote --from-live`` sums (:func:`macro_f1` of summed confusion matrices).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from ml.messages import EMPTY, INVALID_JSON, TOO_LARGE, VALIDATION_ERROR, Rejected, _clip
from ml.schema import ID_MAX_CHARS, LABELS

#: (alias, model version): a model as live performance counts it
ModelKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Feedback:
    id: str
    label: str
    labelled_at: str | None = None


def check_feedback(value: bytes | None, max_bytes: int, index: int = 0) -> Feedback | Rejected:
    """One ``iris.feedback`` value → :class:`Feedback`, or the reason it is refused."""
    if not value:
        return Rejected(
            index, EMPTY, "tombstone: the message has no value" if value is None else "empty value"
        )
    if len(value) > max_bytes:
        return Rejected(index, TOO_LARGE, f"{len(value)} bytes > limit of {max_bytes} bytes")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return Rejected(index, INVALID_JSON, _clip(str(exc)))
    problem = _problem(obj)
    if problem:
        return Rejected(index, VALIDATION_ERROR, problem)
    return Feedback(obj["id"], obj["label"], obj.get("labelled_at"))


def _problem(obj: Any) -> str | None:
    if not isinstance(obj, dict):
        return f"feedback must be a JSON object, got {type(obj).__name__}"
    fid, label, at = obj.get("id"), obj.get("label"), obj.get("labelled_at")
    if not isinstance(fid, str) or not fid or len(fid) > ID_MAX_CHARS:
        return f"id: a non-empty string of at most {ID_MAX_CHARS} characters is required"
    if label not in LABELS:
        return _clip(f"label: {label!r} is not one of {', '.join(LABELS)}")
    if at is not None and (not isinstance(at, str) or len(at) > 64):
        return "labelled_at: an ISO 8601 string when given"
    return None


@dataclass(slots=True)
class _Entry:
    at: float  # wall-clock seconds the prediction was made
    labels: tuple[tuple[ModelKey, str], ...]  # a dict only when asked (take): cheaper to keep
    labelled: bool = False


class JoinState:
    """Recent predictions by id, bounded by ``max_ids`` and ``ttl_s`` (wall-clock seconds).

    A label can overtake its prediction (two topics, no order between them: a label published right
    after its request is often read before the request is scored). Such a label waits up to
    ``early_s`` (bounded by ``max_ids`` too) and joins when the prediction is added; only a label
    still waiting then is unmatched (:meth:`expire_early`).
    """

    def __init__(self, max_ids: int, ttl_s: float, early_s: float = 60.0) -> None:
        self.max_ids, self.ttl_s, self.early_s = max_ids, ttl_s, early_s
        self._early: collections.OrderedDict[str, tuple[float, str]] = collections.OrderedDict()
        #: labels that met their prediction after waiting: (true label, predicted labels), to drain
        self.ready: list[tuple[str, dict[ModelKey, str]]] = []
        # oldest first; an OrderedDict pops its first item in O(1) (a dict's first key, after many
        # deletions at the front, is found by skipping their slots)
        self._entries: collections.OrderedDict[str, _Entry] = collections.OrderedDict()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, record_id: str, labels: Mapping[ModelKey, str], at: float | None = None) -> None:
        """Remember which model gave which label for ``record_id`` (merged with what is known)."""
        at = time.time() if at is None else at
        self._add_many([(record_id, tuple(labels.items()))], at)

    def add_predictions(self, predictions: Iterable[Mapping[str, Any]], at: float | None = None) -> None:
        """A batch of ``iris.predictions`` records (one pass, one trim: this runs per scored batch)."""
        self._add_many(
            (
                (p["id"], (((p.get("model_alias") or "champion", str(p["model_version"])), p["label"]),))
                for p in predictions
                if p.get("id")
            ),
            at,
        )

    def add_shadow(self, records: Iterable[Mapping[str, Any]], at: float | None = None) -> None:
        """A batch of ``iris.shadow`` records: both models' labels per id."""
        self._add_many(
            (
                (
                    r["id"],
                    (
                        (("champion", str(r["champion_version"])), r["champion_label"]),
                        (("challenger", str(r["challenger_version"])), r["challenger_label"]),
                    ),
                )
                for r in records
            ),
            at,
        )

    def add_scored(
        self,
        ids: Sequence[str | None],
        columns: Sequence[tuple[ModelKey, Sequence[str]]],
        at: float | None = None,
    ) -> None:
        """One scored batch as the handler has it: ``ids[i]`` was given ``labels[i]`` by each
        ``(model, labels)`` of ``columns`` (row-aligned lists; no per-row dicts on the hot path)."""
        if len(columns) == 1:
            ((key, labels),) = columns
            self._add_many((((i, ((key, label),)) for i, label in zip(ids, labels, strict=True) if i)), at)
            return
        (k1, l1), (k2, l2) = columns[0], columns[1]
        self._add_many(((i, ((k1, a), (k2, b))) for i, a, b in zip(ids, l1, l2, strict=True) if i), at)

    def _add_many(
        self, items: Iterable[tuple[str, tuple[tuple[ModelKey, str], ...]]], at: float | None = None
    ) -> None:
        now = time.time()
        at = now if at is None else at
        entries = self._entries
        early = self._early
        for record_id, labels in items:
            entry = entries.get(record_id)
            if entry is None:
                entry = entries[record_id] = _Entry(at, labels)
            else:
                entry.labels = tuple({**dict(entry.labels), **dict(labels)}.items())
                entry.at = max(entry.at, at)
            if early and record_id in early:  # a label that arrived first
                _, truth = early.pop(record_id)
                entry.labelled = True
                self.ready.append((truth, dict(entry.labels)))
        self._trim(now)

    def wait(self, record_id: str, truth: str, now: float | None = None) -> None:
        """Keep a label whose prediction is not here (yet)."""
        now = time.time() if now is None else now
        self._early.pop(record_id, None)
        self._early[record_id] = (now, truth)
        while len(self._early) > self.max_ids:
            self._early.popitem(last=False)

    def expire_early(self, now: float | None = None) -> int:
        """Drop the labels that waited longer than ``early_s``; how many (they are unmatched)."""
        now = time.time() if now is None else now
        gone = 0
        while self._early:
            at, _ = next(iter(self._early.values()))
            if at >= now - self.early_s:
                break
            self._early.popitem(last=False)
            gone += 1
        return gone

    @property
    def waiting(self) -> int:
        return len(self._early)

    def take(self, record_id: str, now: float | None = None) -> dict[ModelKey, str] | bool | None:
        """The labels predicted for ``record_id``; None if unknown or expired; False if it was
        labelled already (a duplicate label is not counted twice)."""
        now = time.time() if now is None else now
        entry = self._entries.get(record_id)
        if entry is None or entry.at < now - self.ttl_s:
            return None
        if entry.labelled:
            return False
        entry.labelled = True
        return dict(entry.labels)

    def _trim(self, now: float) -> None:
        entries, horizon = self._entries, now - self.ttl_s
        while len(entries) > self.max_ids:
            entries.popitem(last=False)
            self.evicted += 1
        while entries:
            first = next(iter(entries.values()))
            if first.at >= horizon:
                break
            entries.popitem(last=False)


def confusion(
    truth: Sequence[str], predicted: Sequence[str], labels: Sequence[str] = LABELS
) -> list[list[int]]:
    """``matrix[i][j]``: rows whose true label is ``labels[i]`` and predicted ``labels[j]``."""
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for t, p in zip(truth, predicted, strict=True):
        matrix[index[t]][index[p]] += 1
    return matrix


def accuracy(matrix: Sequence[Sequence[int]]) -> float:
    total = sum(map(sum, matrix))
    return sum(matrix[i][i] for i in range(len(matrix))) / total if total else 0.0


def macro_f1(matrix: Sequence[Sequence[int]]) -> float:
    """scikit-learn's ``f1_score(average="macro")`` from a confusion matrix: the mean F1 over the
    labels that occur as truth or prediction (a label's F1 is 0 when it has no true positive)."""
    n = len(matrix)
    scores = []
    for i in range(n):
        support, predicted = sum(matrix[i]), sum(matrix[r][i] for r in range(n))
        if not support and not predicted:
            continue
        tp = matrix[i][i]
        scores.append(2 * tp / (support + predicted) if tp else 0.0)
    return sum(scores) / len(scores) if scores else 0.0


def summary(matrix: Sequence[Sequence[int]]) -> dict[str, Any]:
    return {
        "count": sum(map(sum, matrix)),
        "accuracy": round(accuracy(matrix), 6),
        "f1_macro": round(macro_f1(matrix), 6),
        "confusion": [list(row) for row in matrix],
    }


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class LiveWindow:
    """Labelled predictions until ``size`` of them close one ``iris.performance`` message."""

    size: int
    rows: list[tuple[str, dict[ModelKey, str]]] = field(default_factory=list)
    opened: float | None = None

    def add(
        self, truth: str, labels: Mapping[ModelKey, str], now: float | None = None
    ) -> dict[str, Any] | None:
        now = time.time() if now is None else now
        if self.opened is None:
            self.opened = now
        self.rows.append((truth, dict(labels)))
        if len(self.rows) < self.size:
            return None
        return self.close(now)

    def close(self, now: float | None = None) -> dict[str, Any] | None:
        """The message of the rows so far (None when there are none); the window starts again."""
        rows, opened, self.rows, self.opened = self.rows, self.opened, [], None
        if not rows:
            return None
        now = time.time() if now is None else now
        keys = sorted({key for _, labels in rows for key in labels})
        models = []
        for alias, version in keys:
            pairs = [(t, labels[(alias, version)]) for t, labels in rows if (alias, version) in labels]
            matrix = confusion([t for t, _ in pairs], [p for _, p in pairs])
            models.append({"alias": alias, "model_version": version, **summary(matrix)})
        return {
            "window_start": _iso(opened or now),
            "window_end": _iso(now),
            "labelled": len(rows),
            "labels": list(LABELS),
            "models": models,
            "paired": _paired(rows),
        }


def _paired(rows: Sequence[tuple[str, dict[ModelKey, str]]]) -> list[dict[str, Any]]:
    """Champion against challenger on the ids both labelled, per version pair."""
    by_pair: dict[tuple[str, str], list[tuple[str, str, str]]] = {}
    for truth, labels in rows:
        ours = [(v, p) for (a, v), p in labels.items() if a == "champion"]
        theirs = [(v, p) for (a, v), p in labels.items() if a == "challenger"]
        for (cv, cp), (xv, xp) in ((o, t) for o in ours for t in theirs):
            by_pair.setdefault((cv, xv), []).append((truth, cp, xp))
    return [
        {
            "champion_version": cv,
            "challenger_version": xv,
            "count": len(triples),
            "champion": summary(confusion([t for t, _, _ in triples], [c for _, c, _ in triples])),
            "challenger": summary(confusion([t for t, _, _ in triples], [x for _, _, x in triples])),
        }
        for (cv, xv), triples in sorted(by_pair.items())
    ]
