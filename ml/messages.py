"""Raw Kafka message bytes ↔ records and predictions, a whole batch at a time.

:func:`decode_batch` decodes and validates each message on its own, so one bad message never
spoils its batch: valid ones become :class:`~ml.schema.Record` values (with their position in
the batch), bad ones a :class:`Rejected` reason for the dead-letter queue. Reason codes:

- ``empty``: the value is missing (a tombstone, ``None``) or zero bytes long;
- ``too_large``: the value is longer than ``max_bytes`` (``IRIS_MAX_MESSAGE_BYTES``);
- ``invalid_json``: not one JSON document in UTF-8 (this includes invalid UTF-8, ``NaN`` or
  ``Infinity`` literals, numbers that overflow a double such as ``1e999``, and nesting deeper
  than orjson's limit; integers beyond 64 bits are read as floats and so fail validation);
- ``validation_error``: JSON, but not a valid request (see :func:`ml.schema.check_record`).

:func:`encode_predictions` is the other direction: ``iris.predictions`` dicts to JSON bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import orjson

from ml.schema import Record, RecordInvalid, check_record

EMPTY = "empty"
TOO_LARGE = "too_large"
INVALID_JSON = "invalid_json"
VALIDATION_ERROR = "validation_error"
REASONS: tuple[str, ...] = (EMPTY, TOO_LARGE, INVALID_JSON, VALIDATION_ERROR)

DETAIL_MAX_CHARS = 500


class Rejected(NamedTuple):
    """Why the message at position ``idx`` of a batch cannot be scored."""

    idx: int
    code: str
    detail: str


class DecodedBatch(NamedTuple):
    """``records[i]`` came from message ``good_idx[i]``; ``bad`` lists the others."""

    records: list[Record]
    good_idx: list[int]
    bad: list[Rejected]


def decode_batch(values: Sequence[bytes | None], max_bytes: int) -> DecodedBatch:
    """Decode and validate every message value of a batch (ids required)."""
    records: list[Record] = []
    good_idx: list[int] = []
    bad: list[Rejected] = []
    loads = orjson.loads
    for index, value in enumerate(values):
        if not value:
            detail = "tombstone: the message has no value" if value is None else "the message value is empty"
            bad.append(Rejected(index, EMPTY, detail))
            continue
        if len(value) > max_bytes:
            bad.append(Rejected(index, TOO_LARGE, f"{len(value)} bytes > limit of {max_bytes} bytes"))
            continue
        try:
            obj = loads(value)
        except orjson.JSONDecodeError as exc:
            bad.append(Rejected(index, INVALID_JSON, _clip(str(exc))))
            continue
        try:
            records.append(check_record(obj, require_id=True))
        except RecordInvalid as exc:
            bad.append(Rejected(index, VALIDATION_ERROR, _clip(str(exc))))
            continue
        good_idx.append(index)
    return DecodedBatch(records, good_idx, bad)


def encode_predictions(predictions: Sequence[dict[str, Any]]) -> list[bytes]:
    """JSON bytes of ``iris.predictions`` dicts (from :func:`ml.predict.prediction_records`)."""
    dumps = orjson.dumps
    return [dumps(p) for p in predictions]


def _clip(text: str) -> str:
    return text if len(text) <= DETAIL_MAX_CHARS else text[: DETAIL_MAX_CHARS - 1] + "…"
