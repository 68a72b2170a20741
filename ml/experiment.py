"""Champion against challenger on live traffic: canary assignment and shadow scoring.

Every path scores a batch through :func:`score_batch`, which calls :func:`ml.predict.score` at most
once per model per batch:

- **champion only** (no challenger registered, or neither shadow nor canary asked): one call;
- **canary** (``IRIS_CANARY_PERCENT``): each request's key (its id) falls in one of
  :data:`BUCKETS` buckets by a stable hash (BLAKE2b, the same on every process, host and restart),
  and the requests whose bucket is below ``percent * 100`` are answered by the challenger. The
  rows are split once, and each model scores its own rows in one call; a retried request (same
  id) always lands on the same model;
- **shadow** (``IRIS_SHADOW``): both models score every row, one call each; the caller gets the
  champion's answer (or, for a canary request, the challenger's), and the pair of scores goes to
  the comparison (``iris.shadow``, :func:`shadow_records`, :class:`Agreement`).
"""

from __future__ import annotations

import collections
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ml.metrics import Metrics
from ml.model import LoadedModel, ModelHolder
from ml.predict import Scores, prediction_records, round6, score, utc_now_iso

#: canary resolution: 0.01 % of traffic
BUCKETS = 10_000


def bucket(key: str | bytes) -> int:
    """The stable canary bucket of ``key`` (0 ≤ b < :data:`BUCKETS`)."""
    data = key.encode() if isinstance(key, str) else key
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big") % BUCKETS


@dataclass(frozen=True)
class Experiment:
    """Both holders and how traffic is shared between them (from the settings)."""

    champion: ModelHolder
    challenger: ModelHolder
    shadow: bool = False
    canary_percent: float = 0.0

    @property
    def threshold(self) -> int:
        return round(self.canary_percent * BUCKETS / 100)

    def rival(self) -> LoadedModel | None:
        """The challenger, when it is loaded and something asks for it."""
        if not (self.shadow or self.threshold):
            return None
        return self.challenger.model

    def canary(self, key: str | bytes | None) -> bool:
        """True if the request with ``key`` is answered by the challenger (when one is loaded)."""
        threshold = self.threshold
        return bool(threshold) and key is not None and bucket(key) < threshold

    def canary_rows(self, keys: Sequence[str | bytes | None]) -> npt.NDArray[np.bool_] | None:
        """Which rows the challenger answers; None when none does."""
        threshold = self.threshold
        if not threshold:
            return None
        mask = np.fromiter(
            (key is not None and bucket(key) < threshold for key in keys), dtype=np.bool_, count=len(keys)
        )
        return mask if mask.any() else None


@dataclass(frozen=True, slots=True)
class Answer:
    """The scores of the rows one model answered (``rows``: their positions; None: all rows)."""

    rows: npt.NDArray[np.intp] | None
    scores: Scores


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one batch got: the answers, and (shadow) both models' scores of every row."""

    answers: list[Answer]
    champion: LoadedModel
    shadow: tuple[Scores, Scores] | None = None

    def __len__(self) -> int:
        return sum(len(a.scores) for a in self.answers)


def score_batch(
    experiment: Experiment, features: npt.NDArray[np.float64], keys: Sequence[str | bytes | None]
) -> Outcome:
    """Score a batch once per model: the champion's answer, the canary's, the shadow pair."""
    champion = experiment.champion.current  # taken once: a swap mid-batch does not split it
    challenger = experiment.rival()
    if challenger is None or not len(features):
        return Outcome([Answer(None, score(champion, features))], champion)
    mask = experiment.canary_rows(keys)
    if experiment.shadow:
        ours, theirs = score(champion, features), score(challenger, features)
        if mask is None:
            return Outcome([Answer(None, ours)], champion, (ours, theirs))
        stay, move = np.flatnonzero(~mask), np.flatnonzero(mask)
        answers = [Answer(stay, ours.take(stay)), Answer(move, theirs.take(move))]
        return Outcome(answers, champion, (ours, theirs))
    if mask is None:
        return Outcome([Answer(None, score(champion, features))], champion)
    stay, move = np.flatnonzero(~mask), np.flatnonzero(mask)
    answers = [Answer(move, score(challenger, features[move]))]
    if len(stay):
        answers.insert(0, Answer(stay, score(champion, features[stay])))
    return Outcome(answers, champion)


def shadow_pair(
    experiment: Experiment, answered: Scores, features: npt.NDArray[np.float64]
) -> tuple[Scores, Scores] | None:
    """Shadow for a batch one model already answered (REST's micro-batches): the other model's
    scores of the same rows, in one call, as (champion, challenger); None when shadow is off or
    there is no challenger."""
    if not experiment.shadow:
        return None
    if answered.model.role == "challenger":  # a canary batch: the champion is the other model
        return score(experiment.champion.current, features), answered
    rival = experiment.challenger.model
    return None if rival is None else (answered, score(rival, features))


def outcome_records(
    ids: Sequence[str | None], outcome: Outcome, source: str, scored_at: str | None = None
) -> list[dict[str, Any]]:
    """The ``iris.predictions`` records of a batch, in batch order, each naming the model and
    alias that answered it."""
    scored_at = scored_at or utc_now_iso()
    first = outcome.answers[0]
    if first.rows is None:
        return prediction_records(ids, first.scores, source, scored_at)
    ordered: list[Any] = [None] * len(ids)
    for answer in outcome.answers:
        rows = answer.rows.tolist() if answer.rows is not None else []
        records = prediction_records([ids[i] for i in rows], answer.scores, source, scored_at)
        for i, record in zip(rows, records, strict=True):
            ordered[i] = record
    return ordered


def agreement(pair: tuple[Scores, Scores]) -> npt.NDArray[np.bool_]:
    """Per row: did both models give the same label (compared by name, not by class index)."""
    ours, theirs = pair
    same: npt.NDArray[np.bool_] = ours.labels == theirs.labels
    return same


def shadow_records(
    ids: Sequence[str | None],
    pair: tuple[Scores, Scores],
    scored_at: str | None = None,
    champion_probabilities: Sequence[dict[str, float]] | None = None,
) -> list[dict[str, Any]]:
    """The ``iris.shadow`` records: per request both versions, labels and probabilities, and ``agree``.
    ``champion_probabilities``: the champion's rounded probability dicts when the caller has them
    already (its prediction records), so they are not computed twice."""
    ours, theirs = pair
    scored_at = scored_at or utc_now_iso()
    our_classes, their_classes = ours.model.class_names, theirs.model.class_names
    their_p = np.round(theirs.probabilities, 6).tolist()
    if champion_probabilities is None:
        rounded = np.round(ours.probabilities, 6).tolist()
        champion_probabilities = [dict(zip(our_classes, p, strict=True)) for p in rounded]
    same = agreement(pair).tolist()
    ours_v, theirs_v = ours.model.version, theirs.model.version
    return [
        {
            "id": record_id,
            "champion_version": ours_v,
            "challenger_version": theirs_v,
            "champion_label": a,
            "challenger_label": b,
            "champion_probabilities": p,
            "challenger_probabilities": dict(zip(their_classes, q, strict=True)),
            "agree": agree,
            "scored_at": scored_at,
        }
        for record_id, a, b, p, q, agree in zip(
            ids,
            ours.labels.tolist(),
            theirs.labels.tolist(),
            champion_probabilities,
            their_p,
            same,
            strict=True,
        )
    ]


class Agreement:
    """``iris_shadow_agreement_ratio``: the share of the last ``window`` compared requests on
    which both models agreed, per version pair; plus the comparison counters."""

    def __init__(self, metrics: Metrics, window: int) -> None:
        self.metrics, self.window = metrics, window
        self._recent: collections.deque[tuple[int, int]] = collections.deque()  # (compared, agreed)
        self._compared = self._agreed = 0
        self._pair: tuple[str, str] | None = None

    def record(self, pair: tuple[Scores, Scores]) -> float:
        """Add one batch's comparison; returns the ratio now."""
        versions = (pair[0].model.version, pair[1].model.version)
        if versions != self._pair:  # a new pair: its own window, the old gauge series removed
            if self._pair is not None:
                self.metrics.shadow_agreement.remove(*self._pair)
            self._recent.clear()
            self._compared = self._agreed = 0
            self._pair = versions
        same = agreement(pair)
        n, agreed = len(same), int(same.sum())
        self._recent.append((n, agreed))
        self._compared += n
        self._agreed += agreed
        while self._compared - self._recent[0][0] >= self.window:
            old_n, old_agreed = self._recent.popleft()
            self._compared -= old_n
            self._agreed -= old_agreed
        champion_version, challenger_version = versions
        counter = self.metrics.shadow_comparisons
        if agreed:
            counter.labels(champion_version, challenger_version, "true").inc(agreed)
        if n - agreed:
            counter.labels(champion_version, challenger_version, "false").inc(n - agreed)
        ratio = round6(self._agreed / self._compared) if self._compared else 1.0
        self.metrics.shadow_agreement.labels(champion_version, challenger_version).set(ratio)
        return ratio
