"""Batch backfill: rescore files (CSV, Parquet, JSON Lines) or a topic range with one model version.

The run is a loop over fixed-size chunks (:mod:`consumers.backfill.readers` reads them, exactly
``--chunk-size`` rows each): each chunk is validated column-wise (:func:`ml.schema.check_columns`),
scored in one call (:meth:`ml.predict.Scorer.score`) and written into the work folder
``<output>.parts/`` (:mod:`consumers.backfill.parts`), whose ``manifest.json`` records a fingerprint of
the arguments and inputs, the run's ``scored_at`` and every completed chunk. A run that is killed
and started again with the same arguments skips what is done and ends with the same output; at
the end the results move into place atomically and the folder is removed.

Output columns: ``id`` (the input's, or the row number across the input, from 0), the four
features, the input's other columns in input order (pass-through, so results join back; not with
``--drop-extra-columns``), ``label``, one ``prob_<class>`` column per class, ``compare_label`` (with
``--compare-with``), ``model_name``, ``model_version``, ``scored_at``.

Bad rows go to ``<stem>.rejects.jsonl`` beside the output:
``{"row", "line", "id", "input", "errors": [{"loc", "msg"}]}``. ``row`` is the 1-based data row of
the file named by ``input`` (the first row after a CSV header is row 1; for ``--from-topic`` the
first record of the range is row 1). ``line`` (CSV only) is the 1-based line in the file, the
header being line 1: ``row + 1`` unless a quoted value spans lines (blank lines are skipped and not
counted). ``drift-report`` numbers skipped rows the same way.

Modules: :mod:`.options` (what the command line asks for, the summary), :mod:`.chunks` (one
chunk validated, scored and laid out as output columns), this module (the run: sources, sinks,
resume), :mod:`.files`, :mod:`.readers`, :mod:`.writers`, :mod:`.sinks` and :mod:`.topics` (sources and
sinks), :mod:`.parts` (the work folder), :mod:`.pipeline` (reader and writer threads),
:mod:`.drift_windows` (drift over history).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from consumers.backfill import files as inputs
from consumers.backfill import readers
from consumers.backfill.chunks import (
    Chunk,
    UnitDone,
    iter_file_chunks,
    iter_topic_chunks,
    score_chunk,
    validate,
    with_checks,
)
from consumers.backfill.options import BackfillOptions, BackfillSummary, check_options
from consumers.backfill.output import ConstantColumns, output_schema
from consumers.backfill.parts import Progress, Workspace, fingerprint
from consumers.backfill.pipeline import OrderedWriter, prefetch
from consumers.backfill.sinks import FileSink
from consumers.backfill.truth import load_labels, performance
from ml.errors import BadInputError
from ml.logs import log_event
from ml.metrics import Metrics
from ml.model import LoadedModel, ModelHolder
from ml.predict import Scorer, utc_now_iso
from ml.settings import Settings

Hook = Callable[[], None]


def _nothing() -> None:
    return None


logger = logging.getLogger(__name__)


def run_backfill(
    settings: Settings,
    options: BackfillOptions,
    *,
    on_ready: Hook = _nothing,
    after_chunk: Hook = _nothing,
) -> BackfillSummary:
    """Rescore the input; see the module docstring. Raises :class:`BadInputError` (exit 2) on bad input.

    ``on_ready`` runs once set-up is done, before the chunk loop (the entry point's GC policy);
    ``after_chunk`` after each chunk is handed to the writer (a test can kill a run part way).
    """
    started = time.monotonic()
    check_options(options)
    from consumers.backfill.drift_windows import WindowSpec

    spec = WindowSpec.parse(options.drift_window) if options.drift_window else None
    files = inputs.discover_inputs(options.input) if options.input is not None else []
    owned = inputs.shard_files(files, *options.shard)

    model = _load(settings, options.model_uri or settings.model_uri, with_reference=spec is not None)
    compare_uri = settings.challenger_uri if options.challenger else options.compare_with
    compare_model = _load(settings, compare_uri, with_reference=False) if compare_uri else None
    labels = load_labels(options.labels) if options.labels is not None else None
    scorer = Scorer(ModelHolder(model), Metrics())

    output = options.output
    workspace: Workspace | None = None
    scored_at = utc_now_iso()
    if output is not None:
        workspace = Workspace(output, _fingerprint(options, files, model, compare_model))
        workspace.open(scored_at)
        scored_at = workspace.scored_at
    drift = _drift_windows(settings, spec, model, scored_at, workspace) if spec is not None else None

    if options.from_topic is not None:
        chunks: Iterator[Chunk | UnitDone] = iter_topic_chunks(settings, options, workspace)
        total = None
    else:
        chunks = iter_file_chunks(files, owned, options.chunk_rows, workspace, reread_done=drift is not None)
        sizes = [readers.parquet_rows(f) for f, own in zip(files, owned, strict=True) if own]
        total = None if any(s is None for s in sizes) else sum(s or 0 for s in sizes)

    publisher = None
    if options.to_topic is not None:
        from consumers.backfill.topic_sink import TopicPublisher

        publisher = TopicPublisher(settings, options.to_topic)
    out_kind = inputs.output_kind(output) if output is not None and publisher is None else None
    extras = [] if options.drop_extra_columns else readers.extra_fields(files)
    schema = output_schema(
        model.classes, compare_model is not None, dictionary=out_kind == "parquet", extras=extras
    )
    sink = FileSink(workspace, out_kind, schema) if workspace is not None else None
    writer = OrderedWriter() if sink is not None else None
    progress = Progress(total, options.progress)
    constants = ConstantColumns()
    stats: list[dict[str, Any]] = []
    resumed = 0
    on_ready()  # set-up is done: the loop allocates little
    try:
        with contextlib.closing(prefetch(with_checks(chunks, workspace))) as items:
            for chunk in items:
                if isinstance(chunk, UnitDone):
                    if writer is not None and workspace is not None:
                        writer.submit(workspace.complete_unit, chunk.unit, chunk.rows)
                    continue
                if workspace is not None and workspace.done(chunk.unit, chunk.index):
                    resumed += 1
                    if drift is not None:
                        _ids, matrix, valid = validate(chunk)
                        drift.add(matrix[valid], _times(chunk.table, valid))
                    progress.update(chunk.table.num_rows)
                    continue
                result = score_chunk(
                    chunk, scorer, compare_model, scored_at, schema, options.strict, constants, labels
                )
                if drift is not None:
                    drift.add(result.matrix, _times(chunk.table, result.valid))
                if publisher is not None:
                    publisher.send(result.ids.to_pylist(), result.scores, scored_at)
                if writer is not None and sink is not None:
                    writer.submit(sink.write, chunk, result, drift.closed if drift is not None else 0)
                stats.append(result.stats)
                progress.update(chunk.table.num_rows)
                after_chunk()
        if writer is not None:
            writer.drain()
        if drift is not None:
            drift.finish()
    except BadInputError:
        if writer is not None:
            writer.close()
        if sink is not None:
            sink.close()
        if workspace is not None:
            shutil.rmtree(workspace.dir, ignore_errors=True)
        raise
    finally:
        if writer is not None:
            writer.close()
        if sink is not None:
            sink.close()
        progress.close()
        if publisher is not None:
            publisher.close()

    if workspace is not None:
        stats = [v for _, v in sorted(workspace.manifest["parts"].items())]
    summary = _summarise(stats, model, compare_model)
    names = {"model": f"{model.name} v{model.version}"}
    if compare_model is not None:
        names["compare"] = f"{compare_model.name} v{compare_model.version}"
    summary.performance = performance(stats, names)
    summary.resumed_parts = resumed if workspace is not None and workspace.resumed else 0
    summary.drift_reports = drift.reports if drift is not None else []
    if drift is not None:
        summary.drift_late_rows, summary.drift_untimed_rows = drift.late_rows, drift.untimed_rows
    if output is not None and sink is not None:
        sink.finish(output, summary)
    summary.seconds = time.monotonic() - started
    log_event(
        logger,
        "backfill finished",
        rows=summary.rows,
        rejects=summary.rejects,
        seconds=round(summary.seconds, 3),
    )
    return summary


def _times(table: pa.Table, valid: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64] | None:
    from consumers.backfill.drift_windows import row_times_ms

    times = row_times_ms(table)
    return None if times is None else times[valid]


def _drift_windows(
    settings: Settings, spec: Any, model: LoadedModel, scored_at: str, workspace: Workspace | None
) -> Any:
    from consumers.backfill.drift_windows import DriftWindows
    from ml.drift import load_drift_params

    if model.reference is None:
        raise BadInputError(
            f"model {model.name} v{model.version} has no reference data: --drift-window needs it."
        )
    return DriftWindows(
        spec,
        model.reference,
        params=load_drift_params(),
        directory=settings.reports_dir / "backfill",
        keep=settings.reports_keep,
        min_rows=settings.drift_min_rows,
        model_version=model.version,
        fallback_time=datetime.fromisoformat(scored_at.replace("Z", "+00:00")),
        already_saved=int(workspace.manifest.get("drift_saved", 0)) if workspace is not None else 0,
        max_open_windows=settings.drift_max_open_windows,
        workspace_dir=settings.reports_dir / "workspace",
    )


def _load(settings: Settings, uri: str, *, with_reference: bool) -> LoadedModel:
    """The version ``uri`` resolves to now: its verified NumPy form from the cache when there is one
    (no MLflow or scikit-learn import, :mod:`ml.model_cache`), else loaded through MLflow and cached."""
    from ml import model_cache

    cache, tracking_uri = settings.model_cache_dir, settings.mlflow_tracking_uri
    if not with_reference:  # reference data for drift windows come from the run's artifacts
        cached = model_cache.load_cached(cache, tracking_uri, uri)
        if cached is not None:
            log_event(logger, "model_loaded", logging.DEBUG, uri=uri, version=cached.version, source="cache")
            return cached
    from ml import tracking
    from ml.model import load_model

    model = load_model(tracking.client(tracking_uri), uri, with_reference=with_reference)
    model_cache.store(cache, tracking_uri, model)
    return model


def _fingerprint(
    options: BackfillOptions, files: list[inputs.InputFile], model: LoadedModel, compare: LoadedModel | None
) -> str:
    return fingerprint(
        {
            "inputs": [f.fingerprint() for f in files],
            "topic": [options.from_topic, str(options.start), str(options.end)],
            "output": str(options.output.resolve()) if options.output is not None else None,
            "chunk_rows": options.chunk_rows,
            "strict": options.strict,
            "model": [model.name, model.version],
            "compare": [compare.name, compare.version] if compare is not None else None,
            "shard": list(options.shard),
            "to_topic": options.to_topic,
            "drift_window": options.drift_window,
            "drop_extra_columns": options.drop_extra_columns,
        }
    )


def _summarise(
    stats: list[dict[str, Any]], model: LoadedModel, compare: LoadedModel | None
) -> BackfillSummary:
    summary = BackfillSummary(model=f"{model.name} v{model.version}")
    matrix: dict[str, dict[str, int]] = {}
    for part in stats:
        summary.rows += int(part["rows"])
        summary.scored += int(part["scored"])
        summary.rejects += int(part["rejects"])
        for label, count in part["labels"].items():
            summary.labels[label] = summary.labels.get(label, 0) + int(count)
        for a, row in part.get("confusion", {}).items():
            for b, count in row.items():
                matrix.setdefault(a, {})[b] = matrix.get(a, {}).get(b, 0) + int(count)
    if compare is not None:
        agree = sum(row.get(a, 0) for a, row in matrix.items())
        summary.compare = {
            "model": summary.model,
            "compare_model": f"{compare.name} v{compare.version}",
            "rows": summary.scored,
            "agree": agree,
            "disagree": summary.scored - agree,
            "agreement": round(agree / summary.scored, 6) if summary.scored else None,
            "confusion": {a: dict(sorted(row.items())) for a, row in sorted(matrix.items())},
        }
    return summary
