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

from collections.abc import Iterable, Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from consumers.backfill.columns import concat, normalise, pass_through, wanted, wrap_read_error
from consumers.backfill.files import InputFile
from consumers.backfill.read_csv import csv_header, csv_tables
from consumers.backfill.read_jsonl import jsonl_extras, jsonl_fast, jsonl_tolerant
from ml.errors import BadInputError


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
            for name in pass_through(wrap_read_error(file, "CSV", lambda: csv_header(file)))
        ]
    if file.kind == "jsonl":
        return [(name, pa.string()) for name in jsonl_extras(file)]
    schema = wrap_read_error(file, "Parquet", lambda: pq.read_schema(file.path))
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
            whole = concat(buffer)
            yield whole.slice(0, chunk_rows)
            rest = whole.slice(chunk_rows)
            buffer, buffered = ([rest] if rest.num_rows else []), rest.num_rows
    if buffered:
        yield concat(buffer)


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


def _fast_tables(file: InputFile, batch_rows: int, count_only: bool) -> Iterator[pa.Table]:
    if file.kind == "jsonl":
        yield from jsonl_fast(file, count_only)
        return
    if file.kind == "parquet":
        # ParquetFile streams pages (pre_buffer off); a dataset scan would hold whole row groups.
        parquet = wrap_read_error(file, "Parquet", lambda: pq.ParquetFile(file.path, pre_buffer=False))
        columns = wanted(file, parquet.schema_arrow.names, count_only)
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=columns):
            yield normalise(pa.Table.from_batches([batch]), count_only)
        return
    yield from csv_tables(file, typed=True, count_only=count_only)


def _tolerant_tables(file: InputFile, batch_rows: int, count_only: bool) -> Iterator[pa.Table]:
    if file.kind == "csv":
        yield from csv_tables(file, typed=False, count_only=count_only)
        return
    yield from jsonl_tolerant(file, batch_rows, [] if count_only else jsonl_extras(file))
