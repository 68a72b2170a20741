"""Reading backfill inputs in bounded chunks.

Every reader yields *normalised* Arrow tables of exactly ``chunk_rows`` rows (the last one may be
shorter), so chunk ``k`` of a file always covers the same rows — which is what makes a resumed run
identical to an uninterrupted one. Normalised columns:

- ``id`` (string, null where the input has none), the four features (float64; NaN where a value
  is missing or not a number, so :func:`ml.schema.check_columns` rejects the row);
- ``sent_at`` (string, when the input has it) and ``_ts`` (epoch milliseconds, topic input only);
- ``_reason`` (string, optional): a row already known to be bad (a JSON line that is not an object,
  an id of the wrong type) and why.

All readers stream: CSV with ``pyarrow.csv.open_csv``, Parquet with ``ParquetFile.iter_batches``
(it decodes page by page) and JSON Lines with ``pyarrow.json.open_json``. (``pyarrow.dataset``
scans were tried first: their read-ahead holds whole row groups and CSV blocks, so peak memory
grew with the file.) When
the fast typed path meets a value it cannot convert (``"abc"`` in a number column, a numeric id in
JSON), the file is re-read from the same row on a tolerant path, so one bad row never fails a run.
"""

from __future__ import annotations

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

from consumers.backfill.files import OPTIONAL_COLUMNS, InputFile
from ml.errors import BadInputError
from ml.schema import FEATURES, ID_MAX_CHARS, RecordInvalid, check_record

#: Arrow's streaming CSV and JSON readers queue up to 32 raw blocks ahead of the consumer, so
#: peak memory grows with the block size up to 32 blocks of input: 1 MiB blocks keep it at
#: 32 MiB (4 MiB blocks made a 5M-row CSV peak 1.27x a 1M-row one, bench/RESULTS.md).
READ_BLOCK_BYTES = 1 << 20
_NUMBER = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"


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
            whole = pa.concat_tables(buffer) if len(buffer) > 1 else buffer[0]
            yield whole.slice(0, chunk_rows)
            rest = whole.slice(chunk_rows)
            buffer, buffered = ([rest] if rest.num_rows else []), rest.num_rows
    if buffered:
        yield pa.concat_tables(buffer) if len(buffer) > 1 else buffer[0]


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


def _csv_tables(file: InputFile, *, typed: bool, count_only: bool) -> Iterator[pa.Table]:
    """A streaming CSV reader (one block in memory at a time); numbers as float64 or as text."""
    header = _wrap_read_error(file, "CSV", lambda: _csv_header(file))
    columns = _wanted(file, header, count_only)
    types = {name: pa.string() for name in columns if name in OPTIONAL_COLUMNS}
    if not count_only:
        types.update({name: (pa.float64() if typed else pa.string()) for name in FEATURES})
    try:  # a conversion error (ArrowInvalid) goes up: the tolerant reader takes over
        reader = pacsv.open_csv(
            file.path,
            read_options=pacsv.ReadOptions(block_size=READ_BLOCK_BYTES),
            convert_options=pacsv.ConvertOptions(
                column_types=types, include_columns=columns, strings_can_be_null=True
            ),
        )
    except OSError as exc:
        raise BadInputError(f"input {file.path} could not be read as CSV: {exc}.") from None
    for batch in reader:
        yield _normalise(pa.Table.from_batches([batch]), count_only)


def _csv_header(file: InputFile) -> list[str]:
    with pacsv.open_csv(file.path, read_options=pacsv.ReadOptions(block_size=1 << 16)) as reader:
        return list(reader.schema.names)


def _wanted(file: InputFile, names: Sequence[str], count_only: bool) -> list[str]:
    if count_only:
        return [FEATURES[0]] if FEATURES[0] in names else list(names[:1])
    _require_features(file, names)
    return [name for name in (*OPTIONAL_COLUMNS, *FEATURES) if name in names]


def _jsonl_schema() -> pa.Schema:
    return pa.schema(
        [("id", pa.string()), *[(name, pa.float64()) for name in FEATURES], ("sent_at", pa.string())]
    )


def _jsonl_fast(file: InputFile, count_only: bool) -> Iterator[pa.Table]:
    if not count_only:
        _check_jsonl_head(file)
    try:  # a conversion error (ArrowInvalid) goes up to the tolerant reader
        reader = pajson.open_json(
            file.path,
            read_options=pajson.ReadOptions(block_size=READ_BLOCK_BYTES),
            parse_options=pajson.ParseOptions(
                explicit_schema=_jsonl_schema(), unexpected_field_behavior="ignore"
            ),
        )
    except OSError as exc:
        raise BadInputError(f"input {file.path} could not be read as JSON Lines: {exc}.") from None
    for batch in reader:
        yield _normalise(pa.Table.from_batches([batch]), count_only)


def _check_jsonl_head(file: InputFile) -> None:
    """A missing field fails at once, like a missing column: judged on the first record."""
    with file.path.open("rb") as handle:
        for line in handle:
            if line.strip():
                try:
                    first = orjson.loads(line)
                except orjson.JSONDecodeError:
                    return  # the row is rejected on its own
                if isinstance(first, dict):
                    _require_features(file, list(first))
                return


def _tolerant_tables(file: InputFile, batch_rows: int, count_only: bool) -> Iterator[pa.Table]:
    if file.kind == "csv":
        yield from _csv_tables(file, typed=False, count_only=count_only)
        return
    yield from _jsonl_tolerant(file, batch_rows)


def _jsonl_tolerant(file: InputFile, batch_rows: int) -> Iterator[pa.Table]:
    """Line by line (only after the fast reader failed): every line becomes a row or a reject."""
    with file.path.open("rb") as handle:
        lines: list[bytes] = []
        for line in handle:
            if line.strip():
                lines.append(line)
                if len(lines) >= batch_rows:
                    yield _jsonl_rows(lines)
                    lines = []
        if lines:
            yield _jsonl_rows(lines)


def _jsonl_rows(lines: Sequence[bytes]) -> pa.Table:
    n = len(lines)
    ids: list[str | None] = [None] * n
    sent: list[str | None] = [None] * n
    reasons: list[str | None] = [None] * n
    values = np.full((n, len(FEATURES)), np.nan)
    for i, line in enumerate(lines):
        try:
            record = check_record(orjson.loads(line), require_id=False)
        except orjson.JSONDecodeError as exc:
            reasons[i] = f"invalid JSON: {exc}"
        except RecordInvalid as exc:
            reasons[i] = str(exc)
        else:
            ids[i], sent[i] = record.id, record.sent_at
            values[i] = record.features
    columns: dict[str, Any] = {"id": pa.array(ids, pa.string())}
    columns.update({name: pa.array(values[:, j]) for j, name in enumerate(FEATURES)})
    columns["sent_at"] = pa.array(sent, pa.string())
    columns["_reason"] = pa.array(reasons, pa.string())
    return pa.table(columns)


def _to_float(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Numbers as float64; text parsed where it is a number, null (→ NaN, rejected) where not."""
    kind = column.type
    if pa.types.is_floating(kind) or pa.types.is_integer(kind) or pa.types.is_decimal(kind):
        return column.cast(pa.float64())
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        try:
            return column.cast(pa.float64())
        except pa.ArrowInvalid:
            numeric = pc.match_substring_regex(column, _NUMBER)
            cleaned = pc.utf8_trim_whitespace(pc.if_else(numeric, column, pa.scalar(None, column.type)))
            return cleaned.cast(pa.float64())
    if pa.types.is_null(kind):
        return pa.chunked_array([pa.nulls(len(column), pa.float64())])
    raise pa.ArrowInvalid(f"column of type {kind} is not numeric")


def _normalise(table: pa.Table, count_only: bool = False) -> pa.Table:
    if count_only:
        return table
    columns: dict[str, Any] = {}
    if "id" in table.column_names:
        ids = table["id"]
        columns["id"] = ids if pa.types.is_string(ids.type) else ids.cast(pa.string())
    for name in FEATURES:
        columns[name] = _to_float(table[name])
    for extra in ("sent_at", "_reason", "_ts"):
        if extra in table.column_names:
            columns[extra] = table[extra]
    return pa.table(columns)


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
