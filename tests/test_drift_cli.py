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
    }
    raw.to_csv(out["reference"], index=False)
    shifted.to_parquet(out["current"], index=False)
    raw.drop(columns=["sepal_width"]).to_csv(out["missing_column"], index=False)
    text = raw.astype(object)
    text.loc[3, "petal_width"] = "wide"
    text.to_csv(out["non_numeric"], index=False)
    out["bad_ext"].write_text("x")
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
        ("non_numeric", "r.html", "column 'petal_width' of current file"),
        ("bad_ext", "r.html", "must be .csv or .parquet"),
        ("current", "r.pdf", "must end in .html or .json"),
    ],
    ids=["missing file", "missing column", "non-numeric", "bad input extension", "bad output extension"],
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
