"""Property tests for the shared validation and the one scoring function (Hypothesis)."""

from __future__ import annotations

import math

import numpy as np
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ml.model import load_model
from ml.predict import score
from ml.schema import FEATURE_MAX, FEATURE_MIN, FEATURES, RecordInvalid, RecordModel, check_record

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
)
feature_values = st.one_of(json_scalars, st.floats(min_value=FEATURE_MIN, max_value=FEATURE_MAX))
records = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.text(min_size=0, max_size=130), st.integers(), st.none()),
        **{name: feature_values for name in FEATURES},
        "sent_at": st.one_of(st.none(), st.text(max_size=70), st.integers()),
        "extra": json_scalars,
    },
)


@given(records)
@settings(max_examples=400, deadline=None)
def test_any_record_validates_to_finite_features_or_names_a_field(record: dict[str, object]) -> None:
    try:
        valid = check_record(record, require_id=False)
    except RecordInvalid as exc:
        assert exc.errors
        for error in exc.errors:
            assert error.loc and error.loc[0] in {"id", *FEATURES, "sent_at"}
        return
    assert all(math.isfinite(v) and FEATURE_MIN <= v <= FEATURE_MAX for v in valid.features)


@given(records)
@settings(max_examples=400, deadline=None)
def test_fast_validator_agrees_with_the_openapi_model(record: dict[str, object]) -> None:
    try:
        check_record(record, require_id=False)
        fast_ok = True
    except RecordInvalid:
        fast_ok = False
    try:
        RecordModel.model_validate(record)
        model_ok = True
    except pydantic.ValidationError:
        model_ok = False
    assert fast_ok == model_ok, record


rows = st.lists(
    st.tuples(*[st.floats(min_value=0.0, max_value=10.0, allow_nan=False) for _ in FEATURES]),
    min_size=1,
    max_size=40,
)


@pytest.fixture(scope="module")
def champion(registry):
    return load_model(registry.client, "models:/iris-classifier@champion", with_reference=False)


@given(rows)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_scoring_a_batch_equals_scoring_its_rows(champion, batch: list[tuple[float, ...]]) -> None:
    matrix = np.array(batch, dtype=np.float64)
    together = score(champion, matrix)
    for i, row in enumerate(matrix):
        alone = score(champion, row.reshape(1, -1))
        assert alone.labels[0] == together.labels[i]
        np.testing.assert_allclose(alone.probabilities[0], together.probabilities[i], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(together.probabilities.sum(axis=1), 1.0, rtol=1e-9)


@given(records, st.booleans())
@settings(max_examples=600, deadline=None)
def test_the_float_fast_path_accepts_only_what_the_full_check_accepts_and_alike(
    record: dict[str, object], require_id: bool
) -> None:
    from ml.schema import _check_fully, _valid_floats

    fast = _valid_floats(record, require_id)
    try:
        full = _check_fully(record, require_id)
    except RecordInvalid:
        assert fast is None  # the fast path never accepts what the full check refuses
        return
    assert fast is None or fast == full


@given(
    st.floats(min_value=0.0, max_value=1.0) | st.sampled_from([0.5e-6, 1.5e-6, 2.5e-6, 0.1234565, 0.9999995])
)
@settings(max_examples=2000, deadline=None)
def test_one_row_rounding_is_numpys_bit_for_bit(p: float) -> None:
    from ml.predict import round6

    assert round6(p) == float(np.round(np.float64(p), 6))
