"""Writing backfill outputs: atomic files, Arrow IPC parts, JSON Lines and CSV rows, Parquet (streamed or merged)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq


def write_atomic_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_ipc_part(table: pa.Table, path: Path) -> None:
    """One Arrow IPC part of a Parquet output: no encoding twice, the merge writes Parquet once."""
    tmp = path.with_name(f".{path.name}.tmp")
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    os.replace(tmp, path)


_NEEDS_ESCAPE = r'["\\\x00-\x1f]'


def _json_strings(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """JSON string literals; per-value encoding only when some value needs escaping."""
    text = column.cast(pa.large_string())
    if pc.any(pc.match_substring_regex(text, _NEEDS_ESCAPE)).as_py():
        return pa.chunked_array(
            [pa.array([orjson.dumps(v).decode() for v in text.to_pylist()], pa.large_string())]
        )
    return pc.binary_join_element_wise(_lit('"'), text, _lit('"'), _lit(""))


def _json_values(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """JSON literals of a column: numbers and booleans as they are, the rest as strings, ``null``
    for nulls (pass-through columns may have them) and for non-finite numbers."""
    kind = column.type
    if pa.types.is_floating(kind):
        finite = pc.is_finite(column)
        if not pc.all(finite).as_py():
            column = pc.if_else(finite, column, pa.scalar(None, kind))
        value = column.cast(pa.large_string())
    elif pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        value = column.cast(pa.large_string())
    else:
        value = _json_strings(column)
    return pc.fill_null(value, _lit("null")) if value.null_count else value


def _lit(text: str) -> pa.Scalar:
    return pa.scalar(text, pa.large_string())


def jsonl_bytes(table: pa.Table) -> bytes:
    if table.num_rows == 0:
        return b""
    pieces: list[Any] = []
    for position, name in enumerate(table.column_names):
        value = _json_values(table[name])
        pieces += [_lit(("{" if position == 0 else ",") + orjson.dumps(name).decode() + ":"), value]
    pieces.append(_lit("}\n"))
    lines = pc.binary_join_element_wise(*pieces, _lit("")).combine_chunks()
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int64)[lines.offset : lines.offset + len(lines) + 1]
    data = lines.buffers()[2]
    return data.to_pybytes()[int(offsets[0]) : int(offsets[-1])] if data is not None else b""


def append_rows(table: pa.Table, kind: str, handle: BinaryIO, *, header: bool = False) -> None:
    """CSV or JSON Lines rows at the end of an open file."""
    if kind == "csv":
        pacsv.write_csv(table, handle, pacsv.WriteOptions(include_header=header))
    else:
        handle.write(jsonl_bytes(table))


def parquet_writer(path: Path, schema: pa.Schema) -> pq.ParquetWriter:
    """The output's Parquet settings, in one place: the streamed output and the merge of a resumed
    run must write the same file. Strings other than ids are dictionary-encoded; the Arrow schema
    is not stored, so columns written from Arrow dictionaries read back as plain strings."""
    dictionary = [f.name for f in schema if f.name != "id" and _is_text(f.type)]
    # Probabilities are incompressible doubles: snappy would spend ~15 ms per million values on them.
    compression = {f.name: "none" if f.name.startswith("prob_") else "snappy" for f in schema}
    return pq.ParquetWriter(
        path, schema, use_dictionary=dictionary, compression=compression, store_schema=False
    )


def _is_text(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(kind) or (pa.types.is_dictionary(kind) and pa.types.is_string(kind.value_type))
    )


def merge_parquet_parts(parts: Sequence[Path], destination: Path, schema: pa.Schema) -> None:
    """Arrow IPC parts, in order, into one Parquet file at ``destination`` (temp file + rename)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = destination.with_name(f".{destination.name}.tmp")
    with parquet_writer(tmp, schema) as writer:
        for part in parts:
            with pa.memory_map(str(part)) as source:
                writer.write_table(pa.ipc.open_file(source).read_all())
    os.replace(tmp, destination)
