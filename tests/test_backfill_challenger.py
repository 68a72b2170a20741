"""Backfill with the challenger and with ground truth: `--challenger` adds its label and
probabilities through the `--compare-with` path, and a `label` column or `--labels PATH` gives a
performance report per model whose numbers are scikit-learn's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score
from typer.testing import CliRunner

from iris_scorer.cli import app
from ml.data import load_raw
from ml.model import load_model
from ml.schema import FEATURES


def invoke(registry: Any, *args: str) -> Any:
    return CliRunner().invoke(
        app, ["backfill", "--no-progress", *args], env={"MLFLOW_TRACKING_URI": registry.tracking_uri}
    )


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    raw = load_raw()
    rng = np.random.default_rng(8)
    rows = pd.concat([raw] * 4, ignore_index=True)
    rows[list(FEATURES)] = np.clip(rows[list(FEATURES)] + rng.normal(0, 0.3, (len(rows), 4)), 0.1, None)
    rows.insert(0, "id", [f"b-{i}" for i in range(len(rows))])
    return rows.rename(columns={"species": "label"})


def test_challenger_columns_and_a_performance_report_from_a_label_column(duel, frame, tmp_path: Path) -> None:
    src, out = tmp_path / "in.csv", tmp_path / "out.parquet"
    frame.to_csv(src, index=False)
    result = invoke(duel, "--input", str(src), "--output", str(out), "--challenger")
    assert result.exit_code == 0, result.output
    got = pd.read_parquet(out).set_index("id").loc[frame["id"]]
    champion = load_model(duel.client, "models:/iris-classifier@champion", with_reference=False)
    challenger = load_model(duel.client, "models:/iris-classifier@challenger", with_reference=False)
    x = frame[list(FEATURES)].to_numpy()
    theirs = challenger.estimator.predict_proba(x)
    assert got["compare_label"].tolist() == challenger.estimator.predict(x).tolist()
    for j, c in enumerate(challenger.estimator.classes_):
        np.testing.assert_allclose(got[f"compare_prob_{c}"].to_numpy(), theirs[:, j], atol=1e-12)
    assert got["label"].tolist() == champion.estimator.predict(x).tolist()  # the prediction, not the truth
    report = json.loads((tmp_path / "out.performance.json").read_text())
    assert report["labelled"] == len(frame)
    by_role = {m["role"]: m for m in report["models"]}
    for role, model in (("model", champion), ("compare", challenger)):
        predicted = model.estimator.predict(x)
        assert by_role[role]["model"] == f"iris-classifier v{model.version}"
        assert by_role[role]["accuracy"] == pytest.approx(accuracy_score(frame["label"], predicted), abs=1e-6)
        assert by_role[role]["f1_macro"] == pytest.approx(
            f1_score(frame["label"], predicted, average="macro"), abs=1e-6
        )
    assert "performance (compare)" in result.output and "out.performance.json" in result.output


def test_a_labels_file_joined_by_id(duel, frame, tmp_path: Path) -> None:
    src, labels, out = tmp_path / "in.parquet", tmp_path / "truth.csv", tmp_path / "out.csv"
    frame.drop(columns=["label"]).to_parquet(src)
    frame[["id", "label"]].iloc[::2].to_csv(labels, index=False)  # half the rows are labelled
    result = invoke(
        duel, "--input", str(src), "--output", str(out), "--labels", str(labels), "--chunk-size", "97"
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out.performance.json").read_text())
    half = frame.iloc[::2]
    champion = load_model(duel.client, "models:/iris-classifier@champion", with_reference=False)
    predicted = champion.estimator.predict(half[list(FEATURES)].to_numpy())
    assert report["labelled"] == len(half)
    (only,) = report["models"]
    assert only["accuracy"] == pytest.approx(accuracy_score(half["label"], predicted), abs=1e-6)


@pytest.mark.parametrize(
    ("labels_text", "args", "message"),
    [
        (None, ["--labels", "missing.csv"], "no such file"),
        ("id,label\nb-0,rose\n", ["--labels", "{labels}"], "label 'rose' is not one of"),
        ("id,species\nb-0,setosa\n", ["--labels", "{labels}"], "has no column 'label'"),
        (None, ["--challenger", "--compare-with", "models:/iris-classifier/1"], "not both"),
    ],
)
def test_bad_truth_or_options_exit_2_with_a_sentence(
    duel, frame, tmp_path, labels_text, args, message
) -> None:
    src = tmp_path / "in.csv"
    frame.drop(columns=["label"]).to_csv(src, index=False)
    labels = tmp_path / "truth.csv"
    if labels_text is not None:
        labels.write_text(labels_text)
    args = [
        a.replace("{labels}", str(labels)).replace("missing.csv", str(tmp_path / "missing.csv")) for a in args
    ]
    result = invoke(duel, "--input", str(src), "--output", str(tmp_path / "o.csv"), *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
