"""A fitted scikit-learn pipeline as a few NumPy operations, checked against the pipeline itself.

``predict_proba`` of a ``StandardScaler`` + ``LogisticRegression`` pipeline costs about 250 µs per
call whatever the batch size (input validation, config lookups, dispatch through the Pipeline);
the arithmetic is a subtraction, a division, a 4x3 matrix product and a softmax. The serving
copy folds the scalers into the linear model's weights once, at load, and computes a matrix
product and scikit-learn's softmax: a one-row call costs a few microseconds and large batches
about a fifth of the time.

Only step types whose arithmetic is known are compiled (``StandardScaler``; ``LogisticRegression``
with dense coefficients); anything else (a random forest, a custom step) is scored by
scikit-learn as before. A compiled form is used only after it matched the estimator's own
``predict_proba`` on probe rows spread over the training range (same argmax, probabilities within
1e-9): the registered artifact stays the source of truth and nothing here changes what it answers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

Matrix = npt.NDArray[np.float64]
Compiled = Callable[[Matrix], Matrix]

#: probe rows per feature range check; tolerance of the check
PROBE_ROWS = 512
TOLERANCE = 1e-9


def _sklearn(step: Any, name: str) -> bool:
    return type(step).__name__ == name and type(step).__module__.split(".")[0] == "sklearn"


def _scaler(step: Any) -> bool:
    return _sklearn(step, "StandardScaler") and hasattr(step, "scale_") and hasattr(step, "mean_")


def _logistic(step: Any) -> bool:
    if not _sklearn(step, "LogisticRegression"):
        return False
    coef, intercept = getattr(step, "coef_", None), getattr(step, "intercept_", None)
    return isinstance(coef, np.ndarray) and isinstance(intercept, np.ndarray)  # not sparse, fitted


def _steps(estimator: Any) -> list[Any]:
    steps = getattr(estimator, "steps", None)
    if steps is None:
        return [estimator]
    return [step for _, step in steps if step not in (None, "passthrough")]


def compile_estimator(estimator: Any) -> Linear | None:
    """The NumPy form of ``estimator.predict_proba``, or None when it is not one we know."""
    *transforms, final = _steps(estimator)
    if not _logistic(final) or not all(_scaler(step) for step in transforms):
        return None
    weights, intercept = _folded(transforms, final)
    return Linear(weights, intercept, binary=len(final.classes_) <= 2)


def _folded(scalers: list[Any], logistic: Any) -> tuple[Matrix, Matrix]:
    """The scalers folded into the linear model: ``((x - m) / s) @ W + b`` is
    ``x @ (W / s[:, None]) + (b - (m / s) @ W)``, one matrix product instead of two more passes
    over the batch (a few ulps from scikit-learn's order of operations; :func:`verified` checks)."""
    weights = np.asarray(logistic.coef_, dtype=np.float64).T.copy()
    intercept = np.asarray(logistic.intercept_, dtype=np.float64).copy()
    for step in reversed(scalers):  # the last scaler is next to the model: fold it first
        mean = step.mean_ if step.with_mean else None
        scale = step.scale_ if step.with_std else None
        if scale is not None:
            weights = weights / np.asarray(scale, dtype=np.float64)[:, None]
        if mean is not None:
            intercept = intercept - np.asarray(mean, dtype=np.float64) @ weights
    return np.ascontiguousarray(weights), intercept


@dataclass(frozen=True, eq=False)
class Linear:
    """``predict_proba`` of a (scaled) logistic regression: ``softmax(x @ weights + intercept)``, or
    the expit of the one decision column when ``binary``. Plain arrays, so the form can be kept
    on disk (:mod:`ml.model_cache`) and rebuilt without scikit-learn."""

    weights: Matrix
    intercept: Matrix
    binary: bool

    def __call__(self, x: Matrix) -> Matrix:
        decision: Matrix = x @ self.weights
        decision += self.intercept
        if self.binary:  # scikit-learn's _predict_proba_lr: expit of the one decision column
            with np.errstate(over="ignore"):  # exp overflows to inf for very negative decisions: p = 0
                positive = 1.0 / (1.0 + np.exp(-decision[:, 0]))
            return np.column_stack([1.0 - positive, positive])
        decision -= decision.max(axis=1, keepdims=True)  # scikit-learn's softmax, in place
        np.exp(decision, out=decision)
        decision /= decision.sum(axis=1, keepdims=True)
        return decision


def probe_rows(estimator: Any, n_features: int, rows: int = PROBE_ROWS) -> Matrix:
    """Deterministic rows over the training range (scaler mean ± 4 sd), plus zeros and extremes."""
    first = _steps(estimator)[0]
    centre = np.asarray(getattr(first, "mean_", None) if hasattr(first, "mean_") else np.zeros(n_features))
    spread = np.asarray(getattr(first, "scale_", None) if hasattr(first, "scale_") else np.ones(n_features))
    rng = np.random.default_rng(0)
    body = centre + rng.uniform(-4.0, 4.0, size=(rows, n_features)) * spread
    edges = np.stack([np.zeros(n_features), centre + 50 * spread, centre - 50 * spread])
    return np.ascontiguousarray(np.vstack([body, edges]), dtype=np.float64)


def verified(estimator: Any, n_features: int) -> Linear | None:
    """:func:`compile_estimator`, kept only if it agrees with ``estimator.predict_proba`` on probe rows."""
    compiled = compile_estimator(estimator)
    if compiled is None:
        return None
    probe = probe_rows(estimator, n_features)
    try:
        expected = estimator.predict_proba(probe)
        got = compiled(probe.copy())
    except Exception:
        return None
    if got.shape != expected.shape or not np.array_equal(got.argmax(axis=1), expected.argmax(axis=1)):
        return None
    if not np.allclose(got, expected, rtol=0.0, atol=TOLERANCE):
        return None
    return compiled
