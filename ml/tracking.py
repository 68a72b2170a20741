"""MLflow connection: tracking URI, experiment with a stable artifact location, fast failure."""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from ml import paths

# A registry that does not answer should fail in seconds, not after MLflow's minutes of retries;
# callers (the reload loop) retry with their own backoff.
_FAST_FAIL_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


def configure(tracking_uri: str) -> MlflowClient:
    """Point MLflow (tracking and registry) at ``tracking_uri`` and return a client for it."""
    for key, value in _FAST_FAIL_ENV.items():
        os.environ.setdefault(key, value)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def artifact_root(tracking_uri: str) -> str | None:
    """For a local SQLite store, artifacts live in ``mlartifacts/`` beside the database file."""
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri.removeprefix("sqlite:///"))
        return (db.resolve().parent / "mlartifacts").as_uri()
    return None  # a tracking server decides


def ensure_experiment(client: MlflowClient, tracking_uri: str, name: str = paths.EXPERIMENT_NAME) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    return str(client.create_experiment(name, artifact_location=artifact_root(tracking_uri)))
