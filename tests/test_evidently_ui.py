"""Evidently's UI over the drift workspace, as the README tells users to run it (issue 16, points
11-15): ``evidently ui --workspace <dir>`` starts (it crashed on import under pandas 3), the
project ships a dashboard (drift share over time, per-feature p-values, rows per window), each
snapshot carries its window's tags and metadata, headless Chromium renders the project page with
plotted panels, and each standalone HTML report names its window, time range and model version.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from test_rest_docs import headless
from test_rest_serve import free_port

from ml.drift import evaluate_drift
from ml.drift_reports import DriftWorkspace, report_stem, save_report, window_labels
from ml.params import DriftParams
from ml.schema import FEATURES

pytestmark = [pytest.mark.slow, pytest.mark.integration]

START = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
PANELS = ("Drift share over time", "Per-feature drift p-value", "Rows per window")


def _windows(workspace_dir: Path, reports_dir: Path) -> list[Path]:
    """Four stream windows (the last two shifted: drifting) and one backfill window."""
    rng = np.random.default_rng(7)
    reference = pd.DataFrame(rng.normal(3.0, 0.5, (300, 4)), columns=list(FEATURES))
    workspace, pages = DriftWorkspace(workspace_dir), []
    for index, (shift, source, rows) in enumerate(
        [
            (0.0, "stream", 200),
            (0.0, "stream", 250),
            (1.0, "stream", 300),
            (1.5, "stream", 220),
            (0.0, "backfill", 180),
        ]
    ):
        start, end = START + timedelta(minutes=index), START + timedelta(minutes=index + 1)
        current = pd.DataFrame(rng.normal(3.0 + shift, 0.5, (rows, 4)), columns=list(FEATURES))
        metadata, tags = window_labels(report_stem(start, index), start, end, "3", source)
        result = evaluate_drift(
            reference, current, DriftParams(), timestamp=end, metadata=metadata, tags=tags
        )
        html, _ = save_report(
            result,
            reports_dir,
            window_start=start,
            window_end=end,
            keep=50,
            index=index,
            model_version="3",
            source=source,
        )
        assert workspace.add(result, name=html.stem) is not None
        pages.append(html)
    return pages


def _performance_window(workspace_dir: Path, reports_dir: Path) -> None:
    """One live performance window (champion and challenger on the same labelled ids)."""
    from ml.feedback import LiveWindow
    from ml.performance_report import save_window_reports

    rng = np.random.default_rng(2)
    window, message = LiveWindow(200), None
    for _ in range(200):
        truth = str(rng.choice(["setosa", "versicolor", "virginica"]))
        guess = truth if rng.random() < 0.9 else "versicolor"
        message = window.add(truth, {("champion", "3"): guess, ("challenger", "4"): truth})
    assert message is not None
    assert len(save_window_reports(message, reports_dir, 50, workspace_dir)) == 2


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("evidently")
    pages = _windows(root / "workspace", root / "reports")
    _performance_window(root / "workspace", root / "reports" / "performance")
    port = free_port()
    log = (root / "ui.log").open("w")
    evidently = str(Path(sys.executable).parent / "evidently")
    proc = subprocess.Popen(
        [evidently, "ui", "--workspace", str(root / "workspace"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "DO_NOT_TRACK": "1"},
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, (root / "ui.log").read_text()[-3000:]
        try:
            if httpx.get(f"{base}/api/projects", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, (root / "ui.log").read_text()[-3000:]
        time.sleep(0.3)
    try:
        yield {"base": base, "pages": pages, "root": root}
    finally:
        proc.terminate()
        proc.wait(15)


def _project(base: str) -> dict[str, Any]:
    (project,) = [
        p for p in httpx.get(f"{base}/api/projects", timeout=10).json() if p["name"] == "iris-scorer drift"
    ]
    return dict(project)


def test_the_readme_command_starts_and_lists_the_project_with_its_dashboard(ui: dict[str, Any]) -> None:
    project = _project(ui["base"])
    dashboard = httpx.get(f"{ui['base']}/api/v2/dashboards/{project['id']}", timeout=10).json()
    assert [p["title"] for p in dashboard["panels"]] == list(PANELS)


def test_every_snapshot_carries_its_windows_tags_and_metadata(ui: dict[str, Any]) -> None:
    project = _project(ui["base"])
    snapshots = httpx.get(f"{ui['base']}/api/projects/{project['id']}/snapshots", timeout=10).json()
    assert len(snapshots) == 5
    for snapshot in snapshots:
        meta = snapshot["metadata"]
        assert set(meta) >= {"window_id", "window_start", "window_end", "model_version", "source"}, meta
        assert (
            meta["model_version"] == "3"
            and meta["source"] in snapshot["tags"]
            and "model-v3" in snapshot["tags"]
        )
    assert sorted(s["metadata"]["source"] for s in snapshots) == ["backfill"] + ["stream"] * 4


def test_headless_chromium_renders_the_project_page_with_plotted_panels(
    ui: dict[str, Any], tmp_path: Path
) -> None:
    project = _project(ui["base"])
    url = f"{ui['base']}/projects/{project['id']}"
    dom = headless(url, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    for title in PANELS:
        assert title in dom.stdout, title
    html = dom.stdout
    assert html.count("<svg") >= len(PANELS), "each panel is a drawn chart"
    assert html.count("MuiBarElement-root") == 5, "rows per window: one bar per snapshot"
    assert "MuiLineElement" in html and all(f in html for f in FEATURES), (
        "line series and a legend per feature"
    )
    assert "No data" not in html
    shot = headless(url, tmp_path, f"--screenshot={ui['root'] / 'project.png'}")
    assert shot.returncode == 0 and (ui["root"] / "project.png").stat().st_size > 20_000


def test_each_html_report_names_its_window_range_and_model_version(ui: dict[str, Any]) -> None:
    for page in ui["pages"]:
        text = page.read_text()
        assert f"Drift of window {page.stem}" in text
        assert "model version 3" in text and "2026-12-01T10:0" in text
        assert text.index('id="iris-window"') < text.index("</body>")


def test_live_performance_reports_are_a_project_of_their_own(ui: dict[str, Any]) -> None:
    (project,) = [
        p
        for p in httpx.get(f"{ui['base']}/api/projects", timeout=10).json()
        if p["name"] == "iris-scorer live performance"
    ]
    snapshots = httpx.get(f"{ui['base']}/api/projects/{project['id']}/snapshots", timeout=10).json()
    assert len(snapshots) == 2
    assert {s["metadata"]["alias"] for s in snapshots} == {"champion", "challenger"}
