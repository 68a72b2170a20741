"""Model tests: the pipeline reaches the quality gate and behaves like an Iris classifier."""

from __future__ import annotations

import numpy as np
import pytest

from ml.data import load_raw, split
from ml.errors import ParamsError
from ml.evaluate import compute_metrics
from ml.model import take_arrays
from ml.params import PrepareParams, TrainParams, read_section
from ml.schema import FEATURES
from ml.train import build_pipeline, fit

OTHER = {
    "logistic_regression": {"C": 1.0, "max_iter": 500},
    "random_forest": {"n_estimators": 100, "max_depth": 5},
}


@pytest.fixture(scope="module", params=["logistic_regression", "random_forest"])
def trained(request: pytest.FixtureRequest):
    train, test = split(load_raw(), PrepareParams(test_size=0.2, seed=42))
    # The repository's params.yaml for its classifier; the other one with the values its comment gives.
    params = read_section("train")
    if params.classifier != request.param:
        params = TrainParams(classifier=request.param, seed=params.seed, hyperparameters=OTHER[request.param])
    pipeline = fit(params, train)
    assert list(pipeline.feature_names_in_) == list(FEATURES)  # the registered artifact keeps names
    take_arrays(pipeline, "the test model")  # as ml.model.load_model does for the scoring path
    return pipeline, test


def test_reaches_the_quality_gate(trained) -> None:
    pipeline, test = trained
    predicted = pipeline.predict(test[list(FEATURES)].to_numpy())
    metrics = compute_metrics(test["species"], predicted)
    assert metrics["f1_macro"] >= 0.9
    assert set(metrics) == {"accuracy", "precision_macro", "recall_macro", "f1_macro"}


def test_setosa_typical_flower_is_setosa(trained) -> None:
    pipeline, _ = trained
    assert pipeline.predict(np.array([[5.0, 3.4, 1.5, 0.2]]))[0] == "setosa"
    assert pipeline.predict(np.array([[6.7, 3.0, 5.6, 2.2]]))[0] == "virginica"


def test_small_noise_does_not_flip_confident_predictions(trained) -> None:
    pipeline, test = trained
    x = test[list(FEATURES)].to_numpy()
    proba = pipeline.predict_proba(x)
    confident = proba.max(axis=1) >= 0.9
    assert confident.sum() >= 10
    rng = np.random.default_rng(0)
    noisy = x[confident] + rng.normal(0, 0.02, size=x[confident].shape)
    assert (pipeline.predict(noisy) == pipeline.predict(x[confident])).all()


def test_longer_petals_move_towards_virginica(trained) -> None:
    pipeline, _ = trained
    base = np.array([[6.0, 2.9, 4.5, 1.5]])
    longer = base + np.array([[0.0, 0.0, 1.5, 0.8]])
    virginica = list(pipeline.classes_).index("virginica")
    assert pipeline.predict_proba(longer)[0, virginica] > pipeline.predict_proba(base)[0, virginica]


@pytest.mark.parametrize(
    ("params", "key"),
    [
        (
            TrainParams(classifier="logistic_regression", hyperparameters={"C": -1}),
            "C",
        ),
        (
            TrainParams(classifier="random_forest", hyperparameters={"n_estimators": "many"}),
            "n_estimators",
        ),
        (TrainParams(classifier="random_forest", hyperparameters={"depth": 3}), "depth"),
    ],
)
def test_invalid_hyperparameter_names_the_key(params: TrainParams, key: str) -> None:
    with pytest.raises(ParamsError) as info:
        build_pipeline(params)
    assert "train.hyperparameters" in str(info.value)
    assert key in str(info.value)
