"""Drift evaluation, report files, and the stream-side DriftMonitor."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest

from consumers.drift_monitor import DriftMonitor
from ml.data import load_raw, split
from ml.drift import DriftResult, FeatureDrift, evaluate_drift, feature_frame
from ml.drift_reports import add_to_workspace, prune_reports, save_report
from ml.errors import BadInputError, ParamsError
from ml.metrics import Metrics
from ml.model import LoadedModel, ModelRef
from ml.params import DriftParams, PrepareParams
from ml.schema import FEATURES
from ml.settings import Settings

PARAMS = DriftParams(method="ks", threshold=0.05, drift_share=0.5)
MESSAGE_KEYS = {
    "window_start",
    "window_end",
    "rows",
    "dataset_drift",
    "drifted_share",
    "features",
    "model_version",
    "report",
}
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
REPORT_FILE = re.compile(r"^\d{8}T\d{6}Z-w\d{6}(-\d+)?\.(html|json)$")


# ---------------------------------------------------------------- data like the publisher's


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    """The model's training features: the same split the pipeline (and the registry fixture) uses."""
    train, _ = split(load_raw(), PrepareParams(test_size=0.2, seed=42))
    return train[list(FEATURES)]


def sample(rng: np.random.Generator, rows: int, shift_sd: float = 0.0) -> np.ndarray:
    """Per-species normals (Iris class means and stds), petal features shifted by ``shift_sd``
    standard deviations of the whole data set, rounded and clipped like the publisher."""
    raw = load_raw()
    grouped = raw.groupby("species")[list(FEATURES)]
    means, stds = grouped.mean().to_numpy(), grouped.std().to_numpy()
    overall = raw[list(FEATURES)].std().to_numpy()
    species = rng.integers(0, 3, size=rows)
    values = means[species] + rng.normal(size=(rows, 4)) * stds[species]
    for column in (FEATURES.index("petal_length"), FEATURES.index("petal_width")):
        values[:, column] += shift_sd * overall[column]
    return np.clip(np.round(values, 2), 0.01, 100.0)


def frame(values: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(values, columns=list(FEATURES))


def fake_model(version: str, reference: pd.DataFrame | None) -> LoadedModel:
    ref = ModelRef(name="iris-classifier", version=version, alias="champion", run_id=None)
    return LoadedModel(
        ref=ref,
        uri="models:/iris-classifier@champion",
        estimator=None,
        classes=np.array([]),
        reference=reference,
    )


def fake_result(rows: int, drifted: tuple[str, ...] = ()) -> DriftResult:
    features = {f: FeatureDrift("ks", 0.01 if f in drifted else 0.5, f in drifted) for f in FEATURES}
    share = len(drifted) / len(FEATURES)
    return DriftResult(features, share, share >= 0.5, rows, 120, PARAMS)


def settings_for(tmp_path: Path, **overrides: Any) -> Settings:
    # every window evaluated unless a test sets a share: the CPU budget that skips windows after
    # an evaluation has its own tests below (test_evaluations_stay_within_the_cpu_share_...)
    values: dict[str, Any] = {"reports_dir": tmp_path / "reports", "reports_keep": 50, "drift_cpu_share": 1.0}
    values.update(overrides)
    return Settings.model_validate(values)


@pytest.fixture
def monitors() -> Iterator[list[DriftMonitor]]:
    """Monitors started by a test; stopped even when it fails."""
    started: list[DriftMonitor] = []
    yield started
    for monitor in started:
        monitor.stop(timeout=10.0)


# ---------------------------------------------------------------- detection quality (Evidently)


@pytest.mark.slow
def test_in_distribution_traffic_rarely_drifts(reference: pd.DataFrame) -> None:
    rng = np.random.default_rng(20261129)
    flagged = [evaluate_drift(reference, frame(sample(rng, 500)), PARAMS).dataset_drift for _ in range(20)]
    assert sum(flagged) <= 1, f"{sum(flagged)} of 20 in-distribution windows raised dataset drift"


@pytest.mark.slow
def test_shift_is_flagged_in_the_first_full_window_and_reported(
    reference: pd.DataFrame, tmp_path: Path, monitors: list[DriftMonitor]
) -> None:
    """Real evaluator end to end: windows of 500, the shift starts at row 700 (inside window 1),
    so window 2 is the first full window after it: it must drift, on the petal features."""
    metrics = Metrics()
    settings = settings_for(tmp_path, drift_window_size=500, drift_queue_size=8)
    monitor = DriftMonitor(settings, metrics, PARAMS)
    monitors.append(monitor)
    monitor.start()
    rng = np.random.default_rng(7)
    model = fake_model("3", reference)
    traffic = np.concatenate([sample(rng, 700), sample(rng, 800, shift_sd=1.5)])
    for offset in range(0, len(traffic), 100):
        monitor.observe(traffic[offset : offset + 100], model, now=1_800_000_000.0 + offset / 100)
    monitor.stop(timeout=60.0)

    results = monitor.drain_results()
    assert [r["rows"] for r in results] == [500, 500, 500]
    assert results[0]["dataset_drift"] is False
    shifted = results[2]
    assert shifted["dataset_drift"] is True
    assert shifted["features"]["petal_length"]["drifted"] and shifted["features"]["petal_width"]["drifted"]
    assert set(shifted) == MESSAGE_KEYS and shifted["model_version"] == "3"
    assert shifted["features"]["petal_length"]["test"] == "ks"
    assert monitor.latest == shifted
    assert monitor.drain_results() == []  # drained once

    # reports: one HTML + JSON pair per window, sortable names, the JSON is the message plus params
    drift_dir = tmp_path / "reports" / "drift"
    names = sorted(p.name for p in drift_dir.iterdir())
    assert len(names) == 6 and all(REPORT_FILE.match(n) for n in names)
    assert Path(shifted["report"]).is_file() and Path(shifted["report"]).read_text().lstrip().startswith("<")
    saved = orjson.loads(Path(shifted["report"]).with_suffix(".json").read_bytes())
    assert {k: saved[k] for k in MESSAGE_KEYS} == shifted and saved["method"] == "ks"

    # gauges and counters show the last window
    value = metrics.registry.get_sample_value
    assert value("iris_drift_windows_total") == 3
    assert value("iris_dataset_drift") == 1
    assert value("iris_drift_share") == shifted["drifted_share"]
    ks = {"feature": "petal_width", "stattest": "ks"}
    p_value = shifted["features"]["petal_width"]["score"]  # the message keeps Evidently's raw value
    assert value("iris_feature_drift_p_value", ks) == p_value
    assert value("iris_feature_drift_score", ks) == 1 - p_value  # higher is more drift

    # and the Evidently workspace holds one snapshot per window, in the named project
    from evidently.ui.workspace import Workspace

    workspace = Workspace(str(tmp_path / "reports" / "workspace"))
    (project,) = workspace.search_project("iris-scorer drift")
    assert len(workspace.list_runs(project.id)) == 3


def test_unknown_method_is_a_params_error(reference: pd.DataFrame) -> None:
    current = frame(sample(np.random.default_rng(1), 60))
    with pytest.raises(ParamsError, match=r"drift\.method 'no-such-test'"):
        evaluate_drift(reference, current, DriftParams(method="no-such-test", threshold=0.1))


# ---------------------------------------------------------------- input validation (no Evidently)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: f.drop(columns=["petal_width"]), "current has no column 'petal_width'"),
        (
            lambda f: f.assign(sepal_width=["x", *f["sepal_width"][1:]]),
            "column 'sepal_width' of current has the non-numeric value 'x' at row 1",
        ),
        (
            lambda f: f.assign(petal_length=[*f["petal_length"][:-1], None]),
            "column 'petal_length' of current has a missing value at row 5",
        ),
        (lambda f: f.assign(sepal_length=True), "column 'sepal_length' of current holds booleans"),
        (lambda f: f.iloc[:0], "current has no rows"),
    ],
    ids=["missing column", "non-numeric", "missing value", "booleans", "no rows"],
)
def test_bad_input_names_the_column(mutate: Any, message: str) -> None:
    good = frame(sample(np.random.default_rng(0), 5))
    with pytest.raises(BadInputError) as info:
        feature_frame(mutate(good), name="current")
    assert message in info.value.message


def test_numeric_strings_and_extra_columns_are_accepted() -> None:
    good = frame(sample(np.random.default_rng(0), 3)).astype(str).assign(id=["a", "b", "c"])
    out = feature_frame(good, name="current")
    assert list(out.columns) == list(FEATURES) and out.dtypes.eq(np.float64).all()


# ---------------------------------------------------------------- report files


def test_save_report_names_and_retention(tmp_path: Path) -> None:
    start = datetime(2026, 11, 29, 10, 15, tzinfo=UTC)
    paths = [
        save_report(
            fake_result(500, ("petal_length",)),
            tmp_path,
            window_start=start + timedelta(minutes=i),
            window_end=start + timedelta(minutes=i, seconds=30),
            keep=3,
            index=40 + i,
            model_version="3",
        )
        for i in range(5)
    ]
    assert paths[2] == (
        tmp_path / "20261129T101700Z-w000042.html",
        tmp_path / "20261129T101700Z-w000042.json",
    )
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == sorted(n for pair in paths[2:] for n in (pair[0].name, pair[1].name))
    message = orjson.loads(paths[4][1].read_bytes())
    assert set(message) >= MESSAGE_KEYS
    assert message["window_start"] == "2026-11-29T10:19:00.000Z" and ISO_UTC.match(message["window_end"])
    assert message["features"]["petal_length"] == {"test": "ks", "score": 0.01, "drifted": True}
    assert message["report"] == str(paths[4][0])


def test_same_second_and_index_do_not_overwrite(tmp_path: Path) -> None:
    start = datetime(2026, 11, 29, 10, 15, tzinfo=UTC)
    first = save_report(fake_result(10), tmp_path, window_start=start, window_end=start, keep=10)
    second = save_report(fake_result(10), tmp_path, window_start=start, window_end=start, keep=10)
    assert first != second and second[0].name == "20261129T101500Z-w000000-2.html"
    assert all(p.exists() for p in (*first, *second))


def test_prune_leaves_other_files_alone(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "20261129T101500Z-w000001.html").write_text("old")
    (tmp_path / "20261129T101500Z-w000001.json").write_text("{}")
    (tmp_path / "20261129T101600Z-w000002.html").write_text("new")
    deleted = prune_reports(tmp_path, keep=1)
    assert sorted(p.name for p in deleted) == [
        "20261129T101500Z-w000001.html",
        "20261129T101500Z-w000001.json",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["20261129T101600Z-w000002.html", "notes.txt"]


# ---------------------------------------------------------------- the monitor (fake evaluators)


class BlockingEvaluator:
    """A deliberately slow evaluator: every call waits until the test releases it."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls: list[tuple[int, int, str]] = []

    def __call__(self, reference: pd.DataFrame, current: pd.DataFrame, params: DriftParams) -> DriftResult:
        self.release.wait(timeout=30)
        self.calls.append((id(reference), len(current), params.method))
        return fake_result(len(current))


def test_observe_never_waits_for_evaluation(tmp_path: Path, monitors: list[DriftMonitor]) -> None:
    metrics = Metrics()
    evaluator = BlockingEvaluator()
    settings = settings_for(tmp_path, drift_window_size=10, drift_min_rows=5, drift_queue_size=2)
    monitor = DriftMonitor(settings, metrics, PARAMS, evaluator=evaluator)
    monitors.append(monitor)
    monitor.start()
    model = fake_model("1", frame(np.ones((20, 4))))
    for i in range(20):  # 20 full windows while the evaluator is stuck on (at most) the first
        monitor.observe(np.full((10, 4), float(i)), model, now=1000.0 + i)
    value = metrics.registry.get_sample_value
    skipped = value("iris_drift_windows_skipped_total", {"reason": "backlog"}) or 0
    # observe returned 20 times although no evaluation could finish: at most 1 running + 2 queued
    assert evaluator.calls == []
    assert skipped >= 17
    evaluator.release.set()
    monitor.stop(timeout=10.0)
    evaluated = value("iris_drift_windows_total")
    assert evaluated == len(evaluator.calls) == len(monitor.drain_results())
    assert evaluated + skipped == 20


def test_model_change_closes_the_window_against_the_old_reference(
    tmp_path: Path, monitors: list[DriftMonitor]
) -> None:
    evaluator = BlockingEvaluator()
    evaluator.release.set()
    settings = settings_for(tmp_path, drift_window_size=100, drift_min_rows=5)
    monitor = DriftMonitor(settings, Metrics(), PARAMS, evaluator=evaluator)
    monitors.append(monitor)
    monitor.start()
    old, new = fake_model("1", frame(np.ones((3, 4)))), fake_model("2", frame(np.zeros((3, 4))))
    monitor.observe(np.ones((30, 4)), old, now=0.0)
    monitor.observe(np.ones((100, 4)), new, now=1.0)  # closes v1 (30 rows), fills v2 (100 rows)
    monitor.stop(timeout=10.0)
    results = monitor.drain_results()
    assert [(r["model_version"], r["rows"]) for r in results] == [("1", 30), ("2", 100)]
    assert [c[0] for c in evaluator.calls] == [id(old.reference), id(new.reference)]


def test_tick_closes_by_time_and_skips_small_windows(tmp_path: Path, monitors: list[DriftMonitor]) -> None:
    metrics = Metrics()
    evaluator = BlockingEvaluator()
    evaluator.release.set()
    settings = settings_for(tmp_path, drift_window_size=500, drift_window_seconds=60, drift_min_rows=50)
    monitor = DriftMonitor(settings, metrics, PARAMS, evaluator=evaluator)
    monitors.append(monitor)
    monitor.start()
    model = fake_model("1", frame(np.ones((3, 4))))
    monitor.observe(np.ones((10, 4)), model, now=0.0)
    monitor.tick(now=59.0)
    assert (  # exported at 0 from the start, so dashboards' rate() has data
        metrics.registry.get_sample_value("iris_drift_windows_skipped_total", {"reason": "too_few_rows"})
        == 0.0
    )
    monitor.tick(now=60.0)  # 10 rows < 50: not evaluated
    assert (
        metrics.registry.get_sample_value("iris_drift_windows_skipped_total", {"reason": "too_few_rows"}) == 1
    )
    monitor.observe(np.ones((60, 4)), model, now=100.0)
    monitor.tick(now=170.0)  # 60 rows: evaluated
    monitor.stop(timeout=10.0)
    (result,) = monitor.drain_results()
    assert result["rows"] == 60
    assert result["window_start"] == "1970-01-01T00:01:40.000Z"
    assert result["window_end"] == "1970-01-01T00:02:50.000Z"


def test_model_without_reference_is_skipped(tmp_path: Path) -> None:
    metrics = Metrics()
    monitor = DriftMonitor(
        settings_for(tmp_path, drift_window_size=10), metrics, PARAMS, evaluator=BlockingEvaluator()
    )
    monitor.observe(np.ones((10, 4)), fake_model("1", None), now=0.0)
    assert (
        metrics.registry.get_sample_value("iris_drift_windows_skipped_total", {"reason": "no_reference"}) == 1
    )


def test_observe_rejects_a_wrong_shape(tmp_path: Path) -> None:
    monitor = DriftMonitor(settings_for(tmp_path), Metrics(), PARAMS, evaluator=BlockingEvaluator())
    with pytest.raises(ValueError, match="feature matrix"):
        monitor.observe(np.ones((3, 3)), fake_model("1", None))


def test_workspace_keeps_the_newest_snapshots_and_never_raises(
    reference: pd.DataFrame, tmp_path: Path
) -> None:
    from evidently.ui.workspace import Workspace

    result = evaluate_drift(reference, frame(sample(np.random.default_rng(2), 100)), PARAMS)
    ids = [add_to_workspace(result, tmp_path / "ws", name=f"w{i}", keep=2) for i in range(3)]
    workspace = Workspace(str(tmp_path / "ws"))
    (project,) = workspace.search_project("iris-scorer drift")
    assert sorted(str(r) for r in workspace.list_runs(project.id)) == sorted(str(i) for i in ids[1:])

    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the workspace should be")
    assert add_to_workspace(result, blocked, name="x") is None


# ---------------------------------------------------------------- what the drift metrics hold


@pytest.mark.parametrize(
    ("test", "raw", "p_value", "drift_score"),
    [
        ("ks", 0.01, 0.01, 0.99),  # a p-value: low p, high score
        ("cramer_von_mises", 0.8, 0.8, pytest.approx(0.2)),
        ("TVD", 0.3, 0.3, 0.7),  # Evidently 0.7's TVD is a permutation test's p-value
        ("wasserstein", 0.25, None, 0.25),  # a distance is already higher-is-more
        ("psi", 1.5, None, 1.5),
    ],
)
def test_feature_drift_score_is_higher_for_more_drift(
    test: str, raw: float, p_value: float | None, drift_score: float
) -> None:
    feature = FeatureDrift(test, raw, True)
    assert feature.p_value == p_value and feature.drift_score == drift_score
    assert feature.to_dict()["score"] == raw  # the message's raw value is unchanged


def test_every_evidently_numerical_stattest_is_classified() -> None:
    """P_VALUE_TESTS follows Evidently's registry: a test returning a p-value drifts below the
    threshold, a distance above it (checked on the source of each registered numerical test)."""
    import inspect

    from evidently.legacy.calculations.stattests import registry

    from ml.drift import P_VALUE_TESTS

    for stattest in registry._registered_stat_tests.get("numerical", {}).values():  # type: ignore[attr-defined]
        impl = registry._impls[stattest]  # type: ignore[attr-defined]
        source = "".join(inspect.getsource(i.func) for i in impl.values() if hasattr(i, "func"))
        says_p_value = re.search(r"return\s+\w*p_?value\w*\s*,", source) is not None
        assert (stattest.name in P_VALUE_TESTS) == says_p_value, stattest.name


def test_gauges_hold_a_score_and_the_p_value_with_the_stattest(tmp_path: Path) -> None:
    metrics = Metrics()
    evaluator = BlockingEvaluator()
    evaluator.release.set()
    monitor = DriftMonitor(settings_for(tmp_path, drift_window_size=10), metrics, PARAMS, evaluator=evaluator)
    monitor.start()
    monitor.observe(np.ones((10, 4)), fake_model("1", frame(np.ones((3, 4)))), now=0.0)
    monitor.stop(timeout=10.0)
    value = metrics.registry.get_sample_value
    labels = {"feature": "petal_width", "stattest": "ks"}
    assert value("iris_feature_drift_score", labels) == 0.5  # fake_result: p = 0.5 → 1 - p
    assert value("iris_feature_drift_p_value", labels) == 0.5


def test_distance_methods_export_no_p_value(tmp_path: Path) -> None:
    def wasserstein(reference: pd.DataFrame, current: pd.DataFrame, params: DriftParams) -> DriftResult:
        features = {f: FeatureDrift("wasserstein", 0.2, True) for f in FEATURES}
        return DriftResult(features, 1.0, True, len(current), len(reference), params)

    metrics = Metrics()
    monitor = DriftMonitor(
        settings_for(tmp_path, drift_window_size=10), metrics, PARAMS, evaluator=wasserstein
    )
    monitor.start()
    monitor.observe(np.ones((10, 4)), fake_model("1", frame(np.ones((3, 4)))), now=0.0)
    monitor.stop(timeout=10.0)
    value = metrics.registry.get_sample_value
    labels = {"feature": "sepal_length", "stattest": "wasserstein"}
    assert value("iris_feature_drift_score", labels) == 0.2
    assert not [
        s for m in metrics.registry.collect() if m.name == "iris_feature_drift_p_value" for s in m.samples
    ]


def test_only_a_drift_computing_process_registers_drift_metrics() -> None:
    def names(metrics: Metrics) -> set[str]:
        return {family.name for family in metrics.registry.collect()}

    drift = {
        "iris_drift_share",
        "iris_dataset_drift",
        "iris_feature_drift_score",
        "iris_feature_drift_p_value",
        "iris_drift_windows",
        "iris_drift_windows_skipped",
    }
    assert drift <= names(Metrics(drift=True))
    assert not drift & names(Metrics(drift=False))
    assert "iris_predictions" in names(Metrics(drift=False))


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _CostlyEvaluator:
    """Each evaluation 'takes' ``cost`` seconds of the budget clock."""

    def __init__(self, clock: _Clock, cost: float) -> None:
        self.clock, self.cost, self.calls = clock, cost, 0

    def __call__(self, reference: Any, current: Any, params: Any) -> Any:
        self.calls += 1
        self.clock.now += self.cost
        return fake_result(len(current))


def test_evaluations_stay_within_the_cpu_share_whatever_the_window_rate(
    tmp_path: Path, monitors: list[DriftMonitor], monkeypatch: pytest.MonkeyPatch
) -> None:
    """IRIS_DRIFT_CPU_SHARE=0.25 and 1 s per evaluation: after one, 3 s of closed windows are
    skipped (reason="budget"), counted, not queued; then the next window is evaluated again."""
    from ml import drift_job

    clock = _Clock()
    monkeypatch.setattr(drift_job, "cpu_clock", clock)  # the evaluation's CPU seconds, as the clock moved
    evaluator = _CostlyEvaluator(clock, cost=1.0)
    metrics = Metrics()
    settings = settings_for(tmp_path, drift_window_size=10, drift_min_rows=5, drift_cpu_share=0.25)
    monitor = DriftMonitor(settings, metrics, PARAMS, evaluator=evaluator, budget_clock=clock)
    monitors.append(monitor)
    monitor.start()
    model = fake_model("1", frame(np.ones((20, 4))))
    value = metrics.registry.get_sample_value

    def window() -> None:
        monitor.observe(np.ones((10, 4)), model, now=1000.0)

    window()  # evaluated: the clock moves from 0 to 1
    deadline = time.monotonic() + 30
    while evaluator.calls < 1 or clock.now < 1.0 or value("iris_drift_windows_total") != 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    for at in (1.0, 2.0, 3.9):  # within 1 + 1 * (1/0.25 - 1) = 4
        clock.now = at
        window()
    assert value("iris_drift_windows_skipped_total", {"reason": "budget"}) == 3
    clock.now = 4.0
    window()
    monitor.stop(timeout=10.0)
    assert evaluator.calls == 2
    assert value("iris_drift_windows_total") == 2


class _BlockingCostlyEvaluator(_CostlyEvaluator):
    """The first evaluation waits for ``release`` (windows close meanwhile and are queued)."""

    def __init__(self, clock: _Clock, cost: float) -> None:
        super().__init__(clock, cost)
        self.entered, self.release = threading.Event(), threading.Event()

    def __call__(self, reference: Any, current: Any, params: Any) -> Any:
        if self.calls == 0:
            self.entered.set()
            assert self.release.wait(30)
        return super().__call__(reference, current, params)


def test_windows_queued_during_an_evaluation_are_charged_to_its_budget(
    tmp_path: Path, monitors: list[DriftMonitor], monkeypatch: pytest.MonkeyPatch
) -> None:
    """At a high rate, windows close while an evaluation runs and wait in the queue; the budget
    that evaluation earns applies to them too (they are skipped as "budget" when their turn comes),
    or a share of 0.1 lets 1 + drift_queue_size evaluations through per budget period (measured:
    0.4-0.5 of a core in the child instead of 0.1)."""
    from ml import drift_job

    clock = _Clock()
    monkeypatch.setattr(drift_job, "cpu_clock", clock)
    evaluator = _BlockingCostlyEvaluator(clock, cost=1.0)
    metrics = Metrics()
    settings = settings_for(
        tmp_path, drift_window_size=10, drift_min_rows=5, drift_cpu_share=0.25, drift_queue_size=4
    )
    monitor = DriftMonitor(settings, metrics, PARAMS, evaluator=evaluator, budget_clock=clock)
    monitors.append(monitor)
    monitor.start()
    model = fake_model("1", frame(np.ones((20, 4))))
    value = metrics.registry.get_sample_value
    monitor.observe(np.ones((10, 4)), model, now=1000.0)
    assert evaluator.entered.wait(30)
    for _ in range(3):  # closed while the first one is evaluated: queued, not yet charged
        monitor.observe(np.ones((10, 4)), model, now=1000.0)
    evaluator.release.set()
    deadline = time.monotonic() + 30
    while (value("iris_drift_windows_skipped_total", {"reason": "budget"}) or 0) < 3:
        assert time.monotonic() < deadline, (evaluator.calls, value("iris_drift_windows_total"))
        time.sleep(0.01)
    monitor.stop(timeout=10.0)
    assert evaluator.calls == 1
    assert value("iris_drift_windows_total") == 1


def test_a_cpu_share_of_one_evaluates_every_window(tmp_path: Path, monitors: list[DriftMonitor]) -> None:
    clock = _Clock()
    evaluator = _CostlyEvaluator(clock, cost=1.0)
    settings = settings_for(tmp_path, drift_window_size=10, drift_min_rows=5, drift_cpu_share=1.0)
    monitor = DriftMonitor(settings, Metrics(), PARAMS, evaluator=evaluator, budget_clock=clock)
    monitors.append(monitor)
    monitor.start()
    model = fake_model("1", frame(np.ones((20, 4))))
    for _ in range(3):
        monitor.observe(np.ones((10, 4)), model, now=1000.0)
    monitor.stop(timeout=10.0)
    assert evaluator.calls == 3
