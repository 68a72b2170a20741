"""Bulk decode + validate of raw message bytes (ml.messages)."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ml.messages import REASONS, decode_batch, encode_predictions
from ml.schema import Record

GOOD = b'{"id": "r-1", "sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}'
MAX = 4096


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (None, "empty"),  # tombstone
        (b"", "empty"),  # zero bytes
        (b"{" + b" " * MAX + b"}", "too_large"),  # one byte over the limit... and more
        (b"{not json", "invalid_json"),  # broken syntax
        (b'{"id": "r", "sepal_length": NaN}', "invalid_json"),  # NaN literal is not JSON
        (b'{"id": "r", "sepal_length": Infinity}', "invalid_json"),  # nor is Infinity
        (b'{"id": "\xff"}', "invalid_json"),  # invalid UTF-8
        (b"[" * 1100 + b"]" * 1100, "invalid_json"),  # nesting deeper than orjson's limit (1024)
        (b'{"a": 1} trailing', "invalid_json"),  # two documents
        (b"1e400", "invalid_json"),  # a number that overflows to infinity
        (b"[5.1, 3.5, 1.4, 0.2]", "validation_error"),  # not an object
        (GOOD.replace(b'"id": "r-1", ', b""), "validation_error"),  # id is required on the stream
        (GOOD.replace(b"5.1", b"-5.1"), "validation_error"),  # negative
        (GOOD.replace(b"5.1", b'"5.1"'), "validation_error"),  # string value
        (GOOD.replace(b"5.1", b"true"), "validation_error"),  # boolean
        (GOOD.replace(b', "petal_width": 0.2', b""), "validation_error"),  # missing field
    ],
)
def test_each_bad_kind_has_its_reason(value: bytes | None, code: str) -> None:
    records, good_idx, bad = decode_batch([value], MAX)
    assert (records, good_idx) == ([], [])
    ((index, reason, detail),) = bad
    assert (index, reason) == (0, code)
    assert detail and len(detail) <= 500


def test_exactly_max_bytes_is_accepted() -> None:
    value = GOOD[:-1] + b" " * (MAX - len(GOOD)) + b"}"
    assert len(value) == MAX
    assert len(decode_batch([value], MAX).records) == 1


def test_mixed_batch_keeps_positions() -> None:
    values = [GOOD, b"x", None, GOOD.replace(b"r-1", b"r-2")]
    records, good_idx, bad = decode_batch(values, MAX)
    assert good_idx == [0, 3]
    assert [r.id for r in records] == ["r-1", "r-2"]
    assert [(b.idx, b.code) for b in bad] == [(1, "invalid_json"), (2, "empty")]
    assert records[0] == Record("r-1", (5.1, 3.5, 1.4, 0.2), None)


def test_validation_detail_names_the_field() -> None:
    (rejected,) = decode_batch([GOOD.replace(b"3.5", b"-1")], MAX).bad
    assert "sepal_width" in rejected.detail


@given(st.lists(st.one_of(st.none(), st.binary(max_size=64)), max_size=20))
def test_every_message_is_either_good_or_bad(values: list[bytes | None]) -> None:
    records, good_idx, bad = decode_batch(values, MAX)
    assert len(records) == len(good_idx)
    assert sorted(good_idx + [b.idx for b in bad]) == list(range(len(values)))
    assert {b.code for b in bad} <= set(REASONS)


def test_encode_predictions_round_trips() -> None:
    predictions = [{"id": "r-1", "label": "setosa", "probabilities": {"setosa": 1.0}}]
    assert [orjson.loads(b) for b in encode_predictions(predictions)] == predictions
