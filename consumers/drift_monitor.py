"""The stream worker's drift monitor: windows of scored rows (:mod:`ml.windows`), evaluated off
the hot path in one child process (:func:`ml.drift_job.run_window`), results drained as
``iris.drift`` messages."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from consumers.drift_process import CHILD_EXIT_S, DriftProcess
from ml.drift import Evaluator, evaluate_drift, import_evidently, load_drift_params
from ml.drift_job import WindowOutcome, WindowTask, run_window
from ml.drift_reports import DriftWorkspace
from ml.logs import log_event
from ml.metrics import Metrics
from ml.model import LoadedModel
from ml.params import DriftParams
from ml.schema import FEATURES
from ml.settings import Settings
from ml.windows import ClosedWindow, WindowBuffer, WindowConfig

logger = logging.getLogger(__name__)

RESULTS_KEPT = 1000


@dataclass(frozen=True)
class _Job:
    window: ClosedWindow
    rows: npt.NDArray[np.float64]
    model: LoadedModel


#: a window skipped by design is not a warning (at 100k msg/s the budget skips hundreds a second)
_SKIP_LEVELS = {"too_few_rows": logging.INFO, "budget": logging.DEBUG}


class DriftMonitor:
    """Drift windows over the scored stream, evaluated off the hot path.

    ``observe`` appends rows under a lock and hands closed windows to a bounded queue without
    waiting; a full queue skips the window (``iris_drift_windows_skipped{reason="backlog"}``).
    One background thread hands each window to one child process (``ProcessPoolExecutor``,
    one worker, started at ``nice +10``, :mod:`consumers.drift_process`) and waits for it, saves nothing itself and updates the
    gauges; the stream worker publishes what :meth:`drain_results` returns to ``iris.drift``.

    The child is replaced when it dies (OOM kill: the window is skipped, ``reason="evaluator_died"``)
    or when a window takes longer than ``IRIS_DRIFT_EVAL_TIMEOUT_S`` (killed, ``reason="timeout"``).
    ``window_job`` is what the child runs per window (a picklable module-level function; tests
    inject light ones). An injected ``evaluator`` runs in the thread instead (no child).
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
        window_job: Callable[[WindowTask], WindowOutcome] = run_window,
        budget_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        metrics.enable_drift()  # only a process that computes drift exports its series
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
        self._child: DriftProcess | None = None
        self._window_job = window_job
        # The CPU budget: an evaluation that took t CPU seconds is followed by t * (1/share - 1)
        # seconds in which closed windows are skipped (reason="budget"), so evaluations take at
        # most IRIS_DRIFT_CPU_SHARE of a core whatever the message rate (one window every few ms
        # at 100k msg/s is not a reason to spend a core on Evidently)
        self._share = settings.drift_cpu_share
        self._budget_clock = budget_clock
        self._next_eval_at = float("-inf")

    # -- called by the stream worker

    def start(self) -> None:
        if self._thread is not None:
            return
        if self._use_process:
            self._child = DriftProcess(
                self._window_job, self.settings.drift_eval_timeout_s, self._skip, self._stopping
            )
        elif self._evaluate is evaluate_drift:
            import_evidently()  # import here, in the caller's thread, not in the middle of a window
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="drift-monitor", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Finish queued windows within ``timeout`` seconds, then stop the thread and end the
        drift process; returns within about ``timeout`` + 2 s. A window still being evaluated then
        is dropped (``reason="stopped"``) and the child killed, so the process exit never waits
        for it."""
        thread = self._thread
        if thread is None:
            return
        deadline = time.monotonic() + timeout
        self._stopping.set()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        thread.join(timeout)
        if thread.is_alive():
            log_event(logger, "drift_monitor_stop_timeout", logging.WARNING, timeout_s=timeout)
        child, self._child = self._child, None
        if child is not None:
            child.close(max(deadline - time.monotonic(), CHILD_EXIT_S))
        thread.join(CHILD_EXIT_S)  # a window cut short by the kill: the thread notices and returns
        self._thread = None

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
            _SKIP_LEVELS.get(reason, logging.WARNING),
            reason=reason,
            window=window.index,
            rows=window.rows,
            model_version=window.model_version,
        )

    def _paying_back(self) -> bool:
        """Whether the last evaluation's CPU is still being paid back (windows are skipped)."""
        return self._budget_clock() < self._next_eval_at

    def _dispatch(self, window: ClosedWindow, rows: npt.NDArray[np.float64], model: LoadedModel) -> None:
        if window.skip_reason is not None:
            self._skip(window, window.skip_reason)
        elif model.reference is None:
            self._skip(window, "no_reference")
        elif self._paying_back():
            self._skip(window, "budget")
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
            if self._paying_back():  # queued while the last evaluation ran: its budget applies too
                self._skip(job.window, "budget")
                continue
            cost: float | None = None
            try:
                cost = self._process(job)
            except Exception:
                self.metrics.drift_windows_skipped.labels(reason="error").inc()
                logger.exception("drift_window_failed", extra={"window": job.window.index})
            if cost is not None and self._share < 1.0:  # a killed or timed-out window is not charged
                self._next_eval_at = self._budget_clock() + cost * (1.0 / self._share - 1.0)

    def _process(self, job: _Job) -> float | None:
        """Evaluate one window: the CPU seconds it took, or None if it was not evaluated."""
        window, model = job.window, job.model
        assert model.reference is not None
        task = WindowTask(
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
        if self._use_process:
            child = self._child
            if child is None:  # stopped meanwhile
                self._skip(window, "stopped")
                return None
            child_outcome = child.evaluate(window, task)
            if child_outcome is None:
                return None
            outcome = child_outcome
        else:
            outcome = run_window(task, self._evaluate, self._workspace)
        self.metrics.drift_share.set(outcome.drifted_share)
        self.metrics.dataset_drift.set(1 if outcome.dataset_drift else 0)
        self.metrics.feature_drift_score.clear()  # one series per feature: the last window's test
        self.metrics.feature_drift_p_value.clear()
        for name, feature in outcome.features.items():
            self.metrics.feature_drift_score.labels(feature=name, stattest=feature.test).set(
                feature.drift_score
            )
            if feature.p_value is not None:
                self.metrics.feature_drift_p_value.labels(feature=name, stattest=feature.test).set(
                    feature.p_value
                )
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
        return outcome.cpu_s
