"""``iris-scorer backfill --engine spark``: the same chunk scoring, on Apache Spark's executors.

The driver resolves the model once (alias → version, :func:`consumers.backfill.run._load`) and
broadcasts the loaded version, so every executor scores with it: a run carries one model version
even if the alias moves while it runs. Executors never talk to the registry.

The input (CSV read as text, Parquet, JSON Lines; a local path, a glob, or any URI Spark reads such
as ``abfss://…``) goes through ``mapInArrow``: each Arrow batch is normalised
(:func:`consumers.backfill.columns.normalise`) and scored by
:func:`consumers.backfill.chunks.score_chunk`, the local engine's own function: the same checks,
the same output columns, the same reject reasons. A batch's scored rows and its rejects leave as one
Arrow batch with a ``_kind`` column, written once, partitioned by ``_kind``, to a staging directory:
``_kind=scored`` becomes ``--output`` (a Parquet directory with Spark's ``_SUCCESS`` marker) and
``_kind=rejected`` becomes ``<stem>.rejects/`` (JSON Lines, ``{"row", "id", "input", "errors"}``;
``row`` is null: a row's position in its file is not known to an executor). Both appear only once
the job has succeeded (a rename of the committed staging directory).

Differences from the local engine, by design: rows need an ``id`` column to be told apart (a null
id is filled from the batch position, ``s<partition>-<row>``); ``--from-topic``, ``--to-topic``,
``--drift-window`` and ``--shard`` are local-engine options.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from consumers.backfill.options import BackfillOptions, BackfillSummary
from ml.errors import BadInputError
from ml.logs import log_event
from ml.settings import Settings

logger = logging.getLogger(__name__)
KIND, REJECT = "_kind", "_reject"


def _session(master: str | None, batch_rows: int) -> Any:
    """A session on ``master``; with None, the master Spark's settings give (``spark-submit``,
    ``spark-defaults.conf``), which is ``local[*]`` when none does."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder if master is None else SparkSession.builder.master(master)
    try:
        return (
            builder.appName("iris-scorer backfill")
            .config("spark.ui.enabled", "false")
            .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(batch_rows))
            .config("spark.sql.session.timeZone", "UTC")
            .getOrCreate()
        )
    except Exception as exc:  # a bad master URL, no Java: one sentence
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        where = f"--master {master!r}" if master is not None else "Spark's master setting"
        raise BadInputError(f"{where}: Spark could not start ({first[:300]}).") from None


def _read(spark: Any, source: str) -> Any:
    """The input as a DataFrame: CSV as text (validated by our checks, not Spark's casts)."""
    from pyspark.sql import functions as f

    suffix = source.rstrip("/").rsplit(".", 1)[-1].lower()
    try:
        if suffix == "parquet":
            frame = spark.read.parquet(source)
        elif suffix in ("jsonl", "ndjson", "json"):
            frame = spark.read.option("primitivesAsString", "true").json(source)
        else:
            frame = spark.read.option("header", "true").option("inferSchema", "false").csv(source)
    except Exception as exc:
        if "PATH_NOT_FOUND" in str(exc) or "does not exist" in str(exc):
            raise BadInputError(f"input {source} does not exist.") from None
        raise BadInputError(f"input {source} could not be read: {str(exc).splitlines()[0][:300]}.") from None
    from ml.schema import FEATURES

    missing = [name for name in FEATURES if name not in frame.columns]
    if missing:
        raise BadInputError(
            f"input {source} has no column '{missing[0]}' (expected columns: {', '.join(FEATURES)})."
        )
    return frame.withColumn("_file", f.input_file_name())


def _scorer(model: Any, compare: Any, scored_at: str, schema: pa.Schema, strict: bool) -> Any:
    """The function ``mapInArrow`` runs on each executor (pickled with the broadcast handles)."""

    def score_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import TaskContext

        from consumers.backfill.chunks import Chunk, score_chunk
        from consumers.backfill.columns import normalise
        from consumers.backfill.output import ConstantColumns
        from ml.metrics import Metrics
        from ml.model import ModelHolder
        from ml.predict import Scorer

        loaded, second = model.value, compare.value if compare is not None else None
        scorer, constants = Scorer(ModelHolder(loaded), Metrics()), ConstantColumns()
        context = TaskContext.get()
        partition = context.partitionId() if context is not None else 0
        seen = 0
        out_schema = schema.append(pa.field(REJECT, pa.string())).append(pa.field(KIND, pa.string()))
        for batch in batches:
            table = pa.Table.from_batches([batch])
            origin = str(table["_file"][0].as_py()) if table.num_rows else ""
            table = normalise(table.drop_columns(["_file"]))
            if "id" in table.column_names and table["id"].null_count:
                filled = pa.array([f"s{partition}-{seen + i}" for i in range(table.num_rows)])
                table = table.set_column(
                    table.column_names.index("id"), "id", pc.coalesce(table["id"], filled)
                )
            chunk = Chunk(table, unit=partition, index=seen, first_row=seen, origin=origin)
            result = score_chunk(chunk, scorer, second, scored_at, schema, strict, constants)
            seen += table.num_rows
            scored = result.table
            n = scored.num_rows
            scored = scored.append_column(REJECT, pa.nulls(n, pa.string())).append_column(
                KIND, pa.array(["scored"] * n, pa.string())
            )
            yield from scored.cast(out_schema).to_batches()
            if result.rejects:
                k = len(result.rejects)
                columns = [pa.nulls(k, field.type) for field in schema]
                columns += [
                    pa.array([r.decode().rstrip("\n") for r in result.rejects]),
                    pa.array(["rejected"] * k),
                ]
                yield from pa.Table.from_arrays(columns, schema=out_schema).to_batches()

    return score_batches


def _spark_schema(schema: pa.Schema) -> Any:
    from pyspark.sql.pandas.types import from_arrow_schema

    plain = pa.schema(
        [pa.field(f.name, f.type.value_type if pa.types.is_dictionary(f.type) else f.type) for f in schema]
    )
    return from_arrow_schema(plain.append(pa.field(REJECT, pa.string())).append(pa.field(KIND, pa.string())))


def run_spark(settings: Settings, options: BackfillOptions, master: str | None) -> BackfillSummary:
    """Score ``options.input`` on Spark; see the module docstring."""
    from consumers.backfill.output import output_schema
    from consumers.backfill.run import _load
    from ml.predict import utc_now_iso

    started = time.monotonic()
    unsupported = [
        flag
        for flag, used in (
            ("--from-topic", options.from_topic),
            ("--to-topic", options.to_topic),
            ("--drift-window", options.drift_window),
            ("--labels", options.labels),
            ("--shard", options.shard != (0, 1)),
        )
        if used
    ]
    if unsupported:
        raise BadInputError(f"{unsupported[0]} is an option of the local engine, not of --engine spark.")
    if options.input is None or options.output is None:
        raise BadInputError(
            "--engine spark needs --input (a path, glob or URI) and --output (a Parquet directory)."
        )
    output = Path(options.output)
    if output.suffix != ".parquet":
        raise BadInputError(
            f"--output {output}: --engine spark writes a Parquet directory: name it <name>.parquet."
        )
    if "://" not in options.input and not glob.glob(options.input):
        raise BadInputError(f"input {options.input} does not exist.")

    model = _load(settings, options.model_uri or settings.model_uri, with_reference=False)
    compare_uri = settings.challenger_uri if options.challenger else options.compare_with
    compare = _load(settings, compare_uri, with_reference=False) if compare_uri else None
    spark = _session(master, options.chunk_rows)
    log_event(
        logger,
        "spark_model_resolved",
        model=f"{model.name} v{model.version}",
        master=spark.sparkContext.master,
    )
    try:
        frame = _read(spark, options.input)
        extras = [
            pa.field(name, pa.string())
            for name in frame.columns
            if name not in ("_file",) and name in _pass_through(frame.columns)
        ]
        frame = frame.select(
            [frame[c].cast("string") if c in {e.name for e in extras} else frame[c] for c in frame.columns]
        )
        schema = output_schema(model.classes, compare is not None, extras=extras)
        scored_at = utc_now_iso()
        shared = spark.sparkContext.broadcast(model)
        shared_compare = spark.sparkContext.broadcast(compare) if compare is not None else None
        fn = _scorer(shared, shared_compare, scored_at, schema, options.strict)
        staging = output.with_name(f".{output.name}.staging-{uuid.uuid4().hex[:8]}")
        from pyspark import StorageLevel
        from pyspark.sql import functions as f

        # computed once (kept in memory, spilled to disk), written twice: the rows and the rejects
        scored = frame.mapInArrow(fn, _spark_schema(schema)).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            scored.filter(f.col(KIND) == "scored").drop(KIND, REJECT).write.parquet(str(staging / "scored"))
            scored.filter(f.col(KIND) == "rejected").select(REJECT).write.text(str(staging / "rejected"))
        except Exception as exc:
            text = str(exc)
            marker = "--strict stops the run"
            if marker in text:
                line = next(line for line in text.splitlines() if marker in line)
                raise BadInputError(line.split("BadInputError: ", 1)[-1].strip()) from None
            raise
        finally:
            scored.unpersist()
        summary = _finish(spark, staging, output)
    finally:
        spark.stop()
    summary.model = f"{model.name} v{model.version}"
    summary.seconds = time.monotonic() - started
    return summary


def _pass_through(names: list[str]) -> list[str]:
    from consumers.backfill.columns import pass_through

    return pass_through([n for n in names if n != "_file"])


def _finish(spark: Any, staging: Path, output: Path) -> BackfillSummary:
    """Move the committed staging directory's two parts into place; count them."""
    summary = BackfillSummary()
    rejects = output.with_name(output.stem + ".rejects")
    for old in (output, rejects):
        if old.exists():
            shutil.rmtree(old)
    os.replace(staging / "scored", output)  # committed: Spark wrote its _SUCCESS marker there
    frame = spark.read.parquet(str(output))
    summary.scored = frame.count()
    summary.labels = {r["label"]: int(r["count"]) for r in frame.groupBy("label").count().collect()}
    summary.rejects = spark.read.text(str(staging / "rejected")).count()
    os.replace(staging / "rejected", rejects)
    summary.rows = summary.scored + summary.rejects
    summary.output, summary.rejects_path = output, rejects
    with contextlib.suppress(OSError):
        shutil.rmtree(staging)
    return summary
