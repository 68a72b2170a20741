"""Reading backfill inputs in bounded chunks.

Every reader yields *normalised* Arrow tables of exactly ``chunk_rows`` rows (the last one may be
shorter), so chunk ``k`` of a file always covers the same rows — which is what makes a resumed run
identical to an uninterrupted one. Normalised columns:

- ``id`` (string, null where the input has none), the four features (float64; NaN where a value
  is missing or not a number, so :func:`ml.schema.check_columns` rejects the row);
- the input's other columns, in input order (``sent_at`` among them): the pass-through columns
  (:func:`pass_through`). CSV cells are text; Parquet columns keep their type; JSON Lines keys are
  those of the first record, as text (JSON strings as they are, other values as JSON);
- internal columns, never passed through (:data:`INTERNAL_COLUMNS`): ``_ts`` (epoch milliseconds,
  topic input only); ``_reason`` (string, optional): a row already known to be bad (a JSON line
  that is not an object, a CSV row with the wrong number of values) and why; ``_errors`` (the same
  as a JSON list of ``{"loc", "msg"}``); ``_text`` (a JSON object of the feature cells that held
  text that is not a number, so the reject can quote them).

Row ``k`` of a file's chunks is always the file's data row ``k + 1`` (see :mod:`ml.schema`): a CSV
row with the wrong number of values is parsed by Arrow's ``invalid_row_handler`` and put back in
its place as a row that carries its ``_reason``.

All readers stream: CSV with ``pyarrow.csv.open_csv``, Parquet with ``ParquetFile.iter_batches``
(it decodes page by page) and JSON Lines with ``pyarrow.json.open_json``. (``pyarrow.dataset``
scans were tried first: their read-ahead holds whole row groups and CSV blocks, so peak memory
grew with the file.) When
the fast typed path meets a value it cannot convert (``"abc"`` in a number column, a numeric id in
JSON), the file is re-read from the same row on a tolerant path, so one bad row never fails a run.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from consumers.backfill.files import InputFile
from ml.errors import BadInputError
from ml.schema import (
    FEATURES,
    ID_MAX_CHARS,
    NUMBER_TEXT,
    RecordInvalid,
    check_record,
    ragged_row_message,
)

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
        if name not in OUTPUT_COLUMNS and name not in INTERNAL_COLUMNS and not name.startswith("prob_")
    ]


def extra_fields(files: Sequence[InputFile]) -> list[pa.Field]:
    """The pass-through columns of all input files, in first-seen order (one output schema for
    the whole run); a column whose type differs between files is text."""
    fields: dict[str, pa.DataType] = {}
    for file in files:
        for name, kind in _file_extras(file):
            if name not in fields:
                fields[name] = kind
            elif fields[name] != kind:
                fields[name] = pa.string()
    return [pa.field(name, kind) for name, kind in fields.items()]


def _file_extras(file: InputFile) -> list[tuple[str, pa.DataType]]:
    if file.kind == "csv":
        return [
            (name, pa.string())
            for name in pass_through(_wrap_read_error(file, "CSV", lambda: _csv_header(file)))
        ]
    if file.kind == "jsonl":
        return [(name, pa.string()) for name in _jsonl_extras(file)]
    schema = _wrap_read_error(file, "Parquet", lambda: pq.read_schema(file.path))
    return [
        (field.name, field.type)
        for field in schema
        if field.name in pass_through([field.name]) and not pa.types.is_nested(field.type)
    ]


def count_rows(file: InputFile) -> int:
    """Rows in a file (Parquet: metadata only; others: one streaming pass over one column)."""
    return sum(t.num_rows for t in read_chunks(file, 1 << 20, count_only=True))


def parquet_rows(file: InputFile) -> int | None:
    if file.kind != "parquet":
        return None
    try:
        return int(pq.ParquetFile(file.path).metadata.num_rows)
    except (OSError, pa.ArrowException):
        return None


def read_chunks(file: InputFile, chunk_rows: int, *, count_only: bool = False) -> Iterator[pa.Table]:
    """Normalised tables of exactly ``chunk_rows`` rows (see the module docstring)."""
    return rechunk(_robust_batches(file, chunk_rows, count_only), chunk_rows)


def rechunk(tables: Iterable[pa.Table], chunk_rows: int) -> Iterator[pa.Table]:
    """Re-cut a stream of tables into tables of exactly ``chunk_rows`` rows (the last may be short)."""
    buffer: list[pa.Table] = []
    buffered = 0
    for table in tables:
        if table.num_rows == 0:
            continue
        buffer.append(table)
        buffered += table.num_rows
        while buffered >= chunk_rows:
            whole = _concat(buffer)
            yield whole.slice(0, chunk_rows)
            rest = whole.slice(chunk_rows)
            buffer, buffered = ([rest] if rest.num_rows else []), rest.num_rows
    if buffered:
        yield _concat(buffer)


def _concat(tables: list[pa.Table]) -> pa.Table:
    """One table; tables without an internal column (``_reason``…) get it as nulls."""
    if len(tables) == 1:
        return tables[0]
    return pa.concat_tables(tables, promote_options="default")


def _robust_batches(file: InputFile, batch_rows: int, count_only: bool) -> Iterator[pa.Table]:
    """The fast typed reader; on a conversion error, the tolerant reader from the same row on."""
    done = 0
    try:
        for table in _fast_tables(file, batch_rows, count_only):
            done += table.num_rows
            yield table
        return
    except pa.ArrowInvalid as exc:
        if file.kind == "parquet":
            raise BadInputError(f"input {file.path} could not be read as Parquet: {exc}.") from None
    except (OSError, pa.ArrowException) as exc:
        raise BadInputError(f"input {file.path} could not be read: {exc}.") from None
    skip = done
    try:
        for table in _tolerant_tables(file, batch_rows, count_only):
            if skip >= table.num_rows:
                skip -= table.num_rows
                continue
            if skip:
                table, skip = table.slice(skip), 0
            yield table
    except (OSError, pa.ArrowException) as exc:
        what = {"csv": "CSV", "jsonl": "JSON Lines"}[file.kind]
        raise BadInputError(f"input {file.path} could not be read as {what}: {exc}.") from None


def _wrap_read_error(file: InputFile, what: str, call: Callable[[], Any]) -> Any:
    try:
        return call()
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise BadInputError(f"input {file.path} could not be read as {what}: {exc}.") from None


def _require_features(file: InputFile, names: Sequence[str]) -> None:
    missing = [name for name in FEATURES if name not in names]
    if missing:
        raise BadInputError(
            f"input {file.path} has no column '{missing[0]}' (expected columns: {', '.join(FEATURES)})."
        )


def _fast_tables(file: InputFile, batch_rows: int, count_only: bool) -> Iterator[pa.Table]:
    if file.kind == "jsonl":
        yield from _jsonl_fast(file, count_only)
        return
    if file.kind == "parquet":
        # ParquetFile streams pages (pre_buffer off); a dataset scan would hold whole row groups.
        parquet = _wrap_read_error(file, "Parquet", lambda: pq.ParquetFile(file.path, pre_buffer=False))
        columns = _wanted(file, parquet.schema_arrow.names, count_only)
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=columns):
            yield _normalise(pa.Table.from_batches([batch]), count_only)
        return
    yield from _csv_tables(file, typed=True, count_only=count_only)


class _RaggedRows:
    """Arrow's ``invalid_row_handler``: notes each CSV row with the wrong number of values (its
    0-based data row and why) and skips it; :meth:`put_back` returns them to their places."""

    def __init__(self) -> None:
        self.rows: deque[tuple[int, str]] = deque()

    def __call__(self, row: Any) -> str:
        if row.number is None:  # Arrow knows row numbers only when it parses serially
            raise pa.ArrowInvalid(f"row {row.text!r} has the wrong number of values")
        # row.number counts records from 1 with the header as record 1
        self.rows.append(
            (int(row.number) - 2, ragged_row_message(row.expected_columns, row.actual_columns, row.text))
        )
        return "skip"

    def put_back(self, table: pa.Table, done: int, last: bool, count_only: bool) -> pa.Table:
        """``table`` (the rows after the first ``done`` data rows) with the skipped rows back in."""
        if not self.rows:
            return table
        pieces: list[pa.Table] = []
        cursor, position = 0, done
        while self.rows and (last or self.rows[0][0] - position <= table.num_rows - cursor):
            before = max(0, min(self.rows[0][0] - position, table.num_rows - cursor))
            if before:
                pieces.append(table.slice(cursor, before))
                cursor, position = cursor + before, position + before
            _, reason = self.rows.popleft()
            pieces.append(_reason_rows(table.schema, [reason], count_only))
            position += 1
        if cursor < table.num_rows:
            pieces.append(table.slice(cursor))
        return _concat(pieces)


def _reason_rows(schema: pa.Schema, reasons: list[str], count_only: bool) -> pa.Table:
    """Rows of nulls (NaN features) that carry only why they are bad."""
    columns = {f.name: pa.nulls(len(reasons), f.type) for f in schema if f.name != "_reason"}
    if not count_only:
        columns["_reason"] = pa.array(reasons, pa.string())
    return pa.table(columns)


def _csv_tables(file: InputFile, *, typed: bool, count_only: bool) -> Iterator[pa.Table]:
    """A streaming CSV reader (one block in memory at a time); numbers as float64 or as text."""
    header = _wrap_read_error(file, "CSV", lambda: _csv_header(file))
    columns = _wanted(file, header, count_only)
    types = {name: pa.string() for name in columns if name not in FEATURES}
    if not count_only:
        types.update({name: (pa.float64() if typed else pa.string()) for name in FEATURES})
    ragged = _RaggedRows()
    try:  # a conversion error (ArrowInvalid) goes up: the tolerant reader takes over
        reader = pacsv.open_csv(
            file.path,
            # serial parsing: the invalid-row handler gets row numbers only then
            read_options=pacsv.ReadOptions(block_size=READ_BLOCK_BYTES, use_threads=False),
            parse_options=pacsv.ParseOptions(invalid_row_handler=ragged),
            convert_options=pacsv.ConvertOptions(
                column_types=types, include_columns=columns, strings_can_be_null=True
            ),
        )
    except OSError as exc:
        raise BadInputError(f"input {file.path} could not be read as CSV: {exc}.") from None
    done = 0
    for batch in reader:
        table = ragged.put_back(
            _normalise(pa.Table.from_batches([batch]), count_only), done, False, count_only
        )
        done += table.num_rows
        yield table
    if ragged.rows:
        schema = _normalise(reader.schema.empty_table(), count_only).schema
        yield ragged.put_back(schema.empty_table(), done, True, count_only)


def _csv_header(file: InputFile) -> list[str]:
    with pacsv.open_csv(
        file.path,
        read_options=pacsv.ReadOptions(block_size=1 << 16, use_threads=False),
        parse_options=pacsv.ParseOptions(invalid_row_handler=lambda row: "skip"),
    ) as reader:
        return list(reader.schema.names)


def _wanted(file: InputFile, names: Sequence[str], count_only: bool) -> list[str]:
    if count_only:
        return [FEATURES[0]] if FEATURES[0] in names else list(names[:1])
    _require_features(file, names)
    return ["id"] * ("id" in names) + list(FEATURES) + pass_through(names)


def _jsonl_schema() -> pa.Schema:
    return pa.schema(
        [("id", pa.string()), *[(name, pa.float64()) for name in FEATURES], ("sent_at", pa.string())]
    )


def _jsonl_fast(file: InputFile, count_only: bool) -> Iterator[pa.Table]:
    extras = [] if count_only else _jsonl_extras(file)
    try:  # a conversion error (ArrowInvalid) goes up to the tolerant reader
        reader = pajson.open_json(
            file.path,
            read_options=pajson.ReadOptions(block_size=READ_BLOCK_BYTES),
            parse_options=pajson.ParseOptions(
                explicit_schema=_jsonl_schema(),
                # pass-through values keep their JSON type here; _normalise makes them text
                unexpected_field_behavior="infer" if extras else "ignore",
            ),
        )
    except OSError as exc:
        raise BadInputError(f"input {file.path} could not be read as JSON Lines: {exc}.") from None
    for batch in reader:
        yield _normalise(pa.Table.from_batches([batch]), count_only, json_extras=extras)


def _jsonl_extras(file: InputFile) -> list[str]:
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
                    _require_features(file, list(first))
                    return pass_through(first)
                return []
    return []


def _tolerant_tables(file: InputFile, batch_rows: int, count_only: bool) -> Iterator[pa.Table]:
    if file.kind == "csv":
        yield from _csv_tables(file, typed=False, count_only=count_only)
        return
    yield from _jsonl_tolerant(file, batch_rows, [] if count_only else _jsonl_extras(file))


def _jsonl_tolerant(file: InputFile, batch_rows: int, extras: Sequence[str]) -> Iterator[pa.Table]:
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
                passed[name][i] = _json_text(obj.get(name)) if isinstance(obj, dict) else None
    columns: dict[str, Any] = {"id": pa.array(ids, pa.string())}
    columns.update({name: pa.array(values[:, j]) for j, name in enumerate(FEATURES)})
    columns.update({name: pa.array(texts, pa.string()) for name, texts in passed.items()})
    columns["_reason"] = pa.array(reasons, pa.string())
    columns["_errors"] = pa.array(errors, pa.string())
    return pa.table(columns)


def _json_text(value: object) -> str | None:
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


def _normalise(table: pa.Table, count_only: bool = False, *, json_extras: Sequence[str] = ()) -> pa.Table:
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
    for extra in INTERNAL_COLUMNS:
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
        return pa.chunked_array([pa.array([_json_text(v) for v in column.to_pylist()], pa.string())])


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
