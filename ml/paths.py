"""Where the pipeline reads and writes, relative to the repository root (DVC runs stages there)."""

from __future__ import annotations

from pathlib import Path

RAW_DATA = Path("data/raw/iris.csv")
TRAIN_DATA = Path("data/processed/train.csv")
TEST_DATA = Path("data/processed/test.csv")
#: The fitted pipeline and its training summary (``train``): deterministic, no run ids.
MODEL_FILE = Path("data/model/model.pkl")
TRAIN_SUMMARY = Path("data/model/train.json")
#: Metrics and plot data, tracked by git (``cache: false``) so ``dvc metrics diff HEAD`` works.
EVALUATION_DIR = Path("evaluation")
METRICS = EVALUATION_DIR / "metrics.json"
PREDICTIONS_PLOT = EVALUATION_DIR / "predictions.csv"
CONFUSION_PNG = EVALUATION_DIR / "confusion_matrix.png"
#: What ``register`` did to the registry: not a DVC output (run ids and versions change).
REGISTER_DECISION = Path("data/registry/register.json")
LABEL_COLUMN = "species"
EXPERIMENT_NAME = "iris-classifier"
REFERENCE_ARTIFACT = "reference/reference.parquet"
