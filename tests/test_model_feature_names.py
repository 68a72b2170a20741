"""scikit-learn's feature-name warnings, fixed at their cause (issue 16, point 29).

The model is fitted on a frame with the schema's column names, so MLflow's pyfunc (which
``mlflow models serve`` feeds with DataFrames) and anyone loading it with a frame get no
"X has feature names, but StandardScaler was fitted without feature names" warning. Our own
scoring path passes arrays already in schema order: the loader checks the names against
:data:`ml.schema.FEATURES` and scores arrays without the opposite warning.
"""

from __future__ import annotations

import warnings
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest

from ml import tracking
from ml.errors import RegistryUnavailable
from ml.model import load_model
from ml.predict import score
from ml.schema import FEATURES

ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3]])


def _no_warnings(call: Any) -> Any:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    messages = [str(w.message) for w in caught if "feature names" in str(w.message)]
    assert not messages, messages
    return result


def test_the_registered_model_knows_its_column_names_and_takes_frames_quietly(registry: Any) -> None:
    uri = f"models:/iris-classifier/{registry.champion_version}"
    mlflow.set_tracking_uri(registry.tracking_uri)
    estimator = mlflow.sklearn.load_model(uri)
    assert list(estimator.feature_names_in_) == list(FEATURES)
    _no_warnings(lambda: estimator.predict(pd.DataFrame(ROWS, columns=list(FEATURES))))
    pyfunc = mlflow.pyfunc.load_model(uri)  # what mlflow models serve calls
    _no_warnings(lambda: pyfunc.predict(pd.DataFrame(ROWS, columns=list(FEATURES))))


def test_our_scoring_path_scores_arrays_without_a_warning(registry: Any) -> None:
    model = load_model(
        tracking.client(registry.tracking_uri), f"models:/iris-classifier/{registry.champion_version}"
    )
    scores = _no_warnings(lambda: score(model, ROWS))
    assert list(scores.labels) == ["setosa", "versicolor"]


def test_a_model_fitted_on_other_columns_is_refused_at_load(fresh_registry: Any) -> None:
    from sklearn.linear_model import LogisticRegression

    frame = pd.DataFrame(ROWS, columns=["a", "b", "c", "d"])
    estimator = LogisticRegression().fit(pd.concat([frame] * 3), ["x", "y"] * 3)
    mlflow.set_tracking_uri(fresh_registry.tracking_uri)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(estimator, name="model", registered_model_name="iris-classifier")
    with pytest.raises(RegistryUnavailable, match="fitted on columns a, b, c, d"):
        load_model(
            fresh_registry.client,
            f"models:/iris-classifier/{info.registered_model_version}",
            with_reference=False,
        )
