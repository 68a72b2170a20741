"""The stream worker's drift monitor: windows of scored rows (:mod:`ml.windows`), evaluated off
the hot path in one child process (:func:`ml.drift_job.run_window`), results drained as
``iris.drift`` messages."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import psutil

from ml.drift import Evaluator, evaluate_drift, import_evidently, load_drift_params
from ml.drift_job import WindowOutcome, WindowTask, lower_priority, run_window, warm_up
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
CHILD_EXIT_S = 1.0  # how long stop waits for the drift process to exit before killing it
PID_WAIT_S = 5.0  # how long a new drift process may take to say its pid (spawn + imports)


@dataclass(frozen=True)
class _Job:
    window: ClosedWindow
    rows: npt.NDArray[np.float64]
    model: LoadedModel


class DriftMonitor:
    """Drift windows over the scored stream, evaluated off the hot path.

    ``observe`` appends rows under a lock and hands closed windows to a bounded queue without
    waiting; a full queue skips the window (``iris_drift_windows_skipped{reason="backlog"}``).
    One background thread hands each window to one child process (``ProcessPoolExecutor``,
    one worker, started at ``nice +10``) and waits for it, saves nothing itself and updates the
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
        self._executor: ProcessPoolExecutor | None = None
        self._child_pid: Future[int] | None = None  # the executor's one worker process
        self._executor_lock = threading.Lock()  # the thread replaces the executor, stop takes it
        self._window_job = window_job

    # -- called by the stream worker

    def start(self) -> None:
        if self._thread is not None:
            return
        if self._use_process:
            self._new_executor()
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
        with self._executor_lock:
            executor, pid, self._executor, self._child_pid = self._executor, self._child_pid, None, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
            self._end_child(pid, max(deadline - time.monotonic(), CHILD_EXIT_S))
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

    def _new_executor(self) -> ProcessPoolExecutor:
        """A fresh one-worker drift process at a lower priority; its pid is asked first."""
        executor = ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("spawn"), initializer=lower_priority
        )
        pid = executor.submit(os.getpid)  # answered before any window: known even when one hangs
        if self._window_job is run_window:
            executor.submit(warm_up)  # import Evidently there now, not in the first window
        with self._executor_lock:
            if self._stopping.is_set() and self._executor is None and self._thread is not None:
                executor.shutdown(wait=False, cancel_futures=True)  # stop took the old one meanwhile
            else:
                self._executor, self._child_pid = executor, pid
        return executor

    def _replace_executor(self, broken: ProcessPoolExecutor, reason: str) -> None:
        """Kill what is left of ``broken``'s child and start another (unless stopping)."""
        with self._executor_lock:
            pid = self._child_pid if self._executor is broken else None
        broken.shutdown(wait=False, cancel_futures=True)
        self._end_child(pid, 0.0)
        if self._stopping.is_set():
            return
        log_event(logger, "drift_process_replaced", logging.WARNING, reason=reason)
        self._new_executor()

    def _child_alive(self) -> bool:
        """False when the drift process has answered its pid and is no longer running."""
        with self._executor_lock:
            pid = self._child_pid
        if pid is None or not pid.done() or pid.exception() is not None:
            return pid is None or not pid.done()  # not started yet: let the pool tell
        try:  # a zombie until the pool's own thread reaps it: multiprocessing's view lags
            return bool(psutil.Process(pid.result()).status() != psutil.STATUS_ZOMBIE)
        except psutil.NoSuchProcess:
            return False

    @staticmethod
    def _end_child(pid: Future[int] | None, grace_s: float) -> None:
        """Wait up to ``grace_s`` for the drift process to exit, then SIGKILL it and reap it."""
        if pid is None:
            return
        try:  # the first thing a new child does; a window that times out may follow it closely
            child_pid = pid.result(timeout=PID_WAIT_S)
        except Exception:  # died (or never started) before answering: nothing of ours to end
            return
        child = next((p for p in multiprocessing.active_children() if p.pid == child_pid), None)
        if child is None:
            return
        child.join(grace_s)
        if child.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(child_pid, signal.SIGKILL)
            child.join(CHILD_EXIT_S)

    def _evaluate_in_child(self, window: ClosedWindow, task: WindowTask) -> WindowOutcome | None:
        """The window's outcome from the drift process, or None when it was skipped (logged)."""
        for attempt in (1, 2):
            with self._executor_lock:
                executor = self._executor
            if executor is None:  # stopping
                self._skip(window, "stopped")
                return None
            if not self._child_alive():  # died while idle (the pool may not know yet): replace it
                self._replace_executor(executor, "evaluator_died")
                continue
            try:
                future = executor.submit(self._window_job, task)
            except BrokenProcessPool:  # died while idle: replace it, this window is not lost
                self._replace_executor(executor, "evaluator_died")
                if attempt == 2:
                    self._skip(window, "evaluator_died")
                continue
            except RuntimeError:  # shut down by stop meanwhile
                self._skip(window, "stopped")
                return None
            try:
                return future.result(timeout=self.settings.drift_eval_timeout_s)
            except BrokenProcessPool:
                reason = "stopped" if self._stopping.is_set() else "evaluator_died"
                self._replace_executor(executor, reason)
                self._skip(window, reason)
                return None
            except FutureTimeout:
                self._replace_executor(executor, "timeout")
                self._skip(window, "timeout")
                return None
        return None

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
            child_outcome = self._evaluate_in_child(window, task)
            if child_outcome is None:
                return
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
