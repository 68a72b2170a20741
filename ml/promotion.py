"""``promote --from-live``: move ``@champion`` to the challenger on live labelled evidence.

The evidence is the ``paired`` part of the ``iris.performance`` messages
(:class:`ml.feedback.LiveWindow`): champion and challenger on the *same* labelled ids (shadow
mode), one confusion matrix each per window. Only windows of the two versions the aliases point
at now count; their matrices are summed and macro F1 is computed on the sums (not averaged per
window, so small windows weigh what they hold).

The challenger wins when it has at least ``min_labelled`` labelled ids and its macro F1 is not
worse than the champion's by more than ``margin`` (``IRIS_PROMOTE_F1_MARGIN``): a tie promotes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ml.feedback import accuracy, macro_f1


@dataclass(frozen=True)
class LiveEvidence:
    champion_version: str
    challenger_version: str
    labelled: int
    champion_f1: float
    challenger_f1: float
    champion_accuracy: float
    challenger_accuracy: float
    windows: int


@dataclass(frozen=True)
class LiveDecision:
    promote: bool
    sentence: str
    evidence: LiveEvidence


def gather(
    messages: Iterable[Mapping[str, Any]], champion_version: str, challenger_version: str
) -> LiveEvidence:
    """Sum the paired matrices of ``messages`` for this champion/challenger pair."""
    ours: list[list[int]] | None = None
    theirs: list[list[int]] | None = None
    labelled = windows = 0
    for message in messages:
        for pair in message.get("paired") or ():
            if (str(pair["champion_version"]), str(pair["challenger_version"])) != (
                champion_version,
                challenger_version,
            ):
                continue
            windows += 1
            labelled += int(pair["count"])
            ours = _add(ours, pair["champion"]["confusion"])
            theirs = _add(theirs, pair["challenger"]["confusion"])
    return LiveEvidence(
        champion_version,
        challenger_version,
        labelled,
        macro_f1(ours) if ours else 0.0,
        macro_f1(theirs) if theirs else 0.0,
        accuracy(ours) if ours else 0.0,
        accuracy(theirs) if theirs else 0.0,
        windows,
    )


def _add(total: list[list[int]] | None, matrix: list[list[int]]) -> list[list[int]]:
    if total is None:
        return [list(map(int, row)) for row in matrix]
    return [[a + int(b) for a, b in zip(r, s, strict=True)] for r, s in zip(total, matrix, strict=True)]


def decide(evidence: LiveEvidence, min_labelled: int, margin: float) -> LiveDecision:
    e = evidence
    comparison = (
        f"on {e.labelled} labelled ids in {e.windows} windows: challenger v{e.challenger_version} "
        f"macro F1 {e.challenger_f1:.4f} (accuracy {e.challenger_accuracy:.4f}) against champion "
        f"v{e.champion_version} {e.champion_f1:.4f} ({e.champion_accuracy:.4f}), margin {margin:g}"
    )
    if e.labelled < min_labelled:
        return LiveDecision(
            False,
            f"not enough live evidence: {e.labelled} labelled ids scored by both v{e.champion_version} "
            f"and v{e.challenger_version}, fewer than --min-labelled {min_labelled} (run the worker "
            "with IRIS_SHADOW=true and publish labels to iris.feedback).",
            e,
        )
    if e.challenger_f1 < e.champion_f1 - margin:
        return LiveDecision(False, f"the challenger is worse: {comparison}; the aliases stay.", e)
    verdict = "ties" if abs(e.challenger_f1 - e.champion_f1) < 1e-12 else "is not worse"
    return LiveDecision(True, f"the challenger {verdict}: {comparison}; it wins.", e)
