"""`iris-scorer demo` end to end: broker, worker, REST, traffic with a shift, summary, clean stop."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_demo_runs_the_whole_flow_and_stops_everything(registry, tmp_path: Path) -> None:
    env = dict(os.environ)
    env.update({"MLFLOW_TRACKING_URI": registry.tracking_uri, "IRIS_REPORTS_DIR": str(tmp_path / "reports")})
    result = subprocess.run(
        [sys.executable, "-m", "iris_scorer.cli", "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "predictions: 3000/3000 ids scored" in out
    assert "dead-letter queue: 20/20 malformed messages" in out
    drift_lines = [line for line in out.splitlines() if line.strip().startswith(("ok ", "DRIFT"))]
    assert len(drift_lines) >= 5
    # 3,000 scored rows make six 500-row windows: each is either evaluated or counted as skipped
    counts = re.search(r"drift windows: (\d+) evaluated, (\d+) skipped", out)
    assert counts is not None, out
    assert int(counts[1]) == len(drift_lines)
    assert int(counts[1]) + int(counts[2]) >= 6
    # In-distribution traffic comes first and is not flagged; the shifted part is.
    assert drift_lines[0].strip().startswith("ok")
    assert drift_lines[-1].strip().startswith("DRIFT")
    reports = list((tmp_path / "reports" / "drift").glob("*.html"))
    assert len(reports) == len(drift_lines)
    assert "all demo processes stopped" in out
    # Nothing the demo started is left running (its children carry our reports folder in their env).
    leftovers = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("IRIS_REPORTS_DIR") == str(tmp_path / "reports"):
                leftovers.append(proc.cmdline())
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    assert leftovers == []
