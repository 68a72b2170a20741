"""Data drift: Evidently comparisons of current features against a model's training features.

- :func:`evaluate_drift` — one comparison (Evidently 0.7 ``Report`` + ``DataDriftPreset``),
  returning a :class:`DriftResult` that keeps the Evidently snapshot;
- :mod:`ml.drift_reports` — saving a window's HTML and JSON reports, the ``iris.drift`` message,
  the Evidently workspace;
- :mod:`ml.drift_job` — one window's evaluation as plain values (what the stream worker's drift
  process and the backfill run);
- :mod:`ml.drift_report` — ``iris-scorer drift-report``.

Windows themselves are :mod:`ml.windows`; the stream's monitor (a thread and a child process) is
the stream adapter's, :mod:`consumers.drift_monitor`.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from ml.errors import BadInputError, ParamsError
from ml.params import PARAMS_FILE, DriftParams, read_section
from ml.schema import FEATURES

logger = logging.getLogger(__name__)

Evaluator = Callable[[pd.DataFrame, pd.DataFrame, DriftParams], "DriftResult"]


# ---------------------------------------------------------------- Evidently


_evidently_lock = threading.Lock()


def import_evidently() -> Any:
    """Import Evidently once, lazily (it is slow to import and must not load at our import).

    Evidently 0.7.x needs pandas 2 (it imports a name pandas 3 removed); requirements pin the
    pair and ``tests/test_compat.py`` fails if an upgrade breaks it.
    """
    with _evidently_lock:
        with warnings.catch_warnings():
            # Import-time deprecation noise of Evidently's dependencies (plotly, pandas).
            warnings.simplefilter("ignore")
            import evidently
            import evidently.presets

        return evidently


#: Evidently 0.7 stattests whose value is a p-value (lower means more drift; drift at or below the
#: threshold), from ``evidently.legacy.calculations.stattests``. The others (``wasserstein``,
#: ``psi``, ``kl_div``, ``jensenshannon``, ``hellinger``, ``ed``) return a distance (higher means
#: more drift). ``TVD`` and ``empirical_mmd`` are permutation tests: Evidently reports their p-value.
P_VALUE_TESTS = frozenset(
    {
        "anderson",
        "chisquare",
        "cramer_von_mises",
        "empirical_mmd",
        "es",
        "fisher_exact",
        "g_test",
        "ks",
        "mannw",
        "t_test",
        "TVD",
        "z",
    }
)


def is_p_value_test(method: str) -> bool:
    """Whether Evidently's ``method`` returns a p-value (else a distance)."""
    return method in P_VALUE_TESTS


@dataclass(frozen=True, slots=True)
class FeatureDrift:
    """One feature's test: ``score`` is Evidently's raw value (a p-value or a distance, see
    :data:`P_VALUE_TESTS`); :attr:`drift_score` is the same on one scale, higher is more drift."""

    test: str
    score: float
    drifted: bool

    @property
    def p_value(self) -> float | None:
        """The test's p-value, or None when the method is a distance."""
        return self.score if is_p_value_test(self.test) else None

    @property
    def drift_score(self) -> float:
        """Higher means more drift: ``1 - p_value`` for a p-value test, else the distance."""
        return 1.0 - self.score if is_p_value_test(self.test) else self.score

    def to_dict(self) -> dict[str, Any]:
        # "p_value" and "drift_score" join the iris.drift message together with the typed payload
        # (consumers/worker_contract.py FeatureDriftModel) and docs/asyncapi.json.
        return {"test": self.test, "score": self.score, "drifted": self.drifted}


@dataclass(frozen=True, eq=False)
class DriftResult:
    """One comparison. ``snapshot`` is the Evidently ``Snapshot`` (for HTML and the workspace)."""

    features: Mapping[str, FeatureDrift]
    drifted_share: float
    dataset_drift: bool
    rows: int
    reference_rows: int
    params: DriftParams
    snapshot: Any = field(default=None, repr=False)

    @property
    def drifted_features(self) -> list[str]:
        return [name for name, f in self.features.items() if f.drifted]

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "reference_rows": self.reference_rows,
            "dataset_drift": self.dataset_drift,
            "drifted_share": self.drifted_share,
            "features": {name: f.to_dict() for name, f in self.features.items()},
            "method": self.params.method,
            "threshold": self.params.threshold,
            "drift_share": self.params.drift_share,
        }


def load_drift_params(path: Path = PARAMS_FILE) -> DriftParams:
    """The ``drift`` section of ``params.yaml``; its defaults when there is no params file."""
    if not path.exists():
        return DriftParams()
    params: DriftParams = read_section("drift", path)
    return params


def feature_frame(frame: pd.DataFrame, *, name: str) -> pd.DataFrame:
    """The four feature columns as float64, or :class:`BadInputError` naming ``name`` and the column."""
    missing = [c for c in FEATURES if c not in frame.columns]
    if missing:
        raise BadInputError(f"{name} has no column '{missing[0]}' (expected columns: {', '.join(FEATURES)}).")
    if len(frame) == 0:
        raise BadInputError(f"{name} has no rows.")
    out: dict[str, npt.NDArray[np.float64]] = {}
    for column in FEATURES:
        values = frame[column]
        if pd.api.types.is_bool_dtype(values.dtype):
            raise BadInputError(f"column '{column}' of {name} holds booleans, not numbers.")
        numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isfinite(numbers)
        if bad.any():
            row = int(np.argmax(bad))
            raw = values.iloc[row]
            what = "a missing value" if pd.isna(raw) else f"the non-numeric value {raw!r}"
            raise BadInputError(f"column '{column}' of {name} has {what} at row {row + 1}.")
        out[column] = numbers
    return pd.DataFrame(out)


def evaluate_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    params: DriftParams,
    *,
    reference_name: str = "the reference data",
    current_name: str = "the current data",
    timestamp: datetime | None = None,
    metadata: Mapping[str, str] | None = None,
    tags: Sequence[str] = (),
) -> DriftResult:
    """Compare ``current`` with ``reference`` feature by feature (Evidently ``DataDriftPreset``).

    A feature drifts when its test says so (``params.method`` at ``params.threshold``: a p-value
    for statistical tests, a distance for distance methods); the data set drifts when at least
    ``params.drift_share`` of the features drift. ``metadata`` and ``tags`` go on the snapshot
    (the workspace's dashboard filters and labels by them, :func:`ml.drift_reports.window_labels`).
    """
    cur = feature_frame(current, name=current_name)
    ref = feature_frame(reference, name=reference_name)
    ev = import_evidently()
    definition = ev.DataDefinition(numerical_columns=list(FEATURES))
    from evidently.metrics import RowCount

    report = ev.Report(
        [
            RowCount(),  # rows per window, for the workspace dashboard
            ev.presets.DataDriftPreset(
                columns=list(FEATURES),
                method=params.method,
                threshold=params.threshold,
                drift_share=params.drift_share,
            ),
        ],
        include_tests=True,
    )
    try:
        snapshot = report.run(
            current_data=ev.Dataset.from_pandas(cur, data_definition=definition),
            reference_data=ev.Dataset.from_pandas(ref, data_definition=definition),
            timestamp=timestamp,
            metadata=dict(metadata or {}),
            tags=list(tags),
        )
    except ValueError as exc:
        if "stattest" in str(exc).lower():
            raise ParamsError(
                f"params.yaml: drift.method {params.method!r} is not an Evidently drift method for numerical columns."
            ) from None
        raise
    features = _features_from(snapshot.dict(), params)
    drifted = sum(f.drifted for f in features.values())
    share = drifted / len(FEATURES)
    return DriftResult(
        features=features,
        drifted_share=share,
        dataset_drift=share >= params.drift_share,
        rows=len(cur),
        reference_rows=len(ref),
        params=params,
        snapshot=snapshot,
    )


def _features_from(snapshot: Mapping[str, Any], params: DriftParams) -> dict[str, FeatureDrift]:
    """Per-column score (``ValueDrift`` metric) and verdict (its test: FAIL means drift)."""
    scores: dict[str, float] = {}
    metric_column: dict[str, str] = {}
    for metric in snapshot.get("metrics", []):
        config = metric.get("config", {})
        if str(config.get("type", "")).endswith(":ValueDrift"):
            scores[config["column"]] = float(metric["value"])
            metric_column[metric["id"]] = config["column"]
    verdicts: dict[str, bool] = {}
    for test in snapshot.get("tests", []):
        params_cfg = test.get("metric_config", {}).get("params", {})
        column = params_cfg.get("column")
        if str(params_cfg.get("type", "")).endswith(":ValueDrift") and column is not None:
            verdicts[column] = test.get("status") == "FAIL"
    missing = [c for c in FEATURES if c not in scores or c not in verdicts]
    if missing:
        raise RuntimeError(f"Evidently returned no drift result for column '{missing[0]}'.")
    return {c: FeatureDrift(test=params.method, score=scores[c], drifted=verdicts[c]) for c in FEATURES}
