"""The request schema, defined once and reused by REST, stream and backfill.

A request record is a JSON object::

    {"id": "r-42", "sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4,
     "petal_width": 0.2, "sent_at": "2026-11-26T10:00:00Z"}

- ``id``: a string of 1-128 characters (required on the stream, optional over REST);
- the four features: required, finite JSON numbers (not booleans, not strings),
  ``FEATURE_MIN <= value <= FEATURE_MAX`` centimetres;
- ``sent_at``: optional string; unknown fields are ignored (backfill passes them through).

A value that is not a number is reported as ``is not a number: 'abc'`` (:func:`quote_value`: the
value itself, cut short with ``…`` past :data:`QUOTE_MAX_CHARS` characters), on every path: REST
422 details, the stream's dead-letter ``error_detail``, backfill rejects and drift-report.

Row numbers, everywhere a file's rows are reported (backfill rejects, ``drift-report``): ``row``
is the 1-based data row of the input file (the first row after a CSV header is row 1; for a topic
range, the first record of the range), and for CSV ``line`` is the 1-based line in the file (the
header is line 1), which is ``row + 1`` as long as no value spans lines (blank lines are skipped
and not counted). :func:`row_position` builds both.

:func:`check_record` is the hand-written fast path (a few microseconds a record, used on every
hot path); :class:`RecordModel` describes the same rules for OpenAPI and is kept equal to it by
property tests. :func:`check_columns` applies the same rules to whole columns at once (backfill).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from ml.errors import ValidationFailed

FEATURES: tuple[str, ...] = ("sepal_length", "sepal_width", "petal_length", "petal_width")
FEATURE_MIN = 0.0
#: Upper bound on every feature, in centimetres. Real Iris flowers stay under 8 cm; the bound
#: only rejects values that are certainly wrong (unit mistakes, sentinels like 9999).
FEATURE_MAX = 100.0
ID_MAX_CHARS = 128
SENT_AT_MAX_CHARS = 64
LABELS: tuple[str, ...] = ("setosa", "versicolor", "virginica")
QUOTE_MAX_CHARS = 40
#: Text that reads as a number in a file (CSV cells, text columns): decimal, optional exponent,
#: surrounding blanks allowed. ``nan``/``inf`` are not numbers here.
NUMBER_TEXT = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"


@dataclass(frozen=True, slots=True)
class FieldError:
    """One reason a record is invalid; ``loc`` names the field (and, in a batch, the index)."""

    loc: tuple[str | int, ...]
    msg: str

    def to_dict(self) -> dict[str, Any]:
        return {"loc": list(self.loc), "msg": self.msg}

    def describe(self) -> str:
        return f"{'.'.join(str(p) for p in self.loc)}: {self.msg}"


class RecordInvalid(ValueError):
    """Raised by :func:`check_record`; carries every :class:`FieldError` of the record."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        super().__init__("; ".join(e.describe() for e in errors))
        self.errors = tuple(errors)


class Record(NamedTuple):
    """A validated request record."""

    id: str | None
    features: tuple[float, float, float, float]
    sent_at: str | None


def quote_value(value: object) -> str:
    """A value as an error message shows it: text quoted (``'abc'``), cut with ``…`` when long."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > QUOTE_MAX_CHARS:
        text = text[: QUOTE_MAX_CHARS - 1] + "…"
    return repr(text) if isinstance(value, str) else text


def not_a_number(value: object) -> str:
    """The message for a feature value that is not a number."""
    return f"is not a number: {quote_value(value)}"


def row_position(row: int, *, csv: bool) -> dict[str, int]:
    """``{"row": row}`` (1-based data row), plus ``"line"`` for CSV (see the module docstring)."""
    return {"row": row, "line": row + 1} if csv else {"row": row}


def ragged_row_message(expected: int, actual: int, text: str | None) -> str:
    """Why a CSV row with the wrong number of values was rejected."""
    shown = f": {quote_value(text)}" if text else ""
    return f"has {actual} values, expected {expected} (one per column of the header){shown}"


def _check_feature(name: str, value: object, errors: list[FieldError]) -> float:
    if isinstance(value, str):
        errors.append(FieldError((name,), not_a_number(value)))
        return 0.0
    # bool is an int subclass: refuse it explicitly.
    if isinstance(value, bool) or not isinstance(value, int | float):
        errors.append(FieldError((name,), f"must be a number, got {_json_type(value)}"))
        return 0.0
    number = float(value)
    if not math.isfinite(number):
        errors.append(FieldError((name,), "must be a finite number"))
    elif number < FEATURE_MIN:
        errors.append(FieldError((name,), f"must be >= {FEATURE_MIN:g}, got {number:g}"))
    elif number > FEATURE_MAX:
        errors.append(FieldError((name,), f"must be <= {FEATURE_MAX:g}, got {number:g}"))
    return number


def _valid_floats(obj: dict[str, Any], require_id: bool) -> Record | None:
    """The common case in a few comparisons: four in-range floats and a valid or absent id and
    ``sent_at``. None: let the full check find (and name) what is wrong, or accept ints."""
    try:
        a, b, c, d = obj[FEATURES[0]], obj[FEATURES[1]], obj[FEATURES[2]], obj[FEATURES[3]]
    except KeyError:
        return None
    if not (type(a) is float and type(b) is float and type(c) is float and type(d) is float):
        return None
    # NaN fails every comparison and infinity the upper bound, so both take the full check
    if not (
        FEATURE_MIN <= a <= FEATURE_MAX
        and FEATURE_MIN <= b <= FEATURE_MAX
        and FEATURE_MIN <= c <= FEATURE_MAX
        and FEATURE_MIN <= d <= FEATURE_MAX
    ):
        return None
    record_id, sent_at = obj.get("id"), obj.get("sent_at")
    if record_id is None:
        if require_id:
            return None
    elif type(record_id) is not str or not 1 <= len(record_id) <= ID_MAX_CHARS:
        return None
    if sent_at is not None and (type(sent_at) is not str or len(sent_at) > SENT_AT_MAX_CHARS):
        return None
    return Record(record_id, (a, b, c, d), sent_at)


def check_record(obj: object, *, require_id: bool = True) -> Record:
    """Validate one decoded JSON value against the request schema, or raise :class:`RecordInvalid`."""
    fast = _valid_floats(obj, require_id) if type(obj) is dict else None
    return fast if fast is not None else _check_fully(obj, require_id)


def _check_fully(obj: object, require_id: bool) -> Record:
    if not isinstance(obj, Mapping):
        raise RecordInvalid([FieldError((), f"must be a JSON object, got {_json_type(obj)}")])
    errors: list[FieldError] = []
    record_id = obj.get("id")
    if record_id is None:
        if require_id:
            errors.append(FieldError(("id",), "field required"))
    elif not isinstance(record_id, str):
        errors.append(FieldError(("id",), f"must be a string, got {_json_type(record_id)}"))
        record_id = None
    elif not 1 <= len(record_id) <= ID_MAX_CHARS:
        errors.append(FieldError(("id",), f"must be 1-{ID_MAX_CHARS} characters, got {len(record_id)}"))
        record_id = None
    values = []
    for name in FEATURES:
        if name not in obj:
            errors.append(FieldError((name,), "field required"))
            values.append(0.0)
        else:
            values.append(_check_feature(name, obj[name], errors))
    sent_at = obj.get("sent_at")
    if sent_at is not None and (not isinstance(sent_at, str) or len(sent_at) > SENT_AT_MAX_CHARS):
        errors.append(FieldError(("sent_at",), f"must be a string of at most {SENT_AT_MAX_CHARS} characters"))
        sent_at = None
    if errors:
        raise RecordInvalid(errors)
    return Record(record_id, (values[0], values[1], values[2], values[3]), sent_at)


def check_records(objs: Sequence[object], *, require_id: bool = True) -> list[Record]:
    """Validate a batch; on failure raise :class:`ValidationFailed` listing every error with its index."""
    records: list[Record] = []
    errors: list[dict[str, Any]] = []
    for index, obj in enumerate(objs):
        try:
            records.append(check_record(obj, require_id=require_id))
        except RecordInvalid as exc:
            errors.extend({"loc": [index, *e.loc], "msg": e.msg} for e in exc.errors)
    if errors:
        raise ValidationFailed(f"{len(errors)} invalid field(s) in the batch", detail=errors)
    return records


def one_row(record: Record) -> npt.NDArray[np.float64]:
    """The (1, 4) feature matrix of one validated record."""
    return np.array((record.features,), dtype=np.float64)


def to_matrix(records: Sequence[Record]) -> npt.NDArray[np.float64]:
    """The (n, 4) feature matrix of validated records, in :data:`FEATURES` order."""
    if not records:
        return np.empty((0, len(FEATURES)), dtype=np.float64)
    return np.array([r.features for r in records], dtype=np.float64)


def check_columns(columns: Mapping[str, Any]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Vectorised rules for a table: the (n, 4) matrix and a per-row validity mask.

    Columns must exist (``ValidationFailed`` naming the missing one otherwise); rows with a
    non-finite, negative or too-large value are marked invalid.
    """
    missing = [name for name in FEATURES if name not in columns]
    if missing:
        raise ValidationFailed(f"missing column(s): {', '.join(missing)}")
    matrix = np.column_stack([np.asarray(columns[name], dtype=np.float64) for name in FEATURES])
    in_range = np.isfinite(matrix) & (matrix >= FEATURE_MIN) & (matrix <= FEATURE_MAX)
    valid: npt.NDArray[np.bool_] = np.asarray(in_range.all(axis=1), dtype=np.bool_)
    return matrix, valid


def row_errors(row: Sequence[float], texts: Mapping[str, str] | None = None) -> list[FieldError]:
    """Why one row of :func:`check_columns` was invalid (for rejects files). ``texts`` holds the
    file's own text of the features that were not numbers (they read as NaN in ``row``)."""
    errors: list[FieldError] = []
    for name, value in zip(FEATURES, row, strict=True):
        if texts and name in texts:
            errors.append(FieldError((name,), not_a_number(texts[name])))
        else:
            _check_feature(name, float(value), errors)
    return errors


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


class RecordModel(BaseModel):
    """OpenAPI description of a request record (the same rules as :func:`check_record`)."""

    model_config = ConfigDict(extra="ignore", title="IrisRecord", strict=True)

    id: str | None = Field(default=None, min_length=1, max_length=ID_MAX_CHARS, examples=["r-42"])
    sepal_length: float = Field(
        ge=FEATURE_MIN, le=FEATURE_MAX, allow_inf_nan=False, description="centimetres", examples=[5.1]
    )
    sepal_width: float = Field(
        ge=FEATURE_MIN, le=FEATURE_MAX, allow_inf_nan=False, description="centimetres", examples=[3.5]
    )
    petal_length: float = Field(
        ge=FEATURE_MIN, le=FEATURE_MAX, allow_inf_nan=False, description="centimetres", examples=[1.4]
    )
    petal_width: float = Field(
        ge=FEATURE_MIN, le=FEATURE_MAX, allow_inf_nan=False, description="centimetres", examples=[0.2]
    )
    sent_at: str | None = Field(default=None, max_length=SENT_AT_MAX_CHARS, examples=["2026-11-26T10:00:00Z"])


class PredictionModel(BaseModel):
    """OpenAPI description of a prediction (the ``iris.predictions`` message)."""

    model_config = ConfigDict(title="IrisPrediction")

    id: str | None = None
    label: str
    probabilities: dict[str, float]
    model_name: str
    model_version: str
    #: which alias answered: ``champion``, or ``challenger`` for a canary request
    model_alias: str
    source: str
    scored_at: str
