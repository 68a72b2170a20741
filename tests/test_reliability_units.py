"""Fast checks behind the reliability suite: the poison corpus codes and DLQ records of tombstones."""

from __future__ import annotations

import pytest
from test_reliability_stream import POISON_LIMIT, poison_corpus

from consumers.handler import dlq_record
from ml.messages import Rejected, decode_batch


class Raw:
    def __init__(self, key: bytes | None, value: bytes | None) -> None:
        self.topic, self.partition, self.offset, self.key, self.value = "iris.requests", 2, 7, key, value


@pytest.mark.parametrize(
    ("name", "key", "value", "code"), poison_corpus(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_every_poison_message_gets_its_code(
    name: str, key: bytes | None, value: bytes | None, code: str
) -> None:
    bad = decode_batch([value], POISON_LIMIT).bad
    assert [r.code for r in bad] == [code], name


def test_duplicate_keys_keep_the_last_value() -> None:
    body = b'{"id": "d", "sepal_length": -1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2, "sepal_length": 5.1}'
    decoded = decode_batch([body], POISON_LIMIT)
    assert not decoded.bad and decoded.records[0].features[0] == 5.1


def test_a_keyless_tombstone_becomes_a_producible_dlq_record() -> None:
    record = dlq_record("iris.dlq", Raw(None, None), Rejected(0, "empty", "tombstone"))
    assert record.key is None and record.value == b""  # Kafka clients refuse key=None and value=None
    assert ("tombstone", b"1") in (record.headers or [])


def test_a_keyed_tombstone_keeps_its_none_value() -> None:
    record = dlq_record("iris.dlq", Raw(b"k", None), Rejected(0, "empty", "tombstone"))
    assert record.key == b"k" and record.value is None
    assert ("tombstone", b"1") in (record.headers or [])


def test_an_empty_value_is_not_marked_as_a_tombstone() -> None:
    record = dlq_record("iris.dlq", Raw(None, b""), Rejected(0, "empty", "empty"))
    assert record.value == b"" and "tombstone" not in dict(record.headers or [])
