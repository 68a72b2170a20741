"""``iris-scorer drift-report``: one report from files, and one sentence + exit 2 on bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from typer.testing import CliRunner

from iris_scorer.cli import app
from ml.data import load_raw
from ml.schema import FEATURES


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("drift-cli")
    raw = load_raw()[list(FEATURES)]
    shifted = raw.assign(petal_length=raw["petal_length"] + 2.6, petal_width=raw["petal_width"] + 1.1)
    out = {
        "reference": root / "reference.csv",
        "current": root / "current.parquet",
        "missing_column": root / "missing.csv",
        "non_numeric": root / "text.csv",
        "bad_ext": root / "current.txt",
        "bad_rows": root / "bad_rows.csv",
        "no_valid_row": root / "no_valid_row.csv",
    }
    raw.to_csv(out["reference"], index=False)
    shifted.to_parquet(out["current"], index=False)
    raw.drop(columns=["sepal_width"]).to_csv(out["missing_column"], index=False)
    text = raw.astype(object)
    text.loc[3, "petal_width"] = "wide"
    text.to_csv(out["non_numeric"], index=False)
    out["bad_ext"].write_text("x")
    # data row 4 holds text, row 10 a negative value, row 12 one value too many (line 13)
    lines = raw.to_csv(index=False).splitlines()
    lines[4] = lines[4].rsplit(",", 1)[0] + ",wide"
    lines[10] = "-1," + lines[10].split(",", 1)[1]
    lines[12] = lines[12] + ",9"
    out["bad_rows"].write_text("\n".join(lines) + "\n")
    no_valid = raw.head(5).astype(object)
    no_valid["sepal_length"] = "abc"
    no_valid.to_csv(out["no_valid_row"], index=False)
    return out


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["drift-report", *args], env=env)
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.slow
def test_report_from_files_html_and_json(files: dict[str, Path], tmp_path: Path) -> None:
    html = tmp_path / "out" / "drift.html"
    code, out, err = invoke(
        "--current", str(files["current"]), "--reference", str(files["reference"]), "--output", str(html)
    )
    assert code == 0, err
    assert "dataset_drift=yes" in out and "petal_length" in out and str(html) in out
    assert html.read_text().lstrip().lower().startswith("<")

    js = tmp_path / "drift.json"
    code, _, err = invoke(
        "--current", str(files["reference"]), "--reference", str(files["reference"]), "--output", str(js)
    )
    assert code == 0, err
    document = orjson.loads(js.read_bytes())
    assert document["dataset_drift"] is False and document["rows"] == 150
    assert set(document["features"]) == set(FEATURES)


@pytest.mark.slow
def test_default_reference_is_the_champions(registry: Any, tmp_path: Path) -> None:
    current = tmp_path / "current.csv"
    rng = np.random.default_rng(3)
    reference = load_raw()[list(FEATURES)]
    pd.DataFrame(reference.to_numpy()[rng.integers(0, 150, 200)], columns=list(FEATURES)).to_csv(
        current, index=False
    )
    output = tmp_path / "r.json"
    code, _, err = invoke(
        "--current", str(current), "--output", str(output), env={"MLFLOW_TRACKING_URI": registry.tracking_uri}
    )
    assert code == 0, err
    document = orjson.loads(output.read_bytes())
    assert document["reference_rows"] == 120  # the champion's training split
    assert "iris-classifier v" in document["reference"]


@pytest.mark.parametrize(
    ("current", "output", "message"),
    [
        ("nowhere.csv", "r.html", "current file nowhere.csv does not exist"),
        ("missing_column", "r.html", "has no column 'sepal_width'"),
        ("no_valid_row", "r.html", "has no valid row"),
        ("bad_ext", "r.html", "must be .csv or .parquet"),
        ("current", "r.pdf", "must end in .html or .json"),
    ],
    ids=["missing file", "missing column", "no valid row", "bad input extension", "bad output extension"],
)
def test_bad_input_exits_2_with_one_sentence(
    files: dict[str, Path], tmp_path: Path, current: str, output: str, message: str
) -> None:
    current_path = str(files.get(current, current))
    code, _, err = invoke(
        "--current", current_path, "--reference", str(files["reference"]), "--output", str(tmp_path / output)
    )
    assert code == 2
    assert message in err and err.startswith("error: ") and err.count("\n") == 1
    assert not (tmp_path / output).exists()


@pytest.mark.slow
def test_invalid_rows_are_skipped_and_reported(files: dict[str, Path], tmp_path: Path) -> None:
    js = tmp_path / "drift.json"
    code, out, err = invoke(
        "--current", str(files["bad_rows"]), "--reference", str(files["reference"]), "--output", str(js)
    )
    assert code == 0, err
    assert "rows=147" in out and "skipped=3" in out
    assert "row 4: petal_width: is not a number: 'wide'" in out
    assert "row 10: sepal_length: must be >= 0, got -1" in out
    assert "row 12: has 5 values, expected 4" in out
    document = orjson.loads(js.read_bytes())
    assert document["rows"] == 147
    assert document["skipped"]["rows"] == 3
    assert [e["row"] for e in document["skipped"]["first"]] == [4, 10, 12]
    assert [e["line"] for e in document["skipped"]["first"]] == [5, 11, 13]


def test_strict_fails_on_the_first_invalid_row(files: dict[str, Path], tmp_path: Path) -> None:
    code, _, err = invoke(
        "--current",
        str(files["bad_rows"]),
        "--reference",
        str(files["reference"]),
        "--output",
        str(tmp_path / "r.json"),
        "--strict",
    )
    assert code == 2
    assert "row 4" in err and "is not a number: 'wide'" in err and err.count("\n") == 1
    assert not (tmp_path / "r.json").exists()
