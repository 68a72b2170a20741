"""DVC stage ``evaluate``: test-split metrics to ``metrics.json`` and MLflow, a confusion matrix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
from sklearn.metrics import (
    ConfusionMatrixDisplay,
    accuracy_score,
    f1_score,
    precision_score,
    recall_score,
)

from ml import paths, tracking
from ml.schema import FEATURES, LABELS
from ml.settings import load_settings


def compute_metrics(actual: pd.Series, predicted: np.ndarray) -> dict[str, float]:
    return {
        "accuracy": float(accuracy_score(actual, predicted)),
        "precision_macro": float(precision_score(actual, predicted, average="macro", zero_division=0)),
        "recall_macro": float(recall_score(actual, predicted, average="macro", zero_division=0)),
        "f1_macro": float(f1_score(actual, predicted, average="macro", zero_division=0)),
    }


def save_confusion_png(actual: pd.Series, predicted: np.ndarray, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 4))
    ConfusionMatrixDisplay.from_predictions(actual, predicted, labels=list(LABELS), ax=ax, colorbar=False)
    ax.set_title("Iris test split")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    settings = load_settings()
    with tracking.fluent_run_uri(settings.mlflow_tracking_uri):
        evaluate_run(json.loads(paths.TRAIN_RUN.read_text()))


def evaluate_run(run: dict[str, Any]) -> None:
    """Score the test split with the run's model; write metrics and plots; log them to the run."""
    model = mlflow.sklearn.load_model(run["model_uri"])
    test = pd.read_csv(paths.TEST_DATA)
    predicted = model.predict(test[list(FEATURES)].to_numpy())
    metrics = compute_metrics(test[paths.LABEL_COLUMN], predicted)

    paths.EVALUATION_DIR.mkdir(parents=True, exist_ok=True)
    paths.METRICS.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    pd.DataFrame({"actual": test[paths.LABEL_COLUMN], "predicted": predicted}).to_csv(
        paths.PREDICTIONS_PLOT, index=False
    )
    save_confusion_png(test[paths.LABEL_COLUMN], predicted, paths.CONFUSION_PNG)
    with mlflow.start_run(run_id=run["run_id"]):
        mlflow.log_metrics(metrics)
        mlflow.log_artifact(str(paths.CONFUSION_PNG), artifact_path="evaluation")
    print("evaluate: " + " ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())))


if __name__ == "__main__":
    from ml.stage import run_stage

    run_stage(main)
