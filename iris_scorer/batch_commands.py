"""The batch commands of ``iris-scorer``: ``backfill`` and ``drift-report`` (registered on the app in
:mod:`iris_scorer.cli`, which adds error handling)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from iris_scorer import process
from iris_scorer.settings_env import settings_from_env
from ml.errors import BadInputError


def backfill(
    input: Annotated[
        str | None, typer.Option("--input", help="File, glob or folder of CSV/Parquet/JSONL.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", help="Output .parquet, .csv or .jsonl (rejects go beside it).")
    ] = None,
    chunk_size: Annotated[
        int, typer.Option("--chunk-size", min=1, help="Rows per chunk (bounds memory).")
    ] = 100_000,
    strict: Annotated[bool, typer.Option("--strict", help="Fail (exit 2) on the first invalid row.")] = False,
    model_uri: Annotated[
        str | None, typer.Option("--model-uri", help="Model to score with (default: IRIS_MODEL_URI).")
    ] = None,
    compare_with: Annotated[
        str | None,
        typer.Option(
            "--compare-with", help="Second model URI: adds compare_label, compare_prob_* and a summary."
        ),
    ] = None,
    challenger: Annotated[
        bool,
        typer.Option("--challenger", help="Compare with IRIS_CHALLENGER_URI (as --compare-with does)."),
    ] = False,
    labels: Annotated[
        Path | None,
        typer.Option("--labels", help="id,label file (CSV, Parquet, JSONL): a performance report per model."),
    ] = None,
    shard: Annotated[
        str, typer.Option("--shard", help="I/N: process only this share of the input files.")
    ] = "0/1",
    from_topic: Annotated[
        str | None, typer.Option("--from-topic", help="Read a time range of this topic instead of files.")
    ] = None,
    start: Annotated[str | None, typer.Option("--start", help="Range start (ISO time, inclusive).")] = None,
    end: Annotated[str | None, typer.Option("--end", help="Range end (ISO time, inclusive).")] = None,
    to_topic: Annotated[
        str | None, typer.Option("--to-topic", help="Publish predictions to this topic instead of a file.")
    ] = None,
    drift_window: Annotated[
        str | None,
        typer.Option("--drift-window", help="A drift report per window: rows (10000) or time (1h)."),
    ] = None,
    progress: Annotated[
        bool | None, typer.Option("--progress/--no-progress", help="Progress bar (default: on a TTY).")
    ] = None,
    drop_extra_columns: Annotated[
        bool,
        typer.Option(
            "--drop-extra-columns", help="Leave the input's other columns out (default: passed through)."
        ),
    ] = False,
    bootstrap_servers: Annotated[
        str | None,
        typer.Option(
            "--bootstrap-servers",
            help="Kafka bootstrap address(es) for --from-topic/--to-topic (default: IRIS_KAFKA_BOOTSTRAP_SERVERS).",
        ),
    ] = None,
    engine: Annotated[
        str, typer.Option("--engine", help="local (this process) or spark (PySpark, iris-scorer[spark]).")
    ] = "local",
    master: Annotated[
        str | None,
        typer.Option(
            "--master", help="--engine spark: local[N], spark://host:7077, k8s://… (default: local[*])."
        ),
    ] = None,
) -> None:
    """Rescore historical files or a topic range."""
    from consumers.backfill.options import BackfillOptions, parse_shard, parse_time
    from consumers.backfill.run import run_backfill

    options = BackfillOptions(
        input=input,
        output=output,
        chunk_rows=chunk_size,
        strict=strict,
        model_uri=model_uri,
        compare_with=compare_with,
        challenger=challenger,
        labels=labels,
        shard=parse_shard(shard),
        from_topic=from_topic,
        start=parse_time(start, "--start") if start else None,
        end=parse_time(end, "--end") if end else None,
        to_topic=to_topic,
        drift_window=drift_window,
        progress=progress,
        drop_extra_columns=drop_extra_columns,
    )
    if engine not in ("local", "spark"):
        raise BadInputError(f"--engine {engine!r}: use local or spark.")
    if engine == "spark":
        try:
            from consumers.backfill.spark_engine import run_spark
        except ImportError:
            raise BadInputError("--engine spark needs PySpark: pip install 'iris-scorer[spark]'.") from None
        # the entry point's process setting: Spark's Python workers run this environment's Python
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        summary = run_spark(settings_from_env(), options, master)
    else:
        if master is not None:
            raise BadInputError("--master is an option of --engine spark.")
        summary = run_backfill(
            settings_from_env(bootstrap_servers=bootstrap_servers), options, on_ready=process.resume_gc
        )
    typer.echo(summary.describe())


def drift_report(
    current: Annotated[Path, typer.Option("--current", help="CSV or Parquet of current features.")],
    output: Annotated[Path, typer.Option("--output", help="Report path: .html or .json.")],
    reference: Annotated[Path | None, typer.Option("--reference", help="Defaults to the champion's.")] = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Fail (exit 2) on the first invalid row instead of skipping it.")
    ] = False,
) -> None:
    """One drift report of current data against a reference (invalid rows are skipped and counted)."""
    from ml.drift_report import write_drift_report

    report = write_drift_report(current, reference, output, settings_from_env(), strict=strict)
    typer.echo(report.summary_line())
