"""DVC stage ``train``: fit scaling + classifier into ``data/model/model.pkl`` and its summary.

The stage's outputs are deterministic (same data and params, same bytes), so ``dvc.lock`` does
not change on a re-run. Logging to MLflow is a registry side effect and happens in ``register``
(:func:`log_training_run`), which writes no cached output."""

from __future__ import annotations

import json
import logging
import pickle
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import infer_signature
from sklearn.base import ClassifierMixin, clone
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from ml import paths, tracking
from ml.data import file_md5
from ml.errors import ParamsError
from ml.params import TrainParams, read_section
from ml.schema import FEATURES

log = logging.getLogger(__name__)

_PROBE_X = np.array(
    [
        [5.0, 3.4, 1.5, 0.2],
        [4.8, 3.1, 1.4, 0.1],
        [5.9, 2.8, 4.3, 1.3],
        [6.1, 2.9, 4.6, 1.4],
        [6.5, 3.0, 5.5, 2.0],
        [7.1, 3.1, 5.9, 2.2],
    ]
)
_PROBE_Y = np.array(["setosa", "setosa", "versicolor", "versicolor", "virginica", "virginica"])

_CLASSIFIERS: dict[str, type[ClassifierMixin]] = {
    "logistic_regression": LogisticRegression,
    "random_forest": RandomForestClassifier,
}


def build_pipeline(params: TrainParams) -> Pipeline:
    """The estimator described by ``params``; invalid hyper-parameters raise :class:`ParamsError`."""
    cls = _CLASSIFIERS[params.classifier]
    hyper = params.classifier_params()
    key = "train.hyperparameters"
    known = cls().get_params()
    unknown = sorted(set(hyper) - set(known))
    if unknown:
        raise ParamsError(f"params.yaml: {key}.{unknown[0]} is not a parameter of {cls.__name__}.")
    classifier = cls(**hyper, random_state=params.seed)
    try:
        # scikit-learn checks hyper-parameters when fitting, before anything else: one fit of a
        # copy on a six-row probe (two per class) is the public way to check them now.
        clone(classifier).fit(_PROBE_X, _PROBE_Y)
    except (ValueError, TypeError) as exc:
        raise ParamsError(f"params.yaml: {key} is invalid: {exc}") from None
    return Pipeline([("scale", StandardScaler()), ("classifier", classifier)])


def fit(params: TrainParams, train: pd.DataFrame) -> Pipeline:
    """Fit on the frame, so the model knows its column names: MLflow's pyfunc and anyone who
    loads it score frames without scikit-learn's feature-name warning. Our own scoring path
    passes arrays in schema order (:func:`ml.model.load_model` checks the names)."""
    pipeline = build_pipeline(params)
    pipeline.fit(train[list(FEATURES)], train[paths.LABEL_COLUMN].to_numpy())
    return pipeline


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def log_training_run(
    pipeline: Pipeline,
    params: TrainParams,
    train: pd.DataFrame,
    tracking_uri: str,
    data_md5: str,
    *,
    metrics: dict[str, float] | None = None,
    artifacts: tuple[Path, ...] = (),
) -> dict[str, Any]:
    """Log one MLflow run: params, model (with signature and example), reference data, lineage
    tags, and the evaluation's ``metrics`` and ``artifacts`` (files logged under ``evaluation/``)."""
    client = tracking.client(tracking_uri)
    experiment_id = tracking.ensure_experiment(client, tracking_uri)
    features = train[list(FEATURES)]
    with tracking.fluent_run_uri(tracking_uri), mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_params(
            {"classifier": params.classifier, "seed": params.seed, **params.classifier_params()}
        )
        mlflow.set_tags({"git_commit": git_commit(), "dvc_data_md5": data_md5, "stage": "train"})
        mlflow.log_metric(
            "train_accuracy", float(pipeline.score(features, train[paths.LABEL_COLUMN].to_numpy()))
        )
        signature = infer_signature(features, pipeline.predict(features))
        info = mlflow.sklearn.log_model(
            pipeline,
            name="model",
            signature=signature,
            input_example=features.head(3),
            serialization_format="cloudpickle",
        )
        # The training features are the drift reference; they live in the same run as the model,
        # so a model version and its reference always travel together.
        with tempfile.TemporaryDirectory() as tmp:
            ref = Path(tmp) / Path(paths.REFERENCE_ARTIFACT).name
            features.to_parquet(ref, index=False)
            mlflow.log_artifact(str(ref), artifact_path=str(Path(paths.REFERENCE_ARTIFACT).parent))
        if metrics:
            mlflow.log_metrics(metrics)
        for artifact in artifacts:
            mlflow.log_artifact(str(artifact), artifact_path="evaluation")
    return {"run_id": run.info.run_id, "model_uri": info.model_uri, "experiment_id": experiment_id}


def main() -> None:
    params: TrainParams = read_section("train")
    build_pipeline(params)  # fail on bad params first, naming the key
    train = pd.read_csv(paths.TRAIN_DATA)
    pipeline = fit(params, train)
    accuracy = float(pipeline.score(train[list(FEATURES)], train[paths.LABEL_COLUMN].to_numpy()))
    paths.MODEL_FILE.parent.mkdir(parents=True, exist_ok=True)
    paths.MODEL_FILE.write_bytes(pickle.dumps(pipeline, protocol=5))
    summary = {
        "classifier": params.classifier,
        "seed": params.seed,
        "hyperparameters": params.classifier_params(),
        "train_accuracy": accuracy,
        "train_rows": len(train),
        "data_md5": file_md5(paths.TRAIN_DATA),
    }
    paths.TRAIN_SUMMARY.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    print(f"train: classifier={params.classifier} train_accuracy={accuracy:.4f} -> {paths.MODEL_FILE}")


def load_fitted(path: Path = paths.MODEL_FILE) -> Pipeline:
    """The pipeline the ``train`` stage wrote (this repository's own file)."""
    pipeline: Pipeline = pickle.loads(path.read_bytes())  # noqa: S301 - written by our train stage
    return pipeline


if __name__ == "__main__":
    from ml.stage import run_stage

    run_stage(main)
