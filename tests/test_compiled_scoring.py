"""The NumPy form of a fitted pipeline (ml/compiled.py) answers what scikit-learn answers, or is not used."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from ml.compiled import compile_estimator, probe_rows, verified

RNG = np.random.default_rng(7)
X = np.vstack([RNG.normal(m, 0.4, size=(40, 4)) for m in (1.0, 3.0, 5.0)])
Y3 = np.repeat(np.array(["setosa", "versicolor", "virginica"]), 40)
Y2 = np.repeat(np.array(["no", "yes"]), 60)


def fitted(*steps, y=Y3):
    return Pipeline([(f"s{i}", s) for i, s in enumerate(steps)]).fit(X, y)


@pytest.mark.parametrize(
    "estimator",
    [
        fitted(StandardScaler(), LogisticRegression(random_state=0)),
        fitted(StandardScaler(), LogisticRegression(C=0.01, random_state=0)),
        fitted(StandardScaler(), LogisticRegression(random_state=0), y=Y2),
        fitted(StandardScaler(with_mean=False), LogisticRegression(random_state=0)),
        fitted(LogisticRegression(random_state=0, max_iter=500)),
        LogisticRegression(random_state=0, max_iter=500).fit(X, Y3),
    ],
    ids=["multinomial", "regularised", "binary", "no-centring", "no-scaler", "bare"],
)
def test_the_numpy_form_equals_predict_proba(estimator):
    compiled = verified(estimator, 4)
    assert compiled is not None
    rows = np.vstack([probe_rows(estimator, 4), X, [[0.0, 0.0, 0.0, 0.0]], [[1e6, -1e6, 1e6, -1e6]]])
    expected = estimator.predict_proba(rows)
    got = compiled(rows.copy())
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert np.array_equal(got.argmax(axis=1), expected.argmax(axis=1))
    one = compiled(rows[:1].copy())
    np.testing.assert_allclose(one, expected[:1], rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "estimator",
    [
        fitted(StandardScaler(), RandomForestClassifier(n_estimators=5, random_state=0)),
        fitted(FunctionTransformer(np.log1p), LogisticRegression(random_state=0)),
    ],
    ids=["random-forest", "unknown-step"],
)
def test_other_pipelines_are_scored_by_scikit_learn(estimator):
    assert compile_estimator(estimator) is None
    assert verified(estimator, 4) is None


def test_a_compiled_form_that_disagrees_is_not_used(monkeypatch):
    estimator = fitted(StandardScaler(), LogisticRegression(random_state=0))
    estimator.steps[-1][1].coef_ = estimator.steps[-1][1].coef_.copy()
    real = estimator.predict_proba
    monkeypatch.setattr(estimator, "predict_proba", lambda x: real(x)[:, ::-1].copy(), raising=False)
    assert verified(estimator, 4) is None


def test_the_served_model_uses_the_numpy_form_and_says_so(registry):
    from ml.model import load_model
    from ml.predict import score

    model = load_model(registry.client, "models:/iris-classifier@champion", with_reference=False)
    assert model.compiled is not None
    assert model.describe()["scoring"] == "numpy"
    rows = np.array([[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3]])
    scores = score(model, rows)
    np.testing.assert_allclose(scores.probabilities, model.estimator.predict_proba(rows), rtol=0, atol=1e-12)
    assert scores.labels.tolist() == ["setosa", "versicolor", "virginica"]
