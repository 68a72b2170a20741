"""Baseline F: the obvious pandas script — read everything, one ``predict_proba``, write everything.

``python -m bench.baselines.pandas_script MODEL_URI INPUT OUTPUT`` (CSV or Parquet, by suffix).
"""

from __future__ import annotations

import sys
from pathlib import Path

import mlflow.sklearn
import pandas as pd

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def main(model_uri: str, source: Path, target: Path) -> None:
    model = mlflow.sklearn.load_model(model_uri)
    frame = pd.read_parquet(source) if source.suffix == ".parquet" else pd.read_csv(source)
    proba = model.predict_proba(frame[FEATURES].to_numpy())
    classes = [str(c) for c in model.classes_]
    out = pd.DataFrame(proba, columns=[f"p_{c}" for c in classes])
    out.insert(0, "label", [classes[i] for i in proba.argmax(axis=1)])
    if "id" in frame.columns:
        out.insert(0, "id", frame["id"].to_numpy())
    if target.suffix == ".parquet":
        out.to_parquet(target, index=False)
    else:
        out.to_csv(target, index=False)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
