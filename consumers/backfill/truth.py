"""Backfill against ground truth: a ``label`` column in the input (CSV, Parquet) or ``--labels PATH``
(a CSV, Parquet or JSON Lines file of ``id,label``, joined by id). Each chunk adds its confusion
matrices (true by predicted, in :data:`ml.schema.LABELS` order) for the model and, with
``--compare-with``/``--challenger``, the second model; the run ends with a performance report per
model (``<stem>.performance.json`` beside the output, and in the summary): the numbers of
:mod:`ml.feedback`, as live performance computes them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ml.errors import BadInputError
from ml.feedback import summary
from ml.predict import Scores
from ml.schema import LABELS

TRUTH_COLUMN = "label"


def load_labels(path: Path) -> dict[str, str]:
    """``id`` → ``label`` from a labels file; a sentence naming the file and column when it cannot."""
    if not path.is_file():
        raise BadInputError(f"--labels {path}: no such file.")
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path, columns=["id", TRUTH_COLUMN])
        elif path.suffix in (".jsonl", ".ndjson", ".json"):
            import pyarrow.json as pj

            table = pj.read_json(path)
        else:
            import pyarrow.csv as pcsv

            types = {"id": pa.string(), TRUTH_COLUMN: pa.string()}
            table = pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(column_types=types))
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise BadInputError(f"--labels {path} could not be read: {exc}.") from None
    for name in ("id", TRUTH_COLUMN):
        if name not in table.column_names:
            raise BadInputError(f"--labels {path} has no column '{name}' (expected: id, label).")
    ids = table["id"].cast(pa.string()).to_pylist()
    labels = table[TRUTH_COLUMN].cast(pa.string()).to_pylist()
    unknown = sorted({label for label in labels if label is not None and label not in LABELS})
    if unknown:
        raise BadInputError(f"--labels {path}: label {unknown[0]!r} is not one of {', '.join(LABELS)}.")
    return {i: label for i, label in zip(ids, labels, strict=True) if i is not None and label is not None}


def chunk_truth(
    table: pa.Table, good_ids: Any, mask: pa.Array | None, lookup: dict[str, str] | None
) -> list[str | None] | None:
    """The true label of each scored row of a chunk (None where unknown), or None without truth."""
    if lookup is not None:
        return [lookup.get(i) for i in good_ids.to_pylist()]
    if TRUTH_COLUMN not in table.column_names:
        return None
    column = table[TRUTH_COLUMN]
    if mask is not None:
        column = column.filter(mask)
    values: list[str | None] = pc.cast(column, pa.string()).to_pylist()
    return values


def truth_stats(truth: list[str | None], scores: Scores, compared: Scores | None) -> dict[str, Any]:
    """Confusion matrices (lists, for the manifest) of the labelled rows, per model."""
    index = {label: i for i, label in enumerate(LABELS)}
    t = np.array([index.get(x, -1) if x is not None else -1 for x in truth], dtype=np.intp)
    known = t >= 0
    out: dict[str, Any] = {"labelled": int(known.sum())}
    for key, s in (("model", scores), ("compare", compared)):
        if s is None:
            continue
        predicted = np.array([index[c] for c in s.model.class_names], dtype=np.intp)[s.index]
        n = len(LABELS)
        cells = np.bincount(t[known] * n + predicted[known], minlength=n * n).reshape(n, n)
        out[key] = cells.tolist()
    return out


def performance(stats: list[dict[str, Any]], names: dict[str, str]) -> dict[str, Any] | None:
    """The run's performance report from its chunks' truth stats (None when no row had a label)."""
    parts = [s["truth"] for s in stats if s.get("truth")]
    labelled = sum(int(p["labelled"]) for p in parts)
    if not labelled:
        return None
    report: dict[str, Any] = {"labelled": labelled, "labels": list(LABELS), "models": []}
    for key, name in names.items():
        matrices = [np.array(p[key]) for p in parts if key in p]
        if matrices:
            total = np.sum(matrices, axis=0)
            report["models"].append({"role": key, "model": name, **summary(total.tolist())})
    return report
