"""Saving drift results: a window's HTML and JSON reports (sortable names, retention), the
``iris.drift`` message, and snapshots filed in an Evidently workspace (``evidently ui``)."""

from __future__ import annotations

import contextlib
import logging
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from ml.drift import DriftResult, import_evidently
from ml.logs import log_event

logger = logging.getLogger(__name__)

WORKSPACE_PROJECT = "iris-scorer drift"
REPORT_NAME = re.compile(r"^(?P<stem>\d{8}T\d{6}Z-w\d{6,}(?:-\d+)?)\.(?:html|json)$")


def iso_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def report_stem(window_start: datetime, index: int) -> str:
    """Sortable: the window's start (UTC, to the second), then its sequence number."""
    return f"{window_start.astimezone(UTC):%Y%m%dT%H%M%SZ}-w{index:06d}"


def window_labels(
    window_id: str, start: datetime, end: datetime, model_version: str | None, source: str
) -> tuple[dict[str, str], list[str]]:
    """A window snapshot's metadata and tags: what the workspace lists and filters by."""
    version = model_version or "unknown"
    metadata = {
        "window_id": window_id,
        "window_start": iso_utc(start),
        "window_end": iso_utc(end),
        "model_version": version,
        "source": source,
    }
    return metadata, [source, f"model-v{version}"]


def _with_header(
    html: str, *, window_id: str, start: datetime, end: datetime, model_version: str | None, source: str
) -> str:
    """The report page, naming its window, time range, model version and source at the top."""
    header = (
        '<header id="iris-window" style="font-family:sans-serif;padding:12px 16px;border-bottom:1px solid #ddd">'
        f'<h1 style="font-size:20px;margin:0">Drift of window {window_id}</h1>'
        f'<p style="margin:4px 0 0">{iso_utc(start)} to {iso_utc(end)} · model version '
        f"{model_version or 'unknown'} · source {source}</p></header>"
    )
    at = html.find("<body")
    if at < 0:
        return header + html
    close = html.find(">", at) + 1
    return html[:close] + header + html[close:]


def write_atomic(path: Path, data: bytes) -> None:
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
    source: str = "stream",
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
    page = (
        result.snapshot.get_html_str(as_iframe=False) if result.snapshot is not None else _plain_html(result)
    )
    page = _with_header(
        page, window_id=stem, start=window_start, end=window_end, model_version=model_version, source=source
    )
    write_atomic(html_path, page.encode())
    document = drift_message(
        result,
        window_start=window_start,
        window_end=window_end,
        model_version=model_version,
        report=html_path,
    )
    document.update({k: v for k, v in result.to_dict().items() if k not in document})
    write_atomic(json_path, orjson.dumps(document, option=orjson.OPT_INDENT_2))
    prune_reports(directory, keep)
    return html_path, json_path


def prune_reports(directory: Path, keep: int, pattern: re.Pattern[str] = REPORT_NAME) -> list[Path]:
    """Keep the newest ``keep`` report pairs (by name, which sorts by time); return what was deleted."""
    stems = sorted({m["stem"] for p in directory.iterdir() if (m := pattern.match(p.name))})
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

    def __init__(
        self,
        path: Path,
        project_name: str = WORKSPACE_PROJECT,
        *,
        keep: int | None = None,
        dashboard: Any = "drift",
    ) -> None:
        self.path = path
        self.project_name = project_name
        self.keep = keep
        self.dashboard = dashboard  # "drift": drift_dashboard(); None: Evidently's default view
        self._workspace: Any = None
        self._project_id: Any = None

    def add(self, result: DriftResult, name: str) -> str | None:
        """File ``result.snapshot`` under the project and drop the oldest snapshots beyond ``keep``;
        return the new snapshot id (or None)."""
        if result.snapshot is None:
            return None
        return self.add_snapshot(result.snapshot, name)

    def add_snapshot(self, snapshot: Any, name: str) -> str | None:
        """File one Evidently snapshot under the project (see :meth:`add`)."""
        try:
            if self._workspace is None:
                import_evidently()
                from evidently.ui.workspace import Workspace

                self.path.mkdir(parents=True, exist_ok=True)
                workspace = Workspace(str(self.path))
                found = workspace.search_project(self.project_name)
                project = found[0] if found else workspace.create_project(self.project_name)
                if self.dashboard == "drift" and not workspace.get_dashboard(project.id).panels:
                    workspace.save_dashboard(project.id, drift_dashboard())
                self._workspace, self._project_id = workspace, project.id
            ref = self._workspace.add_run(self._project_id, snapshot, name=name)
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


def drift_dashboard() -> Any:
    """The project's dashboard: drift share over time, each feature's p-value, rows per window
    (stream and backfill snapshots alike; their tags and metadata tell them apart)."""
    from evidently.sdk.models import DashboardModel, PanelMetric
    from evidently.sdk.panels import bar_plot_panel, line_plot_panel

    from ml.schema import FEATURES

    return DashboardModel(
        tabs=[],
        panels=[
            line_plot_panel(
                "Drift share over time",
                [
                    PanelMetric(
                        metric="DriftedColumnsCount", metric_labels={"value_type": "share"}, legend="share"
                    )
                ],
                description="Share of the four features whose drift test failed, per window.",
            ),
            line_plot_panel(
                "Per-feature drift p-value",
                [PanelMetric(metric="ValueDrift", metric_labels={"column": f}, legend=f) for f in FEATURES],
                description="The stattest's p-value per feature (lower is more drift).",
            ),
            bar_plot_panel(
                "Rows per window",
                [PanelMetric(metric="RowCount", legend="rows")],
                description="Rows evaluated in each window.",
            ),
        ],
    )
