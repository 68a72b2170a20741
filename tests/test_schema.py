"""The shared request schema: one table of cases, each naming the field at fault."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ml.errors import ValidationFailed
from ml.schema import RecordInvalid, check_columns, check_record, check_records, row_errors

GOOD = {"id": "r-1", "sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def with_(**changes: object) -> dict[str, object]:
    record = dict(GOOD)
    for key, value in changes.items():
        if value is _DROP:
            record.pop(key)
        else:
            record[key] = value
    return record


_DROP = object()


def test_valid_record() -> None:
    record = check_record(with_(sent_at="2026-11-26T10:00:00Z", extra="ignored"))
    assert record.id == "r-1"
    assert record.features == (5.1, 3.5, 1.4, 0.2)
    assert record.sent_at == "2026-11-26T10:00:00Z"


def test_integers_are_numbers() -> None:
    assert check_record(with_(sepal_length=5)).features[0] == 5.0


@pytest.mark.parametrize(
    ("record", "field"),
    [
        (with_(id=_DROP), "id"),  # id required on the stream
        (with_(id=""), "id"),  # empty id
        (with_(id="x" * 129), "id"),  # one over the limit
        (with_(id=42), "id"),  # not a string
        (with_(sepal_length=_DROP), "sepal_length"),  # missing feature
        (with_(sepal_width="3.5"), "sepal_width"),  # numeric string is still a string
        (with_(petal_length=True), "petal_length"),  # booleans are not numbers
        (with_(petal_width=None), "petal_width"),  # null
        (with_(petal_width=math.nan), "petal_width"),  # NaN from a lenient decoder
        (with_(petal_width=math.inf), "petal_width"),  # Infinity
        (with_(sepal_length=-0.1), "sepal_length"),  # negative
        (with_(sepal_length=100.5), "sepal_length"),  # above the documented bound
        (with_(sepal_length=[5.1]), "sepal_length"),  # array
        (with_(sepal_length={"v": 5.1}), "sepal_length"),  # nested object
        (with_(sent_at=12), "sent_at"),  # sent_at must be a string
    ],
)
def test_invalid_record_names_the_field(record: dict[str, object], field: str) -> None:
    with pytest.raises(RecordInvalid) as info:
        check_record(record)
    assert field in [e.loc[0] for e in info.value.errors]
    assert field in str(info.value)


@pytest.mark.parametrize("value", [None, [], "text", 3, True])
def test_non_object_is_rejected(value: object) -> None:
    with pytest.raises(RecordInvalid, match="must be a JSON object"):
        check_record(value)


def test_boundaries_are_inclusive() -> None:
    assert check_record(with_(sepal_length=0.0, petal_width=100.0)).features == (0.0, 3.5, 1.4, 100.0)
    assert check_record(with_(id="x" * 128)).id == "x" * 128


def test_id_optional_when_not_required() -> None:
    assert check_record(with_(id=_DROP), require_id=False).id is None


def test_batch_errors_carry_the_index() -> None:
    with pytest.raises(ValidationFailed) as info:
        check_records([GOOD, with_(petal_width=-1), GOOD, with_(sepal_length=_DROP)])
    locs = [tuple(e["loc"]) for e in info.value.detail]
    assert locs == [(1, "petal_width"), (3, "sepal_length")]


def test_columns_mask_invalid_rows() -> None:
    columns = {
        "sepal_length": [5.1, -1.0, 5.0, np.nan],
        "sepal_width": [3.5, 3.0, 3.0, 3.0],
        "petal_length": [1.4, 1.4, 101.0, 1.0],
        "petal_width": [0.2, 0.2, 0.2, 0.2],
    }
    matrix, valid = check_columns(columns)
    assert matrix.shape == (4, 4)
    assert valid.tolist() == [True, False, False, False]


def test_columns_missing_is_named() -> None:
    with pytest.raises(ValidationFailed, match="petal_width"):
        check_columns({"sepal_length": [1], "sepal_width": [1], "petal_length": [1]})


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abc", "is not a number: 'abc'"),  # text is quoted
        ("3.5", "is not a number: '3.5'"),  # numeric text is still text in JSON
        ("y" * 100, "is not a number: '" + "y" * 39 + "…'"),  # long text is cut
    ],
)
def test_text_in_a_number_field_is_quoted(value: str, message: str) -> None:
    with pytest.raises(RecordInvalid) as info:
        check_record(with_(sepal_width=value))
    assert [e.msg for e in info.value.errors] == [message]


def test_row_errors_quote_the_text_a_file_held() -> None:
    errors = row_errors([math.nan, 3.5, -1.0, 0.2], texts={"sepal_length": "abc"})
    assert [e.describe() for e in errors] == [
        "sepal_length: is not a number: 'abc'",
        "petal_length: must be >= 0, got -1",
    ]


def test_stream_dead_letter_detail_quotes_the_value() -> None:
    from ml.messages import decode_batch

    value = b'{"id": "r", "sepal_length": "abc", "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}'
    (rejected,) = decode_batch([value], 4096).bad
    assert rejected.detail == "sepal_length: is not a number: 'abc'"
