"""One drift window's evaluation as plain, picklable values: evaluate, save the reports, file the
snapshot. The stream worker runs :func:`run_window` in its drift process; nothing here starts one."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from ml.drift import Evaluator, FeatureDrift, evaluate_drift, import_evidently
from ml.drift_reports import DriftWorkspace, drift_message, report_stem, save_report, window_labels
from ml.params import DriftParams
from ml.schema import FEATURES

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WindowTask:
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
class WindowOutcome:
    message: dict[str, Any]
    rows: int
    drifted_share: float
    dataset_drift: bool
    features: dict[str, FeatureDrift]
    drifted: list[str]
    report: str
    #: CPU seconds this evaluation took (its thread's, so right in the drift process and in the
    #: monitor's thread alike): what the monitor's CPU budget charges
    cpu_s: float = 0.0


#: the clock ``cpu_s`` is read from (a test substitutes its own)
cpu_clock = time.thread_time


def run_window(
    task: WindowTask, evaluate: Evaluator | None = None, workspace: DriftWorkspace | None = None
) -> WindowOutcome:
    """Evaluate one window, save its reports and file its snapshot. Runs in the drift process
    (default) or in the monitor's thread (injected evaluators)."""
    began = cpu_clock()
    start = datetime.fromtimestamp(task.started_at_s, UTC)
    end = datetime.fromtimestamp(task.ended_at_s, UTC)
    current = pd.DataFrame(task.rows, columns=list(FEATURES))
    metadata, tags = window_labels(report_stem(start, task.index), start, end, task.model_version, "stream")
    if evaluate is None:
        result = evaluate_drift(task.reference, current, task.params, metadata=metadata, tags=tags)
    else:  # an injected evaluator (tests) takes the three positional arguments only
        result = evaluate(task.reference, current, task.params)
    html, _ = save_report(
        result,
        task.reports_dir,
        window_start=start,
        window_end=end,
        keep=task.keep,
        index=task.index,
        model_version=task.model_version,
    )
    if workspace is None:  # in the drift process: opened per window, nothing cached in the module
        workspace = DriftWorkspace(task.workspace_dir, keep=task.keep)
    workspace.add(result, name=html.stem)
    message = drift_message(
        result, window_start=start, window_end=end, model_version=task.model_version, report=html
    )
    return WindowOutcome(
        message=message,
        rows=result.rows,
        drifted_share=result.drifted_share,
        dataset_drift=result.dataset_drift,
        features=dict(result.features),
        drifted=list(result.drifted_features),
        report=str(html),
        cpu_s=max(cpu_clock() - began, 0.0),
    )


def warm_up() -> float:
    """Import Evidently; the CPU seconds this process has used so far (spawn and imports)."""
    import_evidently()
    return time.process_time()


def lower_priority() -> None:
    # Scoring comes first: on a busy node the drift process yields the CPU, falls behind, and
    # the monitor skips (and counts) windows instead of slowing the stream.
    with contextlib.suppress(OSError, AttributeError):
        os.nice(10)
