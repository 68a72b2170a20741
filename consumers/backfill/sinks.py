"""Where scored chunks go when there is an ``--output``: parts in the work folder, then the output file."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

from consumers.backfill import writers
from consumers.backfill.chunks import (
    Chunk,
    ChunkResult,
)
from consumers.backfill.options import BackfillSummary, sibling
from consumers.backfill.parts import Workspace

Hook = Callable[[], None]


def _nothing() -> None:
    return None


logger = logging.getLogger(__name__)


class FileSink:
    """Where scored chunks go when there is an ``--output`` (see :mod:`consumers.backfill.parts`).

    :meth:`write` runs on the writer thread, one chunk at a time, in input order. A fresh run's
    Parquet output is also streamed into its final file as parts complete, and :meth:`finish`
    keeps that file when it holds exactly the run's parts in order; a resumed run (or one whose
    stream misses parts) merges the parts instead.
    """

    def __init__(self, workspace: Workspace, kind: str | None, schema: pa.Schema) -> None:
        self.workspace = workspace
        self.kind = kind
        self.schema = schema
        self.rejects = workspace.append_log("rejects.jsonl")
        self.rows = workspace.append_log(f"output.{kind}") if kind in ("csv", "jsonl") else None
        self.stream_path = workspace.dir / "output.parquet.stream"
        self.stream: Any = None
        self.streamed: list[str] = []  # parts written to the stream, in order
        self.streaming = kind == "parquet" and not workspace.resumed  # a resumed run merges anyway

    def write(self, chunk: Chunk, result: ChunkResult, drift_saved: int) -> None:
        name = self.workspace.part_name(chunk.unit, chunk.index)
        if self.kind == "parquet":
            writers.write_ipc_part(result.table, self.workspace.dir / f"{name}.arrow")
            if self.streaming:
                if self.stream is None:
                    self.stream = writers.parquet_writer(self.stream_path, self.schema)
                self.stream.write_table(result.table)
                self.streamed.append(name)
        elif self.rows is not None:
            writers.append_rows(result.table, str(self.kind), self.rows.handle, header=self.rows.size() == 0)
        if result.rejects:
            self.rejects.handle.write(b"".join(result.rejects))
        sizes = {self.rejects.path.name: self.rejects.size()}  # keyed by file name, as append_log reads them
        if self.rows is not None:
            sizes[self.rows.path.name] = self.rows.size()
        self.workspace.complete_part(
            chunk.unit, chunk.index, chunk.first_row, result.stats, drift_saved=drift_saved, sizes=sizes
        )

    def close(self) -> None:
        self.rejects.close()
        if self.rows is not None:
            self.rows.close()
        if self.stream is not None:
            self.stream.close()
            self.stream = None

    def finish(self, output: Path, summary: BackfillSummary) -> None:
        """Move the results into place (each one atomically) and remove the work folder."""
        self.close()
        output.parent.mkdir(parents=True, exist_ok=True)
        if self.kind == "parquet":
            names = self.workspace.ordered_parts()
            if self.streamed and self.streamed == names:
                os.replace(self.stream_path, output)
            else:
                parts = [self.workspace.dir / f"{n}.arrow" for n in names]
                writers.merge_parquet_parts(parts, output, self.schema)
        elif self.rows is not None:
            if self.kind == "csv" and self.rows.path.stat().st_size == 0:  # no rows at all: header only
                with self.rows.path.open("wb") as handle:
                    writers.append_rows(self.schema.empty_table(), "csv", handle, header=True)
            os.replace(self.rows.path, output)
        if self.kind is not None:
            summary.output = output
        summary.rejects_path = sibling(output, ".rejects.jsonl")
        os.replace(self.rejects.path, summary.rejects_path)
        if summary.compare is not None:
            summary.compare_path = sibling(output, ".compare.json")
            writers.write_atomic_bytes(
                summary.compare_path, orjson.dumps(summary.compare, option=orjson.OPT_INDENT_2)
            )
        if summary.performance is not None:
            summary.performance_path = sibling(output, ".performance.json")
            writers.write_atomic_bytes(
                summary.performance_path, orjson.dumps(summary.performance, option=orjson.OPT_INDENT_2)
            )
        shutil.rmtree(self.workspace.dir, ignore_errors=True)
