"""Where the pipeline reads and writes, relative to the repository root (DVC runs stages there)."""

from __future__ import annotations

from pathlib import Path

RAW_DATA = Path("data/raw/iris.csv")
TRAIN_DATA = Path("data/processed/train.csv")
TEST_DATA = Path("data/processed/test.csv")
TRAIN_RUN = Path("data/model/train_run.json")
EVALUATION_DIR = Path("data/evaluation")
METRICS = EVALUATION_DIR / "metrics.json"
PREDICTIONS_PLOT = EVALUATION_DIR / "predictions.csv"
CONFUSION_PNG = EVALUATION_DIR / "confusion_matrix.png"
REGISTER_DECISION = EVALUATION_DIR / "register.json"
LABEL_COLUMN = "species"
EXPERIMENT_NAME = "iris-classifier"
REFERENCE_ARTIFACT = "reference/reference.parquet"
