"""The DriftMonitor's evaluation process: a child that dies or hangs is replaced, the window it
held is skipped and counted, the next window is evaluated; the child runs at a lower priority;
``stop`` is bounded and ends the child. Light jobs (tests/drift_jobs.py): no Evidently here."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
import pytest
from drift_jobs import HANG, light_job

from consumers.drift_monitor import DriftMonitor
from ml.metrics import Metrics
from ml.model import LoadedModel, ModelRef
from ml.params import DriftParams
from ml.schema import FEATURES
from ml.settings import Settings

PARAMS = DriftParams(method="ks", threshold=0.05, drift_share=0.5)
WINDOW = 10


def model() -> LoadedModel:
    ref = ModelRef(name="iris-classifier", version="1", alias="champion", run_id=None)
    reference = pd.DataFrame(np.ones((20, 4)), columns=list(FEATURES))
    return LoadedModel(
        ref=ref, uri="models:/x@champion", estimator=None, classes=np.array([]), reference=reference
    )


def wait_for(condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


class Harness:
    def __init__(self, tmp_path: Path, **settings: Any) -> None:
        values: dict[str, Any] = {
            "reports_dir": tmp_path / "reports",
            "drift_window_size": WINDOW,
            "drift_min_rows": 5,
            "drift_queue_size": 4,
            # every window evaluated: these tests are about the child; the CPU budget that skips
            # windows after an evaluation has its own tests (tests/test_drift.py)
            "drift_cpu_share": 1.0,
        }
        values.update(settings)
        self.metrics = Metrics()
        self.monitor = DriftMonitor(
            Settings.model_validate(values), self.metrics, PARAMS, window_job=light_job
        )
        self.drift_dir = tmp_path / "reports" / "drift"
        self.model = model()
        self.windows = 0

    def window(self, value: float) -> int:
        """Close one window whose rows are all ``value``; return its index."""
        index = self.windows
        self.monitor.observe(np.full((WINDOW, 4), value), self.model, now=1000.0 + index)
        self.windows += 1
        return index

    def child_pid(self, index: int) -> int:
        path = self.drift_dir / f"started-{index}.pid"
        wait_for(lambda: path.is_file() and path.read_text(), what=f"window {index} to start in the child")
        return int(path.read_text())

    def skipped(self, reason: str) -> float:
        return (
            self.metrics.registry.get_sample_value("iris_drift_windows_skipped_total", {"reason": reason})
            or 0
        )

    def evaluated(self) -> float:
        return self.metrics.registry.get_sample_value("iris_drift_windows_total") or 0


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(**settings: Any) -> Harness:
        made.append(Harness(tmp_path, **settings))
        made[-1].monitor.start()
        return made[-1]

    yield make
    for h in made:
        h.monitor.stop(timeout=5.0)


def test_a_killed_child_is_replaced_and_the_next_window_is_evaluated(harness: Callable[..., Harness]) -> None:
    h = harness()
    first = h.window(HANG)
    pid = h.child_pid(first)
    assert psutil.Process(pid).nice() >= 10  # the child yields the CPU to scoring
    assert pid != os.getpid()
    os.kill(pid, signal.SIGKILL)  # what the OOM killer does
    wait_for(lambda: h.skipped("evaluator_died") == 1, what="the window to be skipped as evaluator_died")
    second = h.window(1.0)
    results = wait_for(h.monitor.drain_results, what="the next window's result")
    assert [r["rows"] for r in results] == [WINDOW]
    new_pid = h.child_pid(second)
    assert new_pid != pid and psutil.Process(new_pid).nice() >= 10
    assert h.evaluated() == 1 and h.skipped("error") == 0


def test_a_child_that_died_while_idle_is_replaced_without_losing_a_window(
    harness: Callable[..., Harness],
) -> None:
    h = harness()
    pid = h.child_pid(h.window(1.0))
    wait_for(lambda: h.evaluated() == 1, what="the first window")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: gone(pid), what="the child to die")
    h.window(1.0)
    wait_for(lambda: h.evaluated() == 2, what="the window after the idle death")
    assert h.skipped("evaluator_died") == 0 and h.skipped("error") == 0


def test_a_hanging_window_times_out_the_child_is_killed_and_replaced(harness: Callable[..., Harness]) -> None:
    h = harness(drift_eval_timeout_s=2.0)
    h.window(1.0)  # the child is up (spawned, imports done): the timeout is the window's own
    wait_for(lambda: h.evaluated() == 1, what="the first window")
    pid = h.child_pid(h.window(HANG))
    wait_for(lambda: h.skipped("timeout") == 1, timeout=15, what="the window to time out")
    wait_for(lambda: gone(pid), timeout=10, what="the hung child to be killed")
    h.window(1.0)
    wait_for(lambda: h.evaluated() == 2, what="the next window")
    assert [r["rows"] for r in h.monitor.drain_results()] == [WINDOW, WINDOW]
    assert h.skipped("error") == 0


def test_stop_is_bounded_and_ends_the_child(harness: Callable[..., Harness]) -> None:
    h = harness()
    pid = h.child_pid(h.window(HANG))
    began = time.monotonic()
    h.monitor.stop(timeout=1.0)
    assert time.monotonic() - began < 4.0
    wait_for(lambda: gone(pid), timeout=5, what="the child to end with stop")


def test_the_child_says_when_evidently_is_imported_and_what_it_cost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The Evidently import in the child is a start-up cost of seconds of CPU on the other core;
    ``drift_process_ready`` says when it is over, so an operator (and ``make bench``, which
    measures drift's steady-state CPU from then on) can tell it from the per-window cost."""
    settings = Settings.model_validate({"reports_dir": tmp_path / "reports", "drift_window_size": WINDOW})
    monitor = DriftMonitor(settings, Metrics(), PARAMS)  # the real window job: the child imports Evidently
    caplog.set_level(logging.INFO, logger="consumers.drift_monitor")
    monitor.start()
    try:
        ready = wait_for(
            lambda: [r for r in caplog.records if "drift_process_ready" in r.getMessage()],
            timeout=120,
            what="drift_process_ready",
        )
    finally:
        monitor.stop(timeout=5.0)
    record = ready[0]
    assert record.child_cpu_s > 0.1, vars(record)  # spawn + imports, measured in the child
    assert record.warm_up_s >= record.child_cpu_s * 0.5  # wall time since the spawn
