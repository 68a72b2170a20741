"""Data tests: expectations on the data set, and the prepare stage's split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml.data import load_raw, split
from ml.params import PrepareParams
from ml.schema import FEATURES, LABELS


def test_raw_data_expectations() -> None:
    frame = load_raw()
    assert len(frame) == 150
    assert list(frame.columns) == [*FEATURES, "species"]
    assert np.isfinite(frame[list(FEATURES)].to_numpy()).all()
    assert (frame[list(FEATURES)] > 0).all().all()
    assert sorted(frame["species"].unique()) == list(LABELS)
    assert frame["species"].value_counts().tolist() == [50, 50, 50]


def test_split_is_deterministic_for_a_seed() -> None:
    frame = load_raw()
    a_train, a_test = split(frame, PrepareParams(test_size=0.2, seed=1))
    b_train, b_test = split(frame, PrepareParams(test_size=0.2, seed=1))
    pd.testing.assert_frame_equal(a_train, b_train)
    pd.testing.assert_frame_equal(a_test, b_test)
    c_train, _ = split(frame, PrepareParams(test_size=0.2, seed=2))
    assert not a_train.equals(c_train)


@pytest.mark.parametrize("test_size", [0.2, 0.3, 0.5])
def test_split_is_stratified_and_complete(test_size: float) -> None:
    frame = load_raw()
    train, test = split(frame, PrepareParams(test_size=test_size, seed=42))
    assert len(train) + len(test) == 150
    expected_test = round(150 * test_size)
    assert len(test) == expected_test
    counts = test["species"].value_counts()
    # Stratified: each class holds a third of the test rows (± 1 for rounding).
    assert all(abs(c - expected_test / 3) <= 1 for c in counts.tolist())
    merged = pd.concat([train, test]).sort_values([*FEATURES, "species"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(merged, frame.sort_values([*FEATURES, "species"]).reset_index(drop=True))
