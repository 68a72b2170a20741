"""DVC stage ``evaluate``: test-split metrics to ``evaluation/metrics.json``, the predictions for
``dvc plots`` and a confusion-matrix image; deterministic, no MLflow (``register`` logs them)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import (
    ConfusionMatrixDisplay,
    accuracy_score,
    f1_score,
    precision_score,
    recall_score,
)

from ml import paths
from ml.schema import FEATURES, LABELS


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
    from ml.train import load_fitted

    pipeline = load_fitted()
    test = pd.read_csv(paths.TEST_DATA)
    predicted = pipeline.predict(test[list(FEATURES)])
    metrics = compute_metrics(test[paths.LABEL_COLUMN], predicted)
    paths.EVALUATION_DIR.mkdir(parents=True, exist_ok=True)
    paths.METRICS.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    pd.DataFrame({"actual": test[paths.LABEL_COLUMN], "predicted": predicted}).to_csv(
        paths.PREDICTIONS_PLOT, index=False
    )
    save_confusion_png(test[paths.LABEL_COLUMN], predicted, paths.CONFUSION_PNG)
    print("evaluate: " + " ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())))


if __name__ == "__main__":
    from ml.stage import run_stage

    run_stage(main)
