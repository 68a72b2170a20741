"""The normalised columns every backfill reader yields (see :mod:`consumers.backfill.readers`).

- ``id`` (string, null where the input has none), the four features (float64; NaN where a value
  is missing or not a number, so :func:`ml.schema.check_columns` rejects the row);
- the input's other columns, in input order (``sent_at`` among them): the pass-through columns
  (:func:`pass_through`);
- internal columns, never passed through (:data:`INTERNAL_COLUMNS`): ``_ts``, ``_reason``,
  ``_errors`` and ``_text`` (the docstring of :mod:`consumers.backfill.readers` says what each
  holds).

Shared by the CSV, JSON Lines and Parquet readers and by the topic source.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from consumers.backfill.files import InputFile
from ml.errors import BadInputError
from ml.schema import FEATURES, ID_MAX_CHARS, NUMBER_TEXT

#: Arrow's streaming CSV and JSON readers queue up to 32 raw blocks ahead of the consumer, so
#: peak memory grows with the block size up to 32 blocks of input: 1 MiB blocks keep it at
#: 32 MiB (4 MiB blocks made a 5M-row CSV peak 1.27x a 1M-row one, bench/RESULTS.md).
READ_BLOCK_BYTES = 1 << 20
INTERNAL_COLUMNS = ("_ts", "_reason", "_errors", "_text")
#: columns of the output besides the pass-through ones: an input column of one of these names is
#: not passed through (``prob_<class>`` columns are matched by prefix)
OUTPUT_COLUMNS = ("id", *FEATURES, "label", "compare_label", "model_name", "model_version", "scored_at")


def pass_through(names: Iterable[str]) -> list[str]:
    """The input columns that go to the output as they are: all but the schema's own, internal
    helper columns and names the output uses."""
    return [
        name
        for name in names
        if name not in OUTPUT_COLUMNS
        and name not in INTERNAL_COLUMNS
        and not name.startswith(("prob_", "compare_prob_"))
    ]


def concat(tables: list[pa.Table]) -> pa.Table:
    """One table; tables without an internal column (``_reason``…) get it as nulls."""
    if len(tables) == 1:
        return tables[0]
    return pa.concat_tables(tables, promote_options="default")


def wrap_read_error(file: InputFile, what: str, call: Callable[[], Any]) -> Any:
    try:
        return call()
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise BadInputError(f"input {file.path} could not be read as {what}: {exc}.") from None


def require_features(file: InputFile, names: Sequence[str]) -> None:
    missing = [name for name in FEATURES if name not in names]
    if missing:
        raise BadInputError(
            f"input {file.path} has no column '{missing[0]}' (expected columns: {', '.join(FEATURES)})."
        )


def wanted(file: InputFile, names: Sequence[str], count_only: bool) -> list[str]:
    if count_only:
        return [FEATURES[0]] if FEATURES[0] in names else list(names[:1])
    require_features(file, names)
    truth = ["label"] * ("label" in names)  # ground truth (consumers/backfill/truth.py), not passed on
    return ["id"] * ("id" in names) + list(FEATURES) + pass_through(names) + truth


def reason_rows(schema: pa.Schema, reasons: list[str], count_only: bool) -> pa.Table:
    """Rows of nulls (NaN features) that carry only why they are bad."""
    columns = {f.name: pa.nulls(len(reasons), f.type) for f in schema if f.name != "_reason"}
    if not count_only:
        columns["_reason"] = pa.array(reasons, pa.string())
    return pa.table(columns)


def json_text(value: object) -> str | None:
    """A JSON value as pass-through text: strings as they are, others as JSON."""
    if value is None or isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def _to_float(column: pa.ChunkedArray) -> tuple[pa.ChunkedArray, pa.ChunkedArray | None]:
    """Numbers as float64; text parsed where it is a number, null (→ NaN, rejected) where not.
    Also a mask of the cells that held text that is not a number (``None``: there are none)."""
    kind = column.type
    if pa.types.is_floating(kind) or pa.types.is_integer(kind) or pa.types.is_decimal(kind):
        return column.cast(pa.float64()), None
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        try:
            return column.cast(pa.float64()), None
        except pa.ArrowInvalid:
            numeric = pc.fill_null(pc.match_substring_regex(column, NUMBER_TEXT), True)
            cleaned = pc.utf8_trim_whitespace(pc.if_else(numeric, column, pa.scalar(None, column.type)))
            return cleaned.cast(pa.float64()), pc.invert(numeric)
    if pa.types.is_null(kind):
        return pa.chunked_array([pa.nulls(len(column), pa.float64())]), None
    raise pa.ArrowInvalid(f"column of type {kind} is not numeric")


def normalise(table: pa.Table, count_only: bool = False, *, json_extras: Sequence[str] = ()) -> pa.Table:
    if count_only:
        return table
    columns: dict[str, Any] = {}
    if "id" in table.column_names:
        ids = table["id"]
        columns["id"] = ids if pa.types.is_string(ids.type) else ids.cast(pa.string())
    texts: dict[str, tuple[pa.ChunkedArray, pa.ChunkedArray]] = {}
    for name in FEATURES:
        columns[name], not_numbers = _to_float(table[name])
        if not_numbers is not None:
            texts[name] = (table[name], not_numbers)
    if json_extras:
        for name in json_extras:
            columns[name] = (
                _as_json_text(table[name])
                if name in table.column_names
                else pa.nulls(table.num_rows, pa.string())
            )
    else:
        for name in pass_through(table.column_names):
            columns[name] = table[name]
    for extra in (*INTERNAL_COLUMNS, "label"):  # "label": ground truth (consumers/backfill/truth.py)
        if extra in table.column_names:
            columns[extra] = table[extra]
    if texts:
        columns["_text"] = _text_column(texts, table.num_rows)
    return pa.table(columns)


def _as_json_text(column: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_string(column.type):
        return column
    try:
        return column.cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pa.chunked_array([pa.array([json_text(v) for v in column.to_pylist()], pa.string())])


def _text_column(texts: dict[str, tuple[pa.ChunkedArray, pa.ChunkedArray]], n: int) -> pa.Array:
    """``_text``: for rows with cells that are not numbers, a JSON object of those cells' text."""
    masks = {
        name: np.asarray(mask.to_numpy(zero_copy_only=False), dtype=np.bool_)
        for name, (_, mask) in texts.items()
    }
    rows = np.flatnonzero(np.logical_or.reduce(list(masks.values())))
    values: list[str | None] = [None] * n
    raw = {name: column.take(pa.array(rows)).to_pylist() for name, (column, _) in texts.items()}
    for position, row in enumerate(rows.tolist()):
        cells = {name: raw[name][position] for name in texts if masks[name][row]}
        values[row] = orjson.dumps(cells).decode()
    return pa.array(values, pa.string())


def fill_ids(table: pa.Table, first_row: int) -> tuple[pa.ChunkedArray, npt.NDArray[np.bool_]]:
    """The id column (row numbers from ``first_row`` where the input has none) and a mask of ids
    that are not 1-128 characters long."""
    n = table.num_rows
    given = table["id"] if "id" in table.column_names else None
    if given is None or given.null_count:
        numbers = pa.array(np.arange(first_row, first_row + n, dtype=np.int64)).cast(pa.string())
        if given is None:
            return pa.chunked_array([numbers]), np.ones(n, dtype=np.bool_)
        ids = pc.if_else(pc.is_null(given), numbers, given)
    else:
        ids = given
    lengths = pc.utf8_length(ids)
    ok = pc.and_(pc.greater_equal(lengths, 1), pc.less_equal(lengths, ID_MAX_CHARS))
    return ids, np.asarray(ok.to_numpy(zero_copy_only=False), dtype=np.bool_)
