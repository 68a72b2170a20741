"""Shared fixtures: a real MLflow registry (SQLite in a temp folder) with a trained champion."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ml import tracking
from ml.data import load_raw, split
from ml.params import PrepareParams, RegisterParams, TrainParams
from ml.settings import Settings

pytest_plugins = ["kafka_fixtures"]


def pytest_configure(config: pytest.Config) -> None:
    # The test process is an entry point too: the same MLflow HTTP retry defaults as
    # `iris-scorer`, so a registry that is down fails in seconds, not minutes.
    from iris_scorer.process import fail_fast_on_registry_outage

    fail_fast_on_registry_outage()
    # backfill's cache of verified model forms (ml.model_cache): one per test run, not ~/.cache
    import os
    import tempfile

    os.environ.setdefault("IRIS_MODEL_CACHE_DIR", tempfile.mkdtemp(prefix="iris-test-model-cache-"))


@dataclass
class Registry:
    """A real MLflow tracking store + registry with ``iris-classifier@champion`` set."""

    tracking_uri: str
    root: Path
    client: MlflowClient
    champion_version: str

    def settings(self, **overrides: object) -> Settings:
        values: dict[str, object] = {
            "mlflow_tracking_uri": self.tracking_uri,
            "reports_dir": self.root / "reports",
        }
        values.update(overrides)
        return Settings.model_validate(values)

    def train_version(
        self, classifier: str = "random_forest", *, promote: bool = False, seed: int = 7
    ) -> str:
        """Train, log and register one more version; move the alias only when ``promote``."""
        return train_and_register(self.tracking_uri, classifier=classifier, promote=promote, seed=seed)


def train_and_register(
    tracking_uri: str,
    *,
    classifier: str,
    promote: bool,
    seed: int = 42,
    hyperparameters: dict[str, object] | None = None,
    alias: str = "champion",
) -> str:
    from ml.evaluate import compute_metrics
    from ml.register import promote as promote_version
    from ml.register import register_run
    from ml.train import fit, log_training_run

    frame = load_raw()
    train, test = split(frame, PrepareParams(test_size=0.2, seed=42))
    params = TrainParams(classifier=classifier, seed=seed, hyperparameters=hyperparameters or {})  # type: ignore[arg-type]
    pipeline = fit(params, train)
    run = log_training_run(pipeline, params, train, tracking_uri, data_md5="test")
    predicted = pipeline.predict(test[["sepal_length", "sepal_width", "petal_length", "petal_width"]])
    metrics = compute_metrics(test["species"], predicted)
    client = tracking.client(tracking_uri)
    for key, value in metrics.items():
        client.log_metric(run["run_id"], key, value)
    # A gate of 0 and no comparison: registration only; the alias moves only when asked.
    gate = RegisterParams(model_name="iris-classifier", alias="champion", min_f1_macro=0.0)
    decision = register_run(client, gate.model_copy(update={"alias": "_candidate"}), run, metrics["f1_macro"])
    if promote:
        promote_version(client, "iris-classifier", decision.version, alias)
    return decision.version


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    version = train_and_register(uri, classifier="logistic_regression", promote=True)
    yield Registry(uri, root, tracking.client(uri), version)


@pytest.fixture
def fresh_registry(tmp_path: Path) -> Registry:
    """A registry of its own, for tests that move aliases."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    version = train_and_register(uri, classifier="logistic_regression", promote=True)
    return Registry(uri, tmp_path, tracking.client(uri), version)


@pytest.fixture(scope="session")
def duel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A registry with two different models: a logistic regression as ``@champion`` and a random
    forest as ``@challenger`` (they disagree on some ambiguous rows)."""
    from ml.register import promote as promote_version

    root = tmp_path_factory.mktemp("mlflow-duel")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    version = train_and_register(uri, classifier="logistic_regression", promote=True)
    client = tracking.client(uri)
    rival = train_and_register(uri, classifier="random_forest", promote=False, seed=3)
    promote_version(client, "iris-classifier", rival, "challenger")
    yield Registry(uri, root, client, version)
