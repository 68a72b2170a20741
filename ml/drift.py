"""Data drift: Evidently reports of current features against a model's training features.

- :func:`evaluate_drift` — one comparison (Evidently 0.7 ``Report`` + ``DataDriftPreset``),
  returning a :class:`DriftResult` that keeps the Evidently snapshot;
- :func:`save_report` — the HTML report and the JSON result of one window, sortable names
  (``20261129T101500Z-w000042.html``) and retention; :func:`add_to_workspace` also files the
  snapshot in an Evidently workspace (``evidently ui --workspace reports/workspace``);
- :class:`DriftMonitor` — what the stream worker calls: ``observe`` rows (never blocks), windows
  from :mod:`ml.windows` are evaluated by a background thread, results are drained as
  ``iris.drift`` messages;
- :func:`write_drift_report` — ``iris-scorer drift-report``.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue
import re
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pandas as pd

from ml.errors import BadInputError, ParamsError
from ml.logs import log_event
from ml.metrics import Metrics
from ml.model import LoadedModel
from ml.params import PARAMS_FILE, DriftParams, read_section
from ml.schema import FEATURES
from ml.settings import Settings
from ml.windows import ClosedWindow, WindowBuffer, WindowConfig

logger = logging.getLogger(__name__)

WORKSPACE_PROJECT = "iris-scorer drift"
REPORT_NAME = re.compile(r"^(?P<stem>\d{8}T\d{6}Z-w\d{6,}(?:-\d+)?)\.(?:html|json)$")
RESULTS_KEPT = 1000

Evaluator = Callable[[pd.DataFrame, pd.DataFrame, DriftParams], "DriftResult"]


# ---------------------------------------------------------------- Evidently


_evidently_lock = threading.Lock()


def _evidently() -> Any:
    """Import Evidently once, lazily (it is slow to import and must not load at our import).

    Evidently 0.7.x imports ``pandas.core.dtypes.common.infer_dtype_from_object``, which pandas 3
    removed; it is only used by a legacy column-type test we never run, so a stand-in is enough.
    """
    with _evidently_lock:
        import pandas.core.dtypes.common as pd_common

        if not hasattr(pd_common, "infer_dtype_from_object"):

            def infer_dtype_from_object(dtype: Any) -> Any:
                return np.dtype(dtype).type

            pd_common.infer_dtype_from_object = infer_dtype_from_object  # type: ignore[attr-defined]
        with warnings.catch_warnings():
            # Import-time deprecation noise of Evidently's dependencies (plotly vs pandas 3).
            warnings.simplefilter("ignore")
            import evidently
            import evidently.presets

        return evidently


@dataclass(frozen=True, slots=True)
class FeatureDrift:
    test: str
    score: float
    drifted: bool

    def to_dict(self) -> dict[str, Any]:
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
) -> DriftResult:
    """Compare ``current`` with ``reference`` feature by feature (Evidently ``DataDriftPreset``).

    A feature drifts when its test says so (``params.method`` at ``params.threshold``: a p-value
    for statistical tests, a distance for distance methods); the data set drifts when at least
    ``params.drift_share`` of the features drift.
    """
    cur = feature_frame(current, name=current_name)
    ref = feature_frame(reference, name=reference_name)
    ev = _evidently()
    definition = ev.DataDefinition(numerical_columns=list(FEATURES))
    report = ev.Report(
        [
            ev.presets.DataDriftPreset(
                columns=list(FEATURES),
                method=params.method,
                threshold=params.threshold,
                drift_share=params.drift_share,
            )
        ],
        include_tests=True,
    )
    try:
        snapshot = report.run(
            current_data=ev.Dataset.from_pandas(cur, data_definition=definition),
            reference_data=ev.Dataset.from_pandas(ref, data_definition=definition),
            timestamp=timestamp,
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


# ---------------------------------------------------------------- saving


def iso_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def report_stem(window_start: datetime, index: int) -> str:
    """Sortable: the window's start (UTC, to the second), then its sequence number."""
    return f"{window_start.astimezone(UTC):%Y%m%dT%H%M%SZ}-w{index:06d}"


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def save_report(
    result: DriftResult,
    directory: Path,
    *,
    window_start: datetime,
    window_end: datetime,
    keep: int,
    index: int = 0,
    model_version: str | None = None,
) -> tuple[Path, Path]:
    """Write ``<stem>.html`` (the Evidently report) and ``<stem>.json`` (the drift message plus the
    test parameters), then delete the oldest pairs beyond ``keep``. Returns (html, json)."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = report_stem(window_start, index)
    suffix = 1
    while (directory / f"{stem}.html").exists() or (directory / f"{stem}.json").exists():
        suffix += 1
        stem = f"{report_stem(window_start, index)}-{suffix}"
    html_path, json_path = directory / f"{stem}.html", directory / f"{stem}.json"
    if result.snapshot is not None:
        _write_atomic(html_path, result.snapshot.get_html_str(as_iframe=False).encode())
    else:  # a result built without Evidently (tests, custom evaluators): still a readable page
        _write_atomic(html_path, _plain_html(result).encode())
    document = drift_message(
        result,
        window_start=window_start,
        window_end=window_end,
        model_version=model_version,
        report=html_path,
    )
    document.update({k: v for k, v in result.to_dict().items() if k not in document})
    _write_atomic(json_path, orjson.dumps(document, option=orjson.OPT_INDENT_2))
    prune_reports(directory, keep)
    return html_path, json_path


def prune_reports(directory: Path, keep: int) -> list[Path]:
    """Keep the newest ``keep`` report pairs (by name, which sorts by time); return what was deleted."""
    stems = sorted({m["stem"] for p in directory.iterdir() if (m := REPORT_NAME.match(p.name))})
    deleted: list[Path] = []
    for stem in stems[: max(0, len(stems) - keep)]:
        for ext in (".html", ".json"):
            path = directory / f"{stem}{ext}"
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                deleted.append(path)
    return deleted


def _plain_html(result: DriftResult) -> str:
    rows = "".join(
        f"<tr><td>{n}</td><td>{f.test}</td><td>{f.score:.4g}</td><td>{f.drifted}</td></tr>"
        for n, f in result.features.items()
    )
    return (
        "<!doctype html><title>drift</title><table><tr><th>feature</th><th>test</th><th>score</th>"
        f"<th>drifted</th></tr>{rows}</table><p>dataset drift: {result.dataset_drift}</p>"
    )


def drift_message(
    result: DriftResult,
    *,
    window_start: datetime,
    window_end: datetime,
    model_version: str | None,
    report: Path | None,
) -> dict[str, Any]:
    """The ``iris.drift`` message of ARCHITECTURE.md."""
    return {
        "window_start": iso_utc(window_start),
        "window_end": iso_utc(window_end),
        "rows": result.rows,
        "dataset_drift": result.dataset_drift,
        "drifted_share": result.drifted_share,
        "features": {name: f.to_dict() for name, f in result.features.items()},
        "model_version": model_version,
        "report": None if report is None else str(report),
    }


class DriftWorkspace:
    """Best-effort history in an Evidently workspace: failures are logged, never raised."""

    def __init__(self, path: Path, project_name: str = WORKSPACE_PROJECT, *, keep: int | None = None) -> None:
        self.path = path
        self.project_name = project_name
        self.keep = keep
        self._workspace: Any = None
        self._project_id: Any = None

    def add(self, result: DriftResult, name: str) -> str | None:
        """File ``result.snapshot`` under the project and drop the oldest snapshots beyond ``keep``;
        return the new snapshot id (or None)."""
        if result.snapshot is None:
            return None
        try:
            if self._workspace is None:
                _evidently()
                from evidently.ui.workspace import Workspace

                self.path.mkdir(parents=True, exist_ok=True)
                workspace = Workspace(str(self.path))
                found = workspace.search_project(self.project_name)
                project = found[0] if found else workspace.create_project(self.project_name)
                self._workspace, self._project_id = workspace, project.id
            ref = self._workspace.add_run(self._project_id, result.snapshot, name=name)
            if self.keep is not None:
                # snapshot ids are UUIDv7: sorting them sorts by creation time
                runs = sorted(self._workspace.list_runs(self._project_id), key=str)
                for old in runs[: max(0, len(runs) - self.keep)]:
                    self._workspace.delete_run(self._project_id, old)
            return str(ref.id)
        except Exception as exc:  # the HTML/JSON pair is the record; the workspace is a bonus
            log_event(logger, "drift_workspace_failed", logging.WARNING, path=str(self.path), error=repr(exc))
            return None


def add_to_workspace(
    result: DriftResult, workspace_dir: Path, *, name: str, keep: int | None = None
) -> str | None:
    """One-off :meth:`DriftWorkspace.add` (the monitor keeps one open instead)."""
    return DriftWorkspace(workspace_dir, keep=keep).add(result, name)


# ---------------------------------------------------------------- the stream monitor


@dataclass(frozen=True)
class _Job:
    window: ClosedWindow
    rows: npt.NDArray[np.float64]
    model: LoadedModel


@dataclass(frozen=True)
class _WindowTask:
    """Everything one window's evaluation needs: plain, picklable values."""

    reference: pd.DataFrame
    rows: npt.NDArray[np.float64]
    params: DriftParams
    reports_dir: Path
    workspace_dir: Path
    keep: int
    index: int
    started_at_s: float
    ended_at_s: float
    model_version: str


@dataclass(frozen=True)
class _WindowOutcome:
    message: dict[str, Any]
    rows: int
    drifted_share: float
    dataset_drift: bool
    scores: dict[str, float]
    drifted: list[str]
    report: str


_PROCESS_WORKSPACES: dict[Path, DriftWorkspace] = {}


def _run_window(
    task: _WindowTask, evaluate: Evaluator | None = None, workspace: DriftWorkspace | None = None
) -> _WindowOutcome:
    """Evaluate one window, save its reports and file its snapshot. Runs in the drift process
    (default) or in the monitor's thread (injected evaluators)."""
    start = datetime.fromtimestamp(task.started_at_s, UTC)
    end = datetime.fromtimestamp(task.ended_at_s, UTC)
    current = pd.DataFrame(task.rows, columns=list(FEATURES))
    result = (evaluate or evaluate_drift)(task.reference, current, task.params)
    html, _ = save_report(
        result,
        task.reports_dir,
        window_start=start,
        window_end=end,
        keep=task.keep,
        index=task.index,
        model_version=task.model_version,
    )
    if workspace is None:
        workspace = _PROCESS_WORKSPACES.get(task.workspace_dir)
        if workspace is None:
            workspace = _PROCESS_WORKSPACES[task.workspace_dir] = DriftWorkspace(
                task.workspace_dir, keep=task.keep
            )
    workspace.add(result, name=html.stem)
    message = drift_message(
        result, window_start=start, window_end=end, model_version=task.model_version, report=html
    )
    return _WindowOutcome(
        message=message,
        rows=result.rows,
        drifted_share=result.drifted_share,
        dataset_drift=result.dataset_drift,
        scores={name: feature.score for name, feature in result.features.items()},
        drifted=list(result.drifted_features),
        report=str(html),
    )


def _warm_up() -> None:
    _evidently()


def _lower_priority() -> None:
    # Scoring comes first: on a busy node the drift process yields the CPU, falls behind, and
    # the monitor skips (and counts) windows instead of slowing the stream.
    with contextlib.suppress(OSError, AttributeError):
        os.nice(10)


class DriftMonitor:
    """Drift windows over the scored stream, evaluated off the hot path.

    ``observe`` appends rows under a lock and hands closed windows to a bounded queue without
    waiting; a full queue skips the window (``iris_drift_windows_skipped{reason="backlog"}``).
    One background thread evaluates, saves reports and updates the gauges; the stream worker
    publishes what :meth:`drain_results` returns to ``iris.drift``.
    """

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        params: DriftParams | None = None,
        *,
        evaluator: Evaluator | None = None,
        clock: Callable[[], float] = time.time,
        use_process: bool | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.params = params if params is not None else load_drift_params()
        self._evaluate: Evaluator = evaluator if evaluator is not None else evaluate_drift
        self._clock = clock
        self._buffer = WindowBuffer(
            WindowConfig(
                max_rows=settings.drift_window_size,
                max_seconds=settings.drift_window_seconds,
                min_rows=settings.drift_min_rows,
            )
        )
        self._window_model: LoadedModel | None = None
        self._lock = threading.Lock()
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=settings.drift_queue_size)
        self._results: deque[dict[str, Any]] = deque(maxlen=RESULTS_KEPT)
        self._latest: dict[str, Any] | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.reports_dir = settings.reports_dir / "drift"
        self._workspace = DriftWorkspace(settings.reports_dir / "workspace", keep=settings.reports_keep)
        # Evidently is CPU-heavy Python: in a thread it would take the GIL from the scoring loop.
        # By default windows are evaluated in one child process (the other core); an injected
        # evaluator (tests) runs in the thread.
        self._use_process = (evaluator is None) if use_process is None else use_process
        self._executor: ProcessPoolExecutor | None = None

    # -- called by the stream worker

    def start(self) -> None:
        if self._thread is not None:
            return
        if self._use_process:
            self._executor = ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn")
            )
            self._executor.submit(_warm_up)  # import Evidently there now, not in the first window
        elif self._evaluate is evaluate_drift:
            _evidently()  # import here, in the caller's thread, not in the middle of a window
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="drift-monitor", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Finish queued windows within ``timeout`` seconds, then stop the thread."""
        thread = self._thread
        if thread is None:
            return
        self._stopping.set()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        thread.join(timeout)
        if thread.is_alive():
            log_event(logger, "drift_monitor_stop_timeout", logging.WARNING, timeout_s=timeout)
        self._thread = None
        if self._executor is not None:
            self._executor.shutdown(wait=not thread.is_alive(), cancel_futures=True)
            self._executor = None

    def observe(self, features: npt.NDArray[Any], model: LoadedModel, now: float | None = None) -> None:
        """Add scored rows (n x 4) to the current window. Never blocks on evaluation."""
        rows = np.array(features, dtype=np.float64, copy=True)
        if rows.ndim != 2 or rows.shape[1] != len(FEATURES):
            raise ValueError(f"expected an (n, {len(FEATURES)}) feature matrix, got shape {rows.shape}")
        if len(rows) == 0:
            return
        now_s = self._clock() if now is None else now
        with self._lock:
            previous = self._window_model
            closed = self._buffer.add(rows, model.version, now_s)
            self._window_model = model
            for window, window_rows in closed:
                same = previous is not None and window.model_version == previous.version
                self._dispatch(window, window_rows, previous if same and previous else model)

    def tick(self, now: float | None = None) -> None:
        """Close the current window if it has lasted ``IRIS_DRIFT_WINDOW_SECONDS``."""
        now_s = self._clock() if now is None else now
        with self._lock:
            for window, window_rows in self._buffer.tick(now_s):
                if self._window_model is not None:
                    self._dispatch(window, window_rows, self._window_model)

    def drain_results(self) -> list[dict[str, Any]]:
        """Drift messages of the windows evaluated since the last call, oldest first."""
        out: list[dict[str, Any]] = []
        while True:
            try:
                out.append(self._results.popleft())
            except IndexError:
                return out

    @property
    def latest(self) -> dict[str, Any] | None:
        return self._latest

    # -- internals

    def _skip(self, window: ClosedWindow, reason: str) -> None:
        self.metrics.drift_windows_skipped.labels(reason=reason).inc()
        log_event(
            logger,
            "drift_window_skipped",
            logging.WARNING if reason != "too_few_rows" else logging.INFO,
            reason=reason,
            window=window.index,
            rows=window.rows,
            model_version=window.model_version,
        )

    def _dispatch(self, window: ClosedWindow, rows: npt.NDArray[np.float64], model: LoadedModel) -> None:
        if window.skip_reason is not None:
            self._skip(window, window.skip_reason)
        elif model.reference is None:
            self._skip(window, "no_reference")
        else:
            try:
                self._queue.put_nowait(_Job(window, rows, model))
            except queue.Full:
                self._skip(window, "backlog")

    def _run(self) -> None:
        while True:
            try:
                job = self._queue.get(timeout=0.2)
            except queue.Empty:
                if self._stopping.is_set():
                    return
                continue
            if job is None:
                return
            try:
                self._process(job)
            except Exception:
                self.metrics.drift_windows_skipped.labels(reason="error").inc()
                logger.exception("drift_window_failed", extra={"window": job.window.index})

    def _process(self, job: _Job) -> None:
        window, model = job.window, job.model
        assert model.reference is not None
        task = _WindowTask(
            reference=model.reference,
            rows=job.rows,
            params=self.params,
            reports_dir=self.reports_dir,
            workspace_dir=self.settings.reports_dir / "workspace",
            keep=self.settings.reports_keep,
            index=window.index,
            started_at_s=window.started_at_s,
            ended_at_s=window.ended_at_s,
            model_version=model.version,
        )
        if self._executor is not None:
            outcome = self._executor.submit(_run_window, task).result()
        else:
            outcome = _run_window(task, self._evaluate, self._workspace)
        self.metrics.drift_share.set(outcome.drifted_share)
        self.metrics.dataset_drift.set(1 if outcome.dataset_drift else 0)
        for name, score in outcome.scores.items():
            self.metrics.feature_drift_score.labels(feature=name).set(score)
        self.metrics.drift_windows.inc()
        self._results.append(outcome.message)
        self._latest = outcome.message
        log_event(
            logger,
            "drift_window",
            window=window.index,
            rows=outcome.rows,
            dataset_drift=outcome.dataset_drift,
            drifted_share=outcome.drifted_share,
            drifted=",".join(outcome.drifted) or "-",
            model_version=model.version,
            report=outcome.report,
        )


# ---------------------------------------------------------------- the command line

READERS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def read_features_file(path: Path, *, role: str) -> pd.DataFrame:
    """A CSV or Parquet file, or :class:`BadInputError` naming it."""
    kind = READERS.get(path.suffix.lower())
    if kind is None:
        raise BadInputError(f"{role} file {path} must be .csv or .parquet, not '{path.suffix or '(none)'}'.")
    if not path.is_file():
        raise BadInputError(f"{role} file {path} does not exist.")
    try:
        return pd.read_csv(path) if kind == "csv" else pd.read_parquet(path)
    except Exception as exc:
        raise BadInputError(f"{role} file {path} could not be read as {kind.upper()}: {exc}.") from None


def write_drift_report(
    current_path: Path,
    reference_path: Path | None,
    output_path: Path,
    settings: Settings,
    params: DriftParams | None = None,
) -> DriftResult:
    """One report of ``current_path`` against ``reference_path`` (default: the model at
    ``settings.model_uri``, i.e. the champion's training features), to ``.html`` or ``.json``."""
    out_kind = output_path.suffix.lower()
    if out_kind not in (".html", ".json"):
        raise BadInputError(f"output {output_path} must end in .html or .json.")
    params = params if params is not None else load_drift_params()
    current = read_features_file(current_path, role="current")
    if reference_path is not None:
        reference = read_features_file(reference_path, role="reference")
        reference_name = f"reference file {reference_path}"
    else:
        from ml import tracking
        from ml.model import load_model

        model = load_model(tracking.configure(settings.mlflow_tracking_uri), settings.model_uri)
        if model.reference is None:
            raise BadInputError(
                f"model {model.name} v{model.version} has no reference data: pass --reference."
            )
        reference, reference_name = model.reference, f"the reference of {model.name} v{model.version}"
    result = evaluate_drift(
        reference,
        current,
        params,
        reference_name=reference_name,
        current_name=f"current file {current_path}",
    )
    output_path.parent.mkdir(parents=True, exist_ok=True)
    if out_kind == ".html":
        _write_atomic(output_path, result.snapshot.get_html_str(as_iframe=False).encode())
    else:
        document = result.to_dict()
        document.update({"current": str(current_path), "reference": str(reference_path or reference_name)})
        _write_atomic(output_path, orjson.dumps(document, option=orjson.OPT_INDENT_2))
    return result
