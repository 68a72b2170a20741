"""Request payloads → validated records, through the shared schema (:mod:`ml.schema`).

``/predict`` takes one record or ``{"instances": [...]}``; ``/invocations`` takes the MLflow
scoring-server formats (``dataframe_split``, ``dataframe_records``, ``instances``, ``inputs``
(columns, rows or one row of scalars), ``text/csv`` and ``application/vnd.apache.parquet``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from typing import Any

from ml.errors import ValidationFailed
from ml.schema import FEATURES, Record, RecordInvalid, check_record, check_records

MLFLOW_FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")


def invalid(loc: Sequence[str | int], msg: str) -> ValidationFailed:
    where = ".".join(str(p) for p in loc) or "body"
    return ValidationFailed(f"{where}: {msg}", detail=[{"loc": list(loc), "msg": msg}])


def one_record(obj: object) -> Record:
    try:
        return check_record(obj, require_id=False)
    except RecordInvalid as exc:
        raise ValidationFailed(str(exc), detail=[e.to_dict() for e in exc.errors]) from None


def many_records(objs: object, field: str, max_instances: int | None) -> list[Record]:
    if not isinstance(objs, list):
        raise invalid([field], "must be an array of records")
    if not objs:
        raise invalid([field], "must not be empty")
    if max_instances is not None and len(objs) > max_instances:
        raise invalid([field], f"must hold at most {max_instances} records, got {len(objs)}")
    return check_records(objs, require_id=False)


def mlflow_records(payload: object, max_instances: int | None) -> list[Record]:
    """Records of an MLflow scoring-server JSON payload (``params`` is accepted and ignored: the
    model takes none)."""
    if not isinstance(payload, Mapping):
        raise invalid([], f"must be a JSON object with one of {', '.join(MLFLOW_FORMATS)}")
    keys = [k for k in MLFLOW_FORMATS if k in payload]
    if len(keys) != 1:
        raise invalid([], f"must hold exactly one of {', '.join(MLFLOW_FORMATS)}, got {sorted(payload)}")
    key = keys[0]
    value = payload[key]
    if key == "dataframe_split":
        return many_records(_split_rows(value), key, max_instances)
    if key in ("instances", "inputs") and isinstance(value, Mapping):
        if not any(isinstance(v, list) for v in value.values()):  # one row as scalars, as MLflow takes
            return many_records([dict(value)], key, max_instances)
        return many_records(_column_rows(value, key), key, max_instances)
    if key in ("instances", "inputs") and isinstance(value, list) and value and isinstance(value[0], list):
        value = _positional_rows(value)
    return many_records(value, key, max_instances)


def _positional_rows(rows: list[Any]) -> list[Any]:
    """Rows without names, as MLflow accepts for a signature: the features in schema order."""
    named: list[Any] = []
    for index, row in enumerate(rows):
        if isinstance(row, list):
            if len(row) != len(FEATURES):
                raise invalid([index], f"must be an array of {len(FEATURES)} values: {', '.join(FEATURES)}")
            row = dict(zip(FEATURES, row, strict=True))
        named.append(row)
    return named


def _split_rows(split: object) -> list[Any]:
    if not isinstance(split, Mapping):
        raise invalid(["dataframe_split"], "must be an object with columns and data")
    columns, data = split.get("columns"), split.get("data")
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise invalid(["dataframe_split", "columns"], "must be an array of column names")
    if not isinstance(data, list):
        raise invalid(["dataframe_split", "data"], "must be an array of rows")
    rows: list[Any] = []
    for index, row in enumerate(data):
        if not isinstance(row, list) or len(row) != len(columns):
            raise invalid([index], f"must be an array of {len(columns)} values, like columns")
        rows.append(dict(zip(columns, row, strict=True)))
    return rows


def _column_rows(columns: Mapping[str, Any], key: str) -> list[Any]:
    lists = {name: values for name, values in columns.items() if isinstance(values, list)}
    lengths = {len(values) for values in lists.values()}
    if not lists or len(lengths) != 1:
        raise invalid([key], "must map column names to arrays of equal length")
    names = list(lists)
    return [dict(zip(names, row, strict=True)) for row in zip(*lists.values(), strict=True)]


def parquet_records(body: bytes, max_instances: int | None) -> list[Record]:
    """Records of an ``application/vnd.apache.parquet`` body (MLflow's Parquet input)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(body))
    except (pa.ArrowException, OSError) as exc:
        raise invalid([], f"not a readable Parquet file: {exc}") from None
    return many_records(table.to_pylist(), "parquet", max_instances)


def csv_records(body: bytes, max_instances: int | None) -> list[Record]:
    """Records of a ``text/csv`` body with a header row (MLflow's CSV input). Cells that read as
    numbers become numbers, except in the ``id`` column: ids are text, as in backfill."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise invalid([], "CSV body must be UTF-8") from None
    rows = [
        {k: _csv_id(v) if k == "id" else _csv_value(v) for k, v in row.items() if k is not None}
        for row in csv.DictReader(io.StringIO(text))
    ]
    return many_records(rows, "csv", max_instances)


def _csv_id(text: str | None) -> str | None:
    return None if text is None or text.strip() == "" else text


def _csv_value(text: str | None) -> object:
    if text is None or text.strip() == "":
        return None
    try:
        return float(text)
    except ValueError:
        return text
