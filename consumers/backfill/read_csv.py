"""CSV input: a streaming reader (one block in memory at a time) that keeps rows in their places.

A row with the wrong number of values is taken out by Arrow's ``invalid_row_handler`` and put back
where it was as a row that carries its ``_reason`` (:class:`RaggedRows`), so row ``k`` of the
chunks is always the file's data row ``k + 1``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv

from consumers.backfill import columns as cols
from consumers.backfill.columns import concat, normalise, reason_rows, wanted, wrap_read_error
from consumers.backfill.files import InputFile
from ml.errors import BadInputError
from ml.schema import FEATURES, ragged_row_message


class RaggedRows:
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
            pieces.append(reason_rows(table.schema, [reason], count_only))
            position += 1
        if cursor < table.num_rows:
            pieces.append(table.slice(cursor))
        return concat(pieces)


def csv_tables(file: InputFile, *, typed: bool, count_only: bool) -> Iterator[pa.Table]:
    """A streaming CSV reader (one block in memory at a time); numbers as float64 or as text."""
    header = wrap_read_error(file, "CSV", lambda: csv_header(file))
    columns = wanted(file, header, count_only)
    types = {name: pa.string() for name in columns if name not in FEATURES}
    if not count_only:
        types.update({name: (pa.float64() if typed else pa.string()) for name in FEATURES})
    ragged = RaggedRows()
    try:  # a conversion error (ArrowInvalid) goes up: the tolerant reader takes over
        reader = pacsv.open_csv(
            file.path,
            # serial parsing: the invalid-row handler gets row numbers only then
            read_options=pacsv.ReadOptions(block_size=cols.READ_BLOCK_BYTES, use_threads=False),
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
            normalise(pa.Table.from_batches([batch]), count_only), done, False, count_only
        )
        done += table.num_rows
        yield table
    if ragged.rows:
        schema = normalise(reader.schema.empty_table(), count_only).schema
        yield ragged.put_back(schema.empty_table(), done, True, count_only)


def csv_header(file: InputFile) -> list[str]:
    with pacsv.open_csv(
        file.path,
        read_options=pacsv.ReadOptions(block_size=1 << 16, use_threads=False),
        parse_options=pacsv.ParseOptions(invalid_row_handler=lambda row: "skip"),
    ) as reader:
        return list(reader.schema.names)
