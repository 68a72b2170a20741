"""One champion for every scenario: a logistic regression trained into a temporary MLflow registry."""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.harness import REPO_ROOT, VENV_BIN


@dataclass(frozen=True)
class BenchRegistry:
    root: Path
    tracking_uri: str
    version: str

    @property
    def version_uri(self) -> str:
        return f"models:/iris-classifier/{self.version}"

    def env(self) -> dict[str, str]:
        """Environment for child processes: our settings and MLflow's both point at this registry."""
        return {
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            "IRIS_MODEL_URI": "models:/iris-classifier@champion",
            "IRIS_REPORTS_DIR": str(self.root / "reports"),
            "IRIS_LOG_LEVEL": "WARNING",
            "IRIS_API_KEY": "",  # no auth in benchmarks, whatever the calling shell has
            "PYTHONPATH": str(REPO_ROOT),
            # `mlflow models serve` execs `uvicorn` from PATH: the venv's, without activating it
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        }


def create_registry() -> BenchRegistry:
    """Train and promote with the same helper as the test suite (tests/conftest.py)."""
    root = Path(tempfile.mkdtemp(prefix="iris-bench-mlflow-"))
    uri = f"sqlite:///{root / 'mlflow.db'}"
    tests_dir = str(REPO_ROOT / "tests")
    if tests_dir not in sys.path:
        sys.path.insert(0, tests_dir)
    from conftest import train_and_register

    version = train_and_register(uri, classifier="logistic_regression", promote=True)
    # @challenger for the shadow scenario: another logistic regression (scored in NumPy, as the champion)
    train_and_register(
        uri, classifier="logistic_regression", promote=True, hyperparameters={"C": 0.05}, alias="challenger"
    )
    return BenchRegistry(root, uri, version)
