"""Bad rows in backfill input (issue 14): ragged CSV rows, one row numbering, quoted non-numbers,
pass-through columns."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest
from conftest import Registry
from test_backfill_files import make_frame, read_output, run, write_input

from consumers.backfill import files as inputs
from consumers.backfill import run as backfill_run
from consumers.backfill.options import BackfillOptions
from ml.model import load_model
from ml.schema import FEATURES

CLI = Path(sys.executable).parent / "iris-scorer"
HEADER = "id,sepal_length,sepal_width,petal_length,petal_width\n"
GOOD_ROW = "5.1,3.5,1.4,0.2"


def rejects_of(out: Path) -> list[dict[str, Any]]:
    path = out.with_name(out.stem + ".rejects.jsonl")
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def ragged_csv(path: Path, rows: int = 12, ragged: tuple[int, ...] = (4, 9)) -> Path:
    """``rows`` data rows; the 1-based data rows in ``ragged`` have a wrong column count."""
    lines = [HEADER]
    for row in range(1, rows + 1):
        if row == ragged[0]:
            lines.append(f"r{row},{GOOD_ROW},99\n")  # one value too many
        elif row in ragged:
            lines.append(f"r{row},5.1\n")  # too few
        else:
            lines.append(f"r{row},{GOOD_ROW}\n")
    path.write_text("".join(lines))
    return path


# ---------------------------------------------------------------- point 9: ragged CSV rows


@pytest.mark.parametrize("chunk_rows", [3, 100])
def test_ragged_csv_rows_are_rejects_and_the_run_goes_on(
    registry: Registry, tmp_path: Path, chunk_rows: int
) -> None:
    src = ragged_csv(tmp_path / "in.csv")
    out = tmp_path / "out.parquet"
    summary = run(registry, input=str(src), output=out, chunk_rows=chunk_rows)
    assert (summary.rows, summary.scored, summary.rejects) == (12, 10, 2)
    assert read_output(out)["id"].tolist() == [f"r{i}" for i in range(1, 13) if i not in (4, 9)]
    rejects = rejects_of(out)
    assert [(r["row"], r["line"]) for r in rejects] == [(4, 5), (9, 10)]
    assert "6 values" in rejects[0]["errors"][0]["msg"] and "r4,5.1" in rejects[0]["errors"][0]["msg"]
    assert "2 values" in rejects[1]["errors"][0]["msg"]


def test_ragged_csv_row_with_strict_stops_the_run(registry: Registry, tmp_path: Path) -> None:
    from ml.errors import BadInputError

    src = ragged_csv(tmp_path / "in.csv")
    with pytest.raises(BadInputError, match="row 4"):
        run(registry, input=str(src), output=tmp_path / "out.csv", strict=True)


def cli_env(registry: Registry) -> dict[str, str]:
    values = dict(os.environ)
    values.update(MLFLOW_TRACKING_URI=registry.tracking_uri, IRIS_REPORTS_DIR=str(registry.root / "reports"))
    return values


def test_ragged_csv_row_through_the_real_command(registry: Registry, tmp_path: Path) -> None:
    src = ragged_csv(tmp_path / "in.csv")
    out = tmp_path / "out.csv"
    base = [str(CLI), "backfill", "--input", str(src), "--output", str(out), "--no-progress"]
    done = subprocess.run(base, env=cli_env(registry), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "rows=12 scored=10 rejects=2" in done.stdout
    assert len(read_output(out)) == 10
    assert [r["row"] for r in rejects_of(out)] == [4, 9]

    strict = subprocess.run(
        [*base, "--strict"], env=cli_env(registry), capture_output=True, text=True, timeout=120
    )
    assert strict.returncode == 2
    assert "row 4" in strict.stderr and strict.stderr.count("\n") == 1


# ---------------------------------------------------------------- point 10: one row numbering


def test_reject_rows_are_1_based_data_rows_per_file_with_csv_lines(
    registry: Registry, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    frame = make_frame(20, bad=False)
    frame.loc[8, "sepal_length"] = -1.0  # the 9th data row: line 10 of the CSV
    write_input(frame, folder / "a.csv")
    write_input(frame, folder / "b.jsonl")
    out = tmp_path / "out.parquet"
    run(registry, input=str(folder), output=out, chunk_rows=7)
    rejects = rejects_of(out)
    assert [(Path(r["input"]).name, r["row"], r.get("line")) for r in rejects] == [
        ("a.csv", 9, 10),
        ("b.jsonl", 9, None),
    ]


# ---------------------------------------------------------------- point 11: quoted non-numbers


@pytest.mark.parametrize("kind", ["csv", "parquet", "jsonl"])
def test_non_numeric_values_are_quoted_in_rejects(registry: Registry, tmp_path: Path, kind: str) -> None:
    frame = make_frame(6, bad=False).astype({"sepal_width": object})
    frame.loc[1, "sepal_width"] = "abc"
    frame.loc[3, "sepal_width"] = "x" * 60
    if kind != "jsonl":
        frame["sepal_width"] = frame["sepal_width"].astype(str)
    src = write_input(frame, tmp_path / f"in.{kind}")
    out = tmp_path / "out.csv"
    summary = run(registry, input=str(src), output=out)
    assert summary.rejects == 2
    messages = [e["msg"] for r in rejects_of(out) for e in r["errors"] if e["loc"] == ["sepal_width"]]
    assert messages[0] == "is not a number: 'abc'"
    assert messages[1].startswith("is not a number: 'xxx") and messages[1].endswith("…'")
    assert len(messages[1]) < 70


# ---------------------------------------------------------------- point 12: pass-through columns


def extra_frame(n: int = 9) -> pd.DataFrame:
    frame = make_frame(n, bad=False).drop(columns=["extra"])
    frame.insert(1, "customer", [f"c{i}" for i in range(n)])
    frame["sent_at"] = "2026-11-26T10:00:00Z"
    frame["note"] = [f"n{i}" for i in range(n)]
    frame.loc[4, "sepal_length"] = -2.0  # a reject: its row is not in the output
    return frame


@pytest.mark.parametrize(
    ("source", "target"),
    [("csv", "parquet"), ("parquet", "csv"), ("jsonl", "jsonl"), ("parquet", "parquet"), ("jsonl", "csv")],
)
def test_extra_columns_pass_through_in_order(
    registry: Registry, tmp_path: Path, source: str, target: str
) -> None:
    frame = extra_frame()
    src = write_input(frame, tmp_path / f"in.{source}")
    out = tmp_path / f"out.{target}"
    run(registry, input=str(src), output=out, chunk_rows=4)
    result = read_output(out)
    model = load_model(registry.client, registry.settings().model_uri, with_reference=False)
    probs = [f"prob_{c}" for c in model.classes]
    assert list(result.columns) == [
        "id",
        *FEATURES,
        "customer",
        "sent_at",
        "note",
        "label",
        *probs,
        "model_name",
        "model_version",
        "scored_at",
    ]
    kept = frame.drop(index=[4])
    assert result["customer"].tolist() == kept["customer"].tolist()
    assert result["note"].tolist() == kept["note"].tolist()


def test_drop_extra_columns_keeps_the_old_layout(registry: Registry, tmp_path: Path) -> None:
    src = write_input(extra_frame(), tmp_path / "in.csv")
    out = tmp_path / "out.parquet"
    run(registry, input=str(src), output=out, drop_extra_columns=True)
    columns = list(read_output(out).columns)
    assert columns[:5] == ["id", *FEATURES] and columns[5] == "label"
    assert not {"customer", "sent_at", "note"} & set(columns)


def test_drop_extra_columns_is_part_of_the_fingerprint(registry: Registry, tmp_path: Path) -> None:
    src = write_input(extra_frame(), tmp_path / "in.csv")
    found = inputs.discover_inputs(str(src))
    model = load_model(registry.client, registry.settings().model_uri, with_reference=False)
    keep = BackfillOptions(input=str(src), output=tmp_path / "o.csv")
    drop = BackfillOptions(input=str(src), output=tmp_path / "o.csv", drop_extra_columns=True)
    assert backfill_run._fingerprint(keep, found, model, None) != backfill_run._fingerprint(
        drop, found, model, None
    )


def test_internal_and_clashing_columns_are_not_passed_through(registry: Registry, tmp_path: Path) -> None:
    frame = extra_frame()
    frame["_reason"] = "mine"
    frame["label"] = "mine"
    src = write_input(frame, tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    run(registry, input=str(src), output=out)
    result = read_output(out)
    assert "_reason" not in result.columns
    assert list(result.columns).count("label") == 1 and "mine" not in set(result["label"])


def test_cli_drop_extra_columns(registry: Registry, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from iris_scorer.cli import app

    src = write_input(extra_frame(), tmp_path / "in.csv")
    out = tmp_path / "out.csv"
    result = CliRunner().invoke(
        app,
        ["backfill", "--input", str(src), "--output", str(out), "--no-progress", "--drop-extra-columns"],
        env=cli_env(registry),
    )
    assert result.exit_code == 0, result.stderr
    assert "customer" not in read_output(out).columns


@pytest.mark.parametrize("target", ["jsonl", "csv", "parquet"])
def test_files_with_different_extra_columns_share_one_output_layout(
    registry: Registry, tmp_path: Path, target: str
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    first = extra_frame(5).drop(columns=["note"])
    first["count"] = [1, 2, 3, 4, 5]  # an integer column (Parquet keeps its type)
    write_input(first, folder / "a.parquet")
    write_input(extra_frame(6), folder / "b.csv")
    out = tmp_path / f"out.{target}"
    run(registry, input=str(folder), output=out, chunk_rows=3)
    result = read_output(out)
    assert list(result.columns)[5:9] == ["customer", "sent_at", "count", "note"]
    assert len(result) == 9  # one reject in each file
    assert result["note"].isna().sum() == 4 and result["count"].isna().sum() == 5


def test_backfill_and_drift_report_number_the_same_bad_rows_alike(registry: Registry, tmp_path: Path) -> None:
    from ml.drift_report import read_rows, valid_features

    src = ragged_csv(tmp_path / "in.csv")
    text = src.read_text().splitlines()
    text[6] = "r6,5.1,abc,1.4,0.2"  # data row 6 (line 7) holds text
    src.write_text("\n".join(text) + "\n")
    out = tmp_path / "out.parquet"
    run(registry, input=str(src), output=out)
    backfill = [(r["row"], r["line"], r["errors"]) for r in rejects_of(out)]
    _, skipped = valid_features(read_rows(src, role="current"), name="current")
    drift = [(e["row"], e["line"], e["errors"]) for e in skipped.first]
    assert [(row, line) for row, line, _ in backfill] == [(4, 5), (6, 7), (9, 10)]
    assert drift == backfill


@pytest.mark.parametrize("block_bytes", [64, 100, 1 << 20])
@pytest.mark.parametrize("ragged", [(1, 2), (4, 9), (11, 12), (3, 12)])
def test_ragged_rows_go_back_to_their_places_across_read_blocks(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, block_bytes: int, ragged: tuple[int, int]
) -> None:
    from consumers.backfill import columns, readers

    monkeypatch.setattr(columns, "READ_BLOCK_BYTES", block_bytes)
    src = ragged_csv(tmp_path / "in.csv", ragged=ragged)
    (file,) = inputs.discover_inputs(str(src))
    tables = list(readers.read_chunks(file, 5))
    assert [t.num_rows for t in tables] == [5, 5, 2]
    rows = [r for t in tables for r in t.to_pylist()]
    assert [r["id"] for r in rows] == [None if i in ragged else f"r{i}" for i in range(1, 13)]
    assert [i for i, r in enumerate(rows, 1) if r.get("_reason")] == sorted(ragged)
    assert readers.count_rows(file) == 12


def test_jsonl_output_keeps_rows_with_null_pass_through_values() -> None:
    import pyarrow as pa

    from consumers.backfill.writers import jsonl_bytes

    table = pa.table({"id": ["a", "b"], "note": pa.array(["x", None], pa.string()), "n": pa.array([1, None])})
    assert jsonl_bytes(table) == b'{"id":"a","note":"x","n":1}\n{"id":"b","note":null,"n":null}\n'
