"""Evidently classification reports of live performance windows (``iris.performance`` messages).

A window message holds, per model version, the confusion matrix of its labelled predictions
(:class:`ml.feedback.LiveWindow`). Every label-based classification metric (accuracy, precision,
recall, F1 per label and macro, the confusion matrix) is a function of that matrix, so the report
is built from the (true, predicted) pairs the matrix counts: the same numbers Evidently would give
on the rows themselves, without keeping the rows. One report per model version of the window:
``<stem>.html`` and ``<stem>.json`` under ``reports/performance/`` (beside ``reports/drift/``),
and a snapshot in the Evidently workspace's "iris-scorer live performance" project
(``evidently ui --workspace reports/workspace``).

The worker runs :func:`save_window_reports` in a child process of its own (it imports Evidently);
this module starts nothing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from ml.drift import import_evidently
from ml.drift_reports import DriftWorkspace, prune_reports, write_atomic

PROJECT = "iris-scorer live performance"
REPORT_NAME = re.compile(r"^(?P<stem>performance-[0-9T]+-\w+-v\w+)\.(?:html|json)$")


def pairs(matrix: Sequence[Sequence[int]], labels: Sequence[str]) -> tuple[list[str], list[str]]:
    """The (true, predicted) label pairs a confusion matrix counts, as two columns."""
    truth: list[str] = []
    predicted: list[str] = []
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            truth += [labels[i]] * int(count)
            predicted += [labels[j]] * int(count)
    return truth, predicted


def classification_snapshot(
    matrix: Sequence[Sequence[int]], labels: Sequence[str], *, metadata: dict[str, str], tags: list[str]
) -> Any:
    """Evidently's ``ClassificationPreset`` on the pairs of ``matrix``."""
    import pandas as pd

    ev = import_evidently()
    truth, predicted = pairs(matrix, labels)
    frame = pd.DataFrame({"target": truth, "prediction": predicted})
    definition = ev.DataDefinition(
        categorical_columns=["target", "prediction"],
        classification=[ev.MulticlassClassification(target="target", prediction_labels="prediction")],
    )
    report = ev.Report([ev.presets.ClassificationPreset()])
    return report.run(
        current_data=ev.Dataset.from_pandas(frame, data_definition=definition), metadata=metadata, tags=tags
    )


def _stem(window: dict[str, Any], alias: str, version: str) -> str:
    start = re.sub(r"[^0-9T]", "", str(window.get("window_start", "")))[:15] or "window"
    return f"performance-{start}-{alias}-v{version}"


def save_window_reports(
    window: dict[str, Any], directory: Path, keep: int, workspace_dir: Path | None
) -> list[str]:
    """Write one HTML/JSON pair per model of ``window`` (and its workspace snapshot); the HTML paths."""
    directory.mkdir(parents=True, exist_ok=True)
    workspace = DriftWorkspace(workspace_dir, PROJECT, keep=keep, dashboard=None) if workspace_dir else None
    written: list[str] = []
    labels = window["labels"]
    for model in window["models"]:
        alias, version = str(model["alias"]), str(model["model_version"])
        metadata = {"alias": alias, "model_version": version, "window_start": str(window.get("window_start"))}
        snapshot = classification_snapshot(
            model["confusion"], labels, metadata=metadata, tags=[alias, f"v{version}"]
        )
        stem = _stem(window, alias, version)
        html, json_path = directory / f"{stem}.html", directory / f"{stem}.json"
        write_atomic(html, snapshot.get_html_str(as_iframe=False).encode())
        document = {
            **model,
            "window_start": window.get("window_start"),
            "window_end": window.get("window_end"),
        }
        document["evidently"] = snapshot.dict()
        write_atomic(
            json_path, orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
        )
        if workspace is not None:
            workspace.add_snapshot(snapshot, name=f"{alias} v{version} {window.get('window_start')}")
        written.append(str(html))
    prune_reports(directory, keep * 2, REPORT_NAME)  # two models per window in shadow mode
    return written
