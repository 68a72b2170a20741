"""MLflow connection: an explicit client per tracking URI, and a stable artifact location.

Nothing here changes process-wide state: no ``os.environ`` writes and no global tracking URI.
Callers pass the client they got from :func:`client`. The one exception is :func:`fluent_run_uri`,
a scope that the training stages need because MLflow's ``log_model`` only works inside a fluent
run; it restores the previous URIs on exit.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from ml import paths


def client(tracking_uri: str) -> MlflowClient:
    """A client for ``tracking_uri`` (tracking and registry at the same address)."""
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


#: MLflow's setters also write these, "so that subprocesses inherit them": a scope restores them
_URI_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@contextlib.contextmanager
def fluent_run_uri(tracking_uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at ``tracking_uri`` for the duration of the block only.

    On exit MLflow's global URIs are unset again and the two environment variables its setters
    write are put back exactly as they were (absent stays absent), so nothing leaks into the rest
    of the process or into its child processes."""
    saved = {name: os.environ.get(name) for name in _URI_ENV}
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]  # None: "not set", as at start
        mlflow.set_registry_uri(None)  # type: ignore[arg-type]
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


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
