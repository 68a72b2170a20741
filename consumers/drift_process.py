"""The one child process that evaluates the stream's drift windows (:class:`DriftProcess`).

Evidently is CPU-heavy Python: in a thread of the worker it would take the GIL from the scoring
loop, so windows go to a ``ProcessPoolExecutor`` of one ``spawn`` worker at ``nice +10``. The
child is replaced when it dies (an OOM kill: the window is skipped, ``reason="evaluator_died"``)
or when a window takes longer than ``IRIS_DRIFT_EVAL_TIMEOUT_S`` (killed, ``reason="timeout"``).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool

import psutil

from ml.drift_job import WindowOutcome, WindowTask, lower_priority, run_window, warm_up
from ml.logs import log_event
from ml.windows import ClosedWindow

logger = logging.getLogger("consumers.drift_monitor")

CHILD_EXIT_S = 1.0  # how long stop waits for the drift process to exit before killing it
PID_WAIT_S = 5.0  # how long a new drift process may take to say its pid (spawn + imports)


def end_child(pid: Future[int] | None, grace_s: float) -> None:
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


def _warm_logger(started: float) -> Callable[[Future[float]], None]:
    def done(future: Future[float]) -> None:
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            log_event(logger, "drift_process_warm_up_failed", logging.WARNING, error=repr(error))
            return
        log_event(
            logger,
            "drift_process_ready",
            warm_up_s=round(time.monotonic() - started, 3),
            child_cpu_s=round(future.result(), 3),
        )

    return done


class DriftProcess:
    """Runs ``window_job`` on one window at a time in the child; ``skip(window, reason)`` records
    a window that gets no outcome. ``stopping`` (the monitor's) stops replacements; :meth:`close`
    ends the child."""

    def __init__(
        self,
        window_job: Callable[[WindowTask], WindowOutcome],
        timeout_s: float,
        skip: Callable[[ClosedWindow, str], None],
        stopping: threading.Event,
    ) -> None:
        self._window_job = window_job
        self._timeout_s = timeout_s
        self._skip = skip
        self._stopping = stopping
        self._executor: ProcessPoolExecutor | None = None
        self._child_pid: Future[int] | None = None  # the executor's one worker process
        self._lock = threading.Lock()  # the monitor's thread replaces the executor, close takes it
        self._closed = False
        self._new_executor()

    def close(self, grace_s: float) -> None:
        """Shut the pool down and end the child (killed after ``grace_s``); a window being
        evaluated then is dropped, and :meth:`evaluate` skips it as ``stopped``."""
        with self._lock:
            executor, pid, self._executor, self._child_pid = self._executor, self._child_pid, None, None
            self._closed = True
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
            end_child(pid, grace_s)

    def _new_executor(self) -> ProcessPoolExecutor:
        """A fresh one-worker drift process at a lower priority; its pid is asked first."""
        executor = ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("spawn"), initializer=lower_priority
        )
        pid = executor.submit(os.getpid)  # answered before any window: known even when one hangs
        if self._window_job is run_window:
            # import Evidently there now, not in the first window; say when it is done (seconds
            # and the child's CPU: a start-up cost, on the other core, that the first windows wait on)
            executor.submit(warm_up).add_done_callback(_warm_logger(time.monotonic()))
        with self._lock:
            if self._closed:
                executor.shutdown(wait=False, cancel_futures=True)  # close took the old one meanwhile
            else:
                self._executor, self._child_pid = executor, pid
        return executor

    def _replace_executor(self, broken: ProcessPoolExecutor, reason: str) -> None:
        """Kill what is left of ``broken``'s child and start another (unless stopping)."""
        with self._lock:
            pid = self._child_pid if self._executor is broken else None
        broken.shutdown(wait=False, cancel_futures=True)
        end_child(pid, 0.0)
        if self._stopping.is_set():
            return
        log_event(logger, "drift_process_replaced", logging.WARNING, reason=reason)
        self._new_executor()

    def _child_alive(self) -> bool:
        """False when the drift process has answered its pid and is no longer running."""
        with self._lock:
            pid = self._child_pid
        if pid is None or not pid.done() or pid.exception() is not None:
            return pid is None or not pid.done()  # not started yet: let the pool tell
        try:  # a zombie until the pool's own thread reaps it: multiprocessing's view lags
            return bool(psutil.Process(pid.result()).status() != psutil.STATUS_ZOMBIE)
        except psutil.NoSuchProcess:
            return False

    def evaluate(self, window: ClosedWindow, task: WindowTask) -> WindowOutcome | None:
        """The window's outcome from the drift process, or None when it was skipped (logged)."""
        for attempt in (1, 2):
            with self._lock:
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
                return future.result(timeout=self._timeout_s)
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
