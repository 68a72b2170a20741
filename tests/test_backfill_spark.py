"""`iris-scorer backfill --engine spark` on Spark `local[2]`: row for row the local engine's output
and rejects on 1M rows with bad rows mixed in; one model version per run while the alias moves;
one sentence and exit 2 for a missing input, a missing column, a bad --master and --strict."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

pytest.importorskip(
    "pyspark", reason="PySpark is the optional extra iris-scorer[spark] (make install has it)"
)

pytestmark = [pytest.mark.slow, pytest.mark.integration]

IRIS_SCORER = str(Path(sys.executable).parent / "iris-scorer")
ROWS = 1_000_000
MOVING_ROWS = 200_000  # enough for the job to outlast the alias move


def _env(registry: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IRIS_")}
    env.update(MLFLOW_TRACKING_URI=registry.tracking_uri, IRIS_REPORTS_DIR=str(registry.root / "reports"))
    return env


def backfill(registry: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [IRIS_SCORER, "backfill", "--no-progress", *args],
        env=_env(registry),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


@pytest.fixture(scope="module")
def big_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1M rows, ids r-0…, a pass-through column, and 1 in 1,000 rows bad in one of four ways."""
    rng = np.random.default_rng(19)
    means = np.array([[5.0, 3.4, 1.5, 0.25], [5.9, 2.8, 4.3, 1.3], [6.6, 3.0, 5.6, 2.0]])
    rows = np.clip(means[rng.integers(0, 3, ROWS)] + rng.normal(0, 0.3, (ROWS, 4)), 0.1, None).round(2)
    frame = pd.DataFrame(rows, columns=["sepal_length", "sepal_width", "petal_length", "petal_width"])
    frame = frame.astype(str)
    frame.insert(0, "id", [f"r-{i}" for i in range(ROWS)])
    frame["batch"] = "b" + (np.arange(ROWS) % 7).astype(str)
    bad = np.arange(500, ROWS, 1000)
    frame.loc[bad[0::4], "sepal_width"] = "abc"
    frame.loc[bad[1::4], "petal_width"] = "-1"
    frame.loc[bad[2::4], "petal_length"] = ""
    frame.loc[bad[3::4], "sepal_length"] = "1e9"
    path = tmp_path_factory.mktemp("spark") / "big.csv"
    frame.to_csv(path, index=False)
    return path


def _rejects(paths: list[str]) -> list[tuple[str, str]]:
    found = []
    for path in paths:
        for line in Path(path).read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                found.append((record["id"], json.dumps(record["errors"], sort_keys=True)))
    return sorted(found)


def test_spark_equals_the_local_engine_row_for_row(registry, big_csv: Path, tmp_path: Path) -> None:
    local, spark = tmp_path / "local.parquet", tmp_path / "spark.parquet"
    done = backfill(registry, "--input", str(big_csv), "--output", str(local))
    assert done.returncode == 0, done.stderr[-2000:]
    done = backfill(
        registry, "--engine", "spark", "--master", "local[2]", "--input", str(big_csv), "--output", str(spark)
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"rows={ROWS} scored={ROWS - 1000} rejects=1000" in done.stdout, done.stdout
    assert (spark / "_SUCCESS").exists()
    ours = pd.read_parquet(local).sort_values("id").reset_index(drop=True)
    theirs = pd.read_parquet(spark).sort_values("id").reset_index(drop=True)
    assert list(theirs.columns) == list(ours.columns)
    assert len(theirs) == len(ours) == ROWS - 1000
    for column in ours.columns:
        if column == "scored_at":
            continue
        if ours[column].dtype.kind == "f":
            np.testing.assert_allclose(theirs[column].to_numpy(), ours[column].to_numpy(), rtol=0, atol=1e-12)
        else:
            assert (theirs[column].astype(str).to_numpy() == ours[column].astype(str).to_numpy()).all(), (
                column
            )
    assert _rejects(glob.glob(str(tmp_path / "spark.rejects" / "*.txt"))) == _rejects(
        [str(tmp_path / "local.rejects.jsonl")]
    )


def test_one_version_per_run_while_the_alias_moves(fresh_registry, big_csv: Path, tmp_path: Path) -> None:
    from ml.register import promote

    moving = tmp_path / "moving.csv"
    with big_csv.open() as source, moving.open("w") as target:
        for _, line in zip(range(MOVING_ROWS + 1), source, strict=False):
            target.write(line)

    before = fresh_registry.champion_version
    other = fresh_registry.train_version("random_forest")
    out = tmp_path / "moving.parquet"
    proc = subprocess.Popen(
        [
            IRIS_SCORER,
            "backfill",
            "--no-progress",
            "--engine",
            "spark",
            "--master",
            "local[2]",
            "--input",
            str(moving),
            "--output",
            str(out),
        ],
        env=_env(fresh_registry),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 300
    for line in proc.stderr:  # the driver has resolved the alias: move it now
        if "event=spark_model_resolved" in line:
            break
        assert time.monotonic() < deadline
    promote(fresh_registry.client, "iris-classifier", other, "champion")
    assert proc.poll() is None, "the job was still running when the alias moved"
    proc.stderr.read()
    assert proc.wait(600) == 0
    versions = pd.read_parquet(out, columns=["model_version"])["model_version"].unique().tolist()
    assert versions == [before]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input", "{tmp}/missing.csv"], "missing.csv does not exist"),
        (["--input", "{tmp}/nocol.csv"], "has no column 'petal_width'"),
        (["--input", "{tmp}/ok.csv", "--master", "nonsense://x"], "--master 'nonsense://x'"),
        (["--input", "{tmp}/bad.csv", "--strict"], "--strict stops the run"),
        (["--input", "{tmp}/ok.csv", "--from-topic", "iris.requests"], "is an option of the local engine"),
    ],
)
def test_bad_input_is_one_sentence_and_exit_2(
    registry, tmp_path: Path, args: list[str], message: str
) -> None:
    header = "id,sepal_length,sepal_width,petal_length,petal_width\n"
    (tmp_path / "ok.csv").write_text(header + "a,5.1,3.5,1.4,0.2\n")
    (tmp_path / "bad.csv").write_text(header + "a,5.1,3.5,1.4,0.2\nb,5.1,abc,1.4,0.2\n")
    (tmp_path / "nocol.csv").write_text("id,sepal_length,sepal_width,petal_length\na,5.1,3.5,1.4\n")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    done = backfill(registry, "--engine", "spark", *argv, "--output", str(tmp_path / "o.parquet"))
    assert done.returncode == 2, done.stdout + done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], done.stderr[-3000:]


def test_the_challenger_columns_are_the_local_engines(duel, tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    rows = np.clip(np.array([6.1, 2.9, 4.7, 1.5]) + rng.normal(0, 0.6, (3000, 4)), 0.1, None).round(2)
    frame = pd.DataFrame(rows, columns=["sepal_length", "sepal_width", "petal_length", "petal_width"])
    frame.insert(0, "id", [f"c-{i}" for i in range(len(frame))])
    src = tmp_path / "c.csv"
    frame.to_csv(src, index=False)
    local, spark = tmp_path / "local.parquet", tmp_path / "spark.parquet"
    assert backfill(duel, "--challenger", "--input", str(src), "--output", str(local)).returncode == 0
    done = backfill(
        duel,
        "--engine",
        "spark",
        "--master",
        "local[2]",
        "--challenger",
        "--input",
        str(src),
        "--output",
        str(spark),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ours = pd.read_parquet(local).sort_values("id").reset_index(drop=True)
    theirs = pd.read_parquet(spark).sort_values("id").reset_index(drop=True)
    compare = [c for c in ours.columns if c.startswith("compare_")]
    assert compare == [
        "compare_label",
        "compare_prob_setosa",
        "compare_prob_versicolor",
        "compare_prob_virginica",
    ]
    assert (theirs["compare_label"] == ours["compare_label"]).all()
    assert (ours["compare_label"] != ours["label"]).any()  # the challenger is another model
    for column in compare[1:]:
        np.testing.assert_allclose(theirs[column].to_numpy(), ours[column].to_numpy(), rtol=0, atol=1e-12)
