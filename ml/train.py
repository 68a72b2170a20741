"""DVC stage ``train``: fit scaling + classifier, log params, model and reference data to MLflow."""

from __future__ import annotations

import json
import logging
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
from ml.settings import load_settings

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
    key = f"train.hyperparameters.{params.classifier}"
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
    """Fit on a plain matrix: the model then takes arrays, which keeps the scoring path free of
    DataFrame construction (MLflow's pyfunc still accepts frames through the signature)."""
    pipeline = build_pipeline(params)
    pipeline.fit(train[list(FEATURES)].to_numpy(), train[paths.LABEL_COLUMN].to_numpy())
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
    pipeline: Pipeline, params: TrainParams, train: pd.DataFrame, tracking_uri: str, data_md5: str
) -> dict[str, Any]:
    """Log one MLflow run: params, model (with signature and example), reference data, lineage tags."""
    client = tracking.client(tracking_uri)
    experiment_id = tracking.ensure_experiment(client, tracking_uri)
    features = train[list(FEATURES)]
    with tracking.fluent_run_uri(tracking_uri), mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_params(
            {"classifier": params.classifier, "seed": params.seed, **params.classifier_params()}
        )
        mlflow.set_tags({"git_commit": git_commit(), "dvc_data_md5": data_md5, "stage": "train"})
        matrix = features.to_numpy()
        mlflow.log_metric(
            "train_accuracy", float(pipeline.score(matrix, train[paths.LABEL_COLUMN].to_numpy()))
        )
        signature = infer_signature(features, pipeline.predict(matrix))
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
    return {"run_id": run.info.run_id, "model_uri": info.model_uri, "experiment_id": experiment_id}


def main() -> None:
    params: TrainParams = read_section("train")
    pipeline = build_pipeline(params)  # fail on bad params before touching MLflow
    settings = load_settings()
    train = pd.read_csv(paths.TRAIN_DATA)
    pipeline = fit(params, train)
    result = log_training_run(
        pipeline, params, train, settings.mlflow_tracking_uri, file_md5(paths.TRAIN_DATA)
    )
    paths.TRAIN_RUN.parent.mkdir(parents=True, exist_ok=True)
    paths.TRAIN_RUN.write_text(json.dumps(result, indent=2) + "\n")
    print(f"train: classifier={params.classifier} run_id={result['run_id']}")


if __name__ == "__main__":
    from ml.stage import run_stage

    run_stage(main)
