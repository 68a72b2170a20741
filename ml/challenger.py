"""A challenger trained beside the champion: the pipeline's classifier with other hyper-parameters
(``iris-scorer demo``; a real challenger comes out of ``dvc exp run`` and ``promote --alias
challenger``)."""

from __future__ import annotations

from typing import Any

from ml import paths, tracking
from ml.data import load_raw, split
from ml.evaluate import compute_metrics
from ml.params import PrepareParams, RegisterParams, TrainParams, read_section
from ml.register import Decision, register_run
from ml.schema import FEATURES
from ml.train import fit, log_training_run


def train_challenger(
    tracking_uri: str, hyperparameters: dict[str, Any], *, alias: str = "challenger"
) -> Decision:
    """Train the configured classifier with other ``hyperparameters`` on the pipeline's split of the
    raw data, log it, register it and point ``alias`` at it when it passes the quality gate (the
    demo's challenger; a real one comes out of ``dvc exp run``). Returns the registration decision."""
    prepare: PrepareParams = read_section("prepare")
    register: RegisterParams = read_section("register")
    base: TrainParams = read_section("train")
    train, test = split(load_raw(), prepare)
    train_params = base.model_copy(update={"hyperparameters": hyperparameters})
    pipeline = fit(train_params, train)
    run = log_training_run(pipeline, train_params, train, tracking_uri, data_md5="challenger")
    metrics = compute_metrics(test[paths.LABEL_COLUMN], pipeline.predict(test[list(FEATURES)]))
    client = tracking.client(tracking_uri)
    for key, value in metrics.items():
        client.log_metric(run["run_id"], key, value)
    return register_run(client, register.model_copy(update={"alias": alias}), run, metrics["f1_macro"])
