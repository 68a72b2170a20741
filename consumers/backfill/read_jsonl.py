"""JSON Lines input: Arrow's streaming reader with the request schema, and a tolerant line-by-line
path (only after the fast one met a value it cannot convert) on which every line becomes a row or
a reject with the same reasons REST and the stream give (:func:`ml.schema.check_record`).

Pass-through keys are those of the first record, as text (JSON strings as they are, other values as
JSON).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.json as pajson

from consumers.backfill import columns as cols
from consumers.backfill.columns import json_text, normalise, pass_through, require_features
from consumers.backfill.files import InputFile
from ml.errors import BadInputError
from ml.schema import FEATURES, RecordInvalid, check_record


def jsonl_schema() -> pa.Schema:
    return pa.schema(
        [("id", pa.string()), *[(name, pa.float64()) for name in FEATURES], ("sent_at", pa.string())]
    )


def jsonl_fast(file: InputFile, count_only: bool) -> Iterator[pa.Table]:
    extras = [] if count_only else jsonl_extras(file)
    try:  # a conversion error (ArrowInvalid) goes up to the tolerant reader
        reader = pajson.open_json(
            file.path,
            read_options=pajson.ReadOptions(block_size=cols.READ_BLOCK_BYTES),
            parse_options=pajson.ParseOptions(
                explicit_schema=jsonl_schema(),
                # pass-through values keep their JSON type here; normalise makes them text
                unexpected_field_behavior="infer" if extras else "ignore",
            ),
        )
    except OSError as exc:
        raise BadInputError(f"input {file.path} could not be read as JSON Lines: {exc}.") from None
    for batch in reader:
        yield normalise(pa.Table.from_batches([batch]), count_only, json_extras=extras)


def jsonl_extras(file: InputFile) -> list[str]:
    """The pass-through keys of the first record; a missing field fails at once, like a missing
    column (judged on the first record too)."""
    with file.path.open("rb") as handle:
        for line in handle:
            if line.strip():
                try:
                    first = orjson.loads(line)
                except orjson.JSONDecodeError:
                    return []  # the row is rejected on its own
                if isinstance(first, dict):
                    require_features(file, list(first))
                    return pass_through(first)
                return []
    return []


def jsonl_tolerant(file: InputFile, batch_rows: int, extras: Sequence[str]) -> Iterator[pa.Table]:
    """Line by line (only after the fast reader failed): every line becomes a row or a reject."""
    with file.path.open("rb") as handle:
        lines: list[bytes] = []
        for line in handle:
            if line.strip():
                lines.append(line)
                if len(lines) >= batch_rows:
                    yield _jsonl_rows(lines, extras)
                    lines = []
        if lines:
            yield _jsonl_rows(lines, extras)


def _jsonl_rows(lines: Sequence[bytes], extras: Sequence[str]) -> pa.Table:
    n = len(lines)
    ids: list[str | None] = [None] * n
    reasons: list[str | None] = [None] * n
    errors: list[str | None] = [None] * n
    passed: dict[str, list[str | None]] = {name: [None] * n for name in extras}
    values = np.full((n, len(FEATURES)), np.nan)
    for i, line in enumerate(lines):
        obj: Any = None
        try:
            obj = orjson.loads(line)
            record = check_record(obj, require_id=False)
        except orjson.JSONDecodeError as exc:
            reasons[i] = f"invalid JSON: {exc}"
        except RecordInvalid as exc:
            reasons[i] = str(exc)
            errors[i] = orjson.dumps([e.to_dict() for e in exc.errors]).decode()
        else:
            ids[i] = record.id
            values[i] = record.features
        if reasons[i] is None or errors[i] is not None:
            for name in extras:
                passed[name][i] = json_text(obj.get(name)) if isinstance(obj, dict) else None
    columns: dict[str, Any] = {"id": pa.array(ids, pa.string())}
    columns.update({name: pa.array(values[:, j]) for j, name in enumerate(FEATURES)})
    columns.update({name: pa.array(texts, pa.string()) for name, texts in passed.items()})
    columns["_reason"] = pa.array(reasons, pa.string())
    columns["_errors"] = pa.array(errors, pa.string())
    return pa.table(columns)
