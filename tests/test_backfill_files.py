"""``iris-scorer backfill`` over files: formats, rejects, strict mode, errors, compare, shards, drift."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import Registry
from typer.testing import CliRunner

from consumers.backfill import files, readers
from consumers.backfill.options import BackfillOptions, parse_shard
from consumers.backfill.run import run_backfill
from iris_scorer.cli import app
from ml.errors import BadInputError
from ml.model import load_model
from ml.predict import score
from ml.schema import FEATURES

N_ROWS = 240
BAD_ROWS = {7: ("sepal_length", -1.0), 100: ("petal_width", 500.0), 201: ("petal_length", np.nan)}


def make_frame(n: int = N_ROWS, *, seed: int = 0, with_id: bool = True, bad: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "sepal_length": rng.uniform(4.3, 7.9, n),
            "sepal_width": rng.uniform(2.0, 4.4, n),
            "petal_length": rng.uniform(1.0, 6.9, n),
            "petal_width": rng.uniform(0.1, 2.5, n),
        }
    )
    if bad:
        for row, (column, value) in BAD_ROWS.items():
            frame.loc[row, column] = value
    if with_id:
        frame.insert(0, "id", [f"r-{seed}-{i}" for i in range(n)])
    frame["extra"] = "ignored"
    return frame


def write_input(frame: pd.DataFrame, path: Path) -> Path:
    kind = files.input_kind(path)
    if kind == "csv":
        frame.to_csv(path, index=False)
    elif kind == "parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_json(path, orient="records", lines=True)
    return path


def read_output(path: Path) -> pd.DataFrame:
    kind = files.output_kind(path)
    if kind == "csv":
        return pd.read_csv(path, dtype={"id": str, "model_version": str})
    if kind == "parquet":
        return pd.read_parquet(path)
    return pd.read_json(path, lines=True, dtype={"id": str, "model_version": str})


def run(registry: Registry, **options: Any) -> Any:
    options.setdefault("progress", False)
    return run_backfill(registry.settings(), BackfillOptions(**options))


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("csv", "parquet"),
        ("parquet", "csv"),
        ("jsonl", "jsonl"),
        ("parquet", "parquet"),
        ("csv", "jsonl"),
    ],
)
def test_formats_in_and_out_score_like_the_model(
    registry: Registry, tmp_path: Path, source: str, target: str
) -> None:
    frame = make_frame()
    src = write_input(frame, tmp_path / f"in.{source}")
    out = tmp_path / f"out.{target}"
    summary = run(registry, input=str(src), output=out, chunk_rows=64)

    assert (summary.rows, summary.rejects, summary.scored) == (N_ROWS, 3, N_ROWS - 3)
    result = read_output(out)
    good = frame.drop(index=list(BAD_ROWS)).reset_index(drop=True)
    assert result["id"].tolist() == good["id"].tolist()  # same rows, same order
    model = load_model(registry.client, registry.settings().model_uri, with_reference=False)
    expected = score(model, good[list(FEATURES)].to_numpy())
    assert result["label"].tolist() == expected.labels.tolist()
    probs = result[[f"prob_{c}" for c in model.classes]].to_numpy()
    np.testing.assert_allclose(probs, expected.probabilities, rtol=1e-9)
    np.testing.assert_allclose(result[list(FEATURES)].to_numpy(), good[list(FEATURES)].to_numpy())
    assert set(result["model_version"].astype(str)) == {registry.champion_version}
    assert result["scored_at"].nunique() == 1
    assert sum(summary.labels.values()) == N_ROWS - 3
    assert not out.with_name(out.name + ".parts").exists()
    if target == "parquet":  # written from Arrow dictionaries, read back as plain strings
        written = pq.read_schema(out)
        assert {written.field(c).type for c in ("id", "label", "model_name", "scored_at")} == {pa.string()}

    rejects = [orjson.loads(line) for line in (tmp_path / "out.rejects.jsonl").read_bytes().splitlines()]
    # ``row`` is the 1-based data row (BAD_ROWS are 0-based frame positions), ``line`` for CSV
    assert [r["row"] for r in rejects] == [k + 1 for k in sorted(BAD_ROWS)]
    assert [r.get("line") for r in rejects] == [k + 2 if source == "csv" else None for k in sorted(BAD_ROWS)]
    for reject in rejects:
        column = BAD_ROWS[reject["row"] - 1][0]
        assert reject["id"] == f"r-0-{reject['row'] - 1}"
        assert any(e["loc"] == [column] for e in reject["errors"]), reject


def test_rows_without_id_are_numbered_across_files(registry: Registry, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    write_input(make_frame(50, seed=1, with_id=False, bad=False), folder / "a.csv")
    write_input(make_frame(30, seed=2, with_id=False, bad=False), folder / "b.parquet")
    out = tmp_path / "out.parquet"
    run(registry, input=str(folder), output=out, chunk_rows=20)
    assert read_output(out)["id"].tolist() == [str(i) for i in range(80)]


def test_text_in_number_columns_and_bad_json_lines_become_rejects(registry: Registry, tmp_path: Path) -> None:
    csv = tmp_path / "text.csv"
    csv.write_text(
        "id,sepal_length,sepal_width,petal_length,petal_width\n"
        "a,5.1,3.5,1.4,0.2\nb,wide,3.5,1.4,0.2\nc,,3,1,0.2\nd, 6.0 ,3,4,1.3\n"
    )
    summary = run(registry, input=str(csv), output=tmp_path / "o.csv", chunk_rows=2)
    assert (summary.scored, summary.rejects) == (2, 2)
    assert read_output(tmp_path / "o.csv")["id"].tolist() == ["a", "d"]

    jsonl = tmp_path / "lines.jsonl"
    good = {"id": "g", "sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
    lines = [good, [1, 2], {**good, "id": 7}, "not json", {**good, "id": "s", "sepal_width": "x"}, good]
    jsonl.write_bytes(
        b"\n".join(line.encode() if isinstance(line, str) else orjson.dumps(line) for line in lines) + b"\n"
    )
    summary = run(registry, input=str(jsonl), output=tmp_path / "o.jsonl", chunk_rows=4)
    assert (summary.rows, summary.scored, summary.rejects) == (6, 2, 4)
    rejects = [orjson.loads(x) for x in (tmp_path / "o.rejects.jsonl").read_bytes().splitlines()]
    assert [r["row"] for r in rejects] == [2, 3, 4, 5]
    assert "JSON object" in rejects[0]["errors"][0]["msg"]
    assert rejects[3]["errors"] == [{"loc": ["sepal_width"], "msg": "is not a number: 'x'"}]


def test_strict_mode_fails_on_the_first_bad_row(registry: Registry, tmp_path: Path) -> None:
    src = write_input(make_frame(), tmp_path / "in.parquet")
    with pytest.raises(BadInputError, match="row 8"):
        run(registry, input=str(src), output=tmp_path / "out.parquet", strict=True)
    assert not (tmp_path / "out.parquet").exists()
    assert not (tmp_path / "out.parquet.parts").exists()


def invoke(registry: Registry, *args: str) -> Any:
    return CliRunner().invoke(
        app,
        ["backfill", *args, "--no-progress"],
        env={
            "MLFLOW_TRACKING_URI": registry.tracking_uri,
            "IRIS_REPORTS_DIR": str(registry.root / "reports"),
        },
    )


def test_cli_strict_exits_2_and_success_prints_a_summary(registry: Registry, tmp_path: Path) -> None:
    src = write_input(make_frame(), tmp_path / "in.csv")
    result = invoke(registry, "--input", str(src), "--output", str(tmp_path / "o.csv"), "--strict")
    assert result.exit_code == 2
    assert "row 8" in result.stderr and "sepal_length" in result.stderr

    result = invoke(registry, "--input", str(src), "--output", str(tmp_path / "o.csv"))
    assert result.exit_code == 0, result.stderr
    assert f"rows={N_ROWS} scored={N_ROWS - 3} rejects=3" in result.stdout
    assert "rows_per_s=" in result.stdout and str(tmp_path / "o.csv") in result.stdout


@pytest.mark.parametrize(
    ("case", "named"),
    [
        ("missing_file", "nope.csv"),  # the input does not exist
        ("bad_input_ext", "in.txt"),  # an input we cannot read
        ("bad_output_ext", "out.xlsx"),  # an output format we do not write
        ("missing_column", "petal_width"),  # the file lacks a feature column
        ("missing_field", "petal_width"),  # JSON Lines without a feature field
        ("empty_glob", "*.parquet"),  # a pattern that matches nothing
        ("bad_shard", "2/2"),
    ],
)
def test_cli_errors_exit_2_and_name_the_culprit(
    registry: Registry, tmp_path: Path, case: str, named: str
) -> None:
    frame = make_frame(20, bad=False)
    src, out = tmp_path / "in.csv", tmp_path / "out.parquet"
    extra: list[str] = []
    if case == "missing_file":
        src = tmp_path / "nope.csv"
    elif case == "bad_input_ext":
        src = tmp_path / "in.txt"
        src.write_text("x")
    elif case == "bad_output_ext":
        write_input(frame, src)
        out = tmp_path / "out.xlsx"
    elif case == "missing_column":
        write_input(frame.drop(columns=["petal_width"]), src)
    elif case == "missing_field":
        src = write_input(frame.drop(columns=["petal_width"]), tmp_path / "in.jsonl")
    elif case == "empty_glob":
        src = tmp_path / "*.parquet"
    else:
        write_input(frame, src)
        extra = ["--shard", "2/2"]
    result = invoke(registry, "--input", str(src), "--output", str(out), *extra)
    assert result.exit_code == 2, result.output
    assert named in result.stderr
    assert result.stderr.count("\n") == 1  # one sentence
    assert not out.exists()


@pytest.mark.slow
def test_compare_adds_the_other_label_and_a_confusion_summary(registry: Registry, tmp_path: Path) -> None:
    other = registry.train_version("random_forest", promote=False)
    src = write_input(make_frame(bad=False), tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    summary = run(
        registry, input=str(src), output=out, compare_with=f"models:/iris-classifier/{other}", chunk_rows=100
    )
    result = read_output(out)
    second = load_model(registry.client, f"models:/iris-classifier/{other}", with_reference=False)
    expected = score(second, make_frame(bad=False)[list(FEATURES)].to_numpy())
    assert result["compare_label"].tolist() == expected.labels.tolist()

    document = orjson.loads((tmp_path / "out.compare.json").read_bytes())
    assert document == summary.compare
    assert document["compare_model"].endswith(f"v{other}")
    disagree = int((result["label"] != result["compare_label"]).sum())
    assert (document["agree"], document["disagree"]) == (N_ROWS - disagree, disagree)
    confusion = document["confusion"]
    assert sum(sum(row.values()) for row in confusion.values()) == N_ROWS
    for label, row in confusion.items():
        for compare_label, count in row.items():
            pairs = (result["label"] == label) & (result["compare_label"] == compare_label)
            assert count == int(pairs.sum())


def test_shard_outputs_concatenate_to_the_full_result(registry: Registry, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for i, kind in enumerate(["csv", "parquet", "jsonl", "csv", "parquet"]):
        write_input(make_frame(40 + i * 7, seed=i, with_id=False, bad=False), folder / f"f{i}.{kind}")
    full = tmp_path / "full.parquet"
    run(registry, input=str(folder), output=full, chunk_rows=16)
    shards = []
    for index in range(3):
        out = tmp_path / f"shard{index}.parquet"
        run(registry, input=str(folder), output=out, chunk_rows=16, shard=(index, 3))
        shards.append(read_output(out))
    union = pd.concat(shards).drop(columns=["scored_at"])
    expected = read_output(full).drop(columns=["scored_at"])
    assert union["id"].is_unique
    key = union["id"].astype(int)
    pd.testing.assert_frame_equal(
        union.assign(k=key).sort_values("k").drop(columns="k").reset_index(drop=True),
        expected.reset_index(drop=True),
    )


@pytest.mark.parametrize(("text", "expected"), [("0/1", (0, 1)), ("2/4", (2, 4))])
def test_parse_shard(text: str, expected: tuple[int, int]) -> None:
    assert parse_shard(text) == expected


def test_rechunk_cuts_exact_chunks() -> None:
    tables = [pa.table({"x": list(range(a, b))}) for a, b in [(0, 3), (3, 3), (3, 10), (10, 11)]]
    sizes = [t.num_rows for t in readers.rechunk(tables, 4)]
    assert sizes == [4, 4, 3]
    assert [v for t in readers.rechunk(tables, 4) for v in t["x"].to_pylist()] == list(range(11))


def test_a_work_folder_from_other_arguments_is_not_reused(registry: Registry, tmp_path: Path) -> None:
    src = write_input(make_frame(bad=False), tmp_path / "in.csv")
    out = tmp_path / "out.csv"
    parts = tmp_path / "out.csv.parts"
    parts.mkdir()
    (parts / "manifest.json").write_bytes(orjson.dumps({"version": 1, "fingerprint": "other", "parts": {}}))
    (parts / "part-00000-0000000.csv").write_text("junk\n")
    summary = run(registry, input=str(src), output=out, chunk_rows=50)
    assert summary.resumed_parts == 0
    assert "junk" not in out.read_text()
    assert len(read_output(out)) == N_ROWS


@pytest.mark.slow
def test_drift_window_by_rows_writes_one_report_per_window(registry: Registry, tmp_path: Path) -> None:
    src = write_input(make_frame(bad=False), tmp_path / "in.parquet")
    summary = run(
        registry, input=str(src), output=tmp_path / "out.parquet", drift_window="120", chunk_rows=50
    )
    assert len(summary.drift_reports) == 2
    for html in summary.drift_reports:
        report = Path(html)
        assert report.exists() and report.parent == registry.root / "reports" / "backfill"
        document = orjson.loads(report.with_suffix(".json").read_bytes())
        assert document["rows"] == 120
