from __future__ import annotations

import numpy as np

from ml.model import load_model
from ml.predict import score


def test_champion_fixture_scores_setosa(registry) -> None:
    model = load_model(registry.client, "models:/iris-classifier@champion")
    assert model.version == registry.champion_version
    scores = score(model, np.array([[5.1, 3.5, 1.4, 0.2]]))
    assert scores.labels.tolist() == ["setosa"]
    assert model.reference is not None and len(model.reference) == 120
