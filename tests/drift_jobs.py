"""Light, picklable window jobs for the DriftMonitor's child process (tests/test_drift_process.py).

They run :func:`ml.drift_job.run_window` with a fake evaluator (no Evidently), after writing the
child's pid to ``<reports_dir>/started-<window>.pid``. A window whose first value is ``HANG``
sleeps instead of returning, so the test can kill the child or let the monitor time out.
Kept apart from the test module so that the child imports nothing but this and ``ml``.
"""

from __future__ import annotations

import os
import time

import pandas as pd

from ml.drift import DriftResult, FeatureDrift
from ml.drift_job import WindowOutcome, WindowTask, run_window
from ml.params import DriftParams
from ml.schema import FEATURES

HANG = 9.0


def fake_evaluate(reference: pd.DataFrame, current: pd.DataFrame, params: DriftParams) -> DriftResult:
    features = {f: FeatureDrift(params.method, 0.5, False) for f in FEATURES}
    return DriftResult(features, 0.0, False, len(current), len(reference), params)


def light_job(task: WindowTask) -> WindowOutcome:
    task.reports_dir.mkdir(parents=True, exist_ok=True)
    (task.reports_dir / f"started-{task.index}.pid").write_text(str(os.getpid()))
    if float(task.rows[0, 0]) == HANG:
        time.sleep(120)
    return run_window(task, fake_evaluate)
