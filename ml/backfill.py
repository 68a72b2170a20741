"""Batch backfill: rescore files (CSV, Parquet, JSON Lines) or a topic range with one model version.

The run is a loop over fixed-size chunks (:mod:`ml.backfill_io` reads them, exactly
``--chunk-size`` rows each): each chunk is validated column-wise (:func:`ml.schema.check_columns`),
scored in one call (:meth:`ml.predict.Scorer.score`) and written into the work folder
``<output>.parts/`` (:mod:`ml.backfill_parts`), whose ``manifest.json`` records a fingerprint of
the arguments and inputs, the run's ``scored_at`` and every completed chunk. A run that is killed
and started again with the same arguments skips what is done and ends with the same output; at
the end the results move into place atomically and the folder is removed.

Output columns: ``id`` (the input's, or the row number across the input, from 0),
the four features, ``label``, one ``prob_<class>`` column per class, ``compare_label`` (with
``--compare-with``), ``model_name``, ``model_version``, ``scored_at``. Bad rows go to
``<stem>.rejects.jsonl`` beside the output: ``{"row", "id", "input", "errors": [{"loc", "msg"}]}``.

``IRIS_BACKFILL_CHUNK_DELAY_S`` (tests only) sleeps that long after each chunk, so a test can
kill a run part way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from ml import backfill_io as bio
from ml.backfill_parts import Progress, Workspace, chunk_delay, fingerprint
from ml.backfill_pipeline import OrderedWriter, prefetch
from ml.errors import BadInputError
from ml.logs import log_event
from ml.metrics import Metrics
from ml.model import LoadedModel, ModelHolder
from ml.predict import Scorer, Scores, score, utc_now_iso
from ml.schema import FEATURES, ID_MAX_CHARS, check_columns, row_errors
from ml.settings import Settings
from ml.startup import resume_gc

logger = logging.getLogger(__name__)

SOURCE = "backfill"
DEFAULT_CHUNK_ROWS = 100_000


@dataclass(frozen=True)
class BackfillOptions:
    input: str | None = None
    output: Path | None = None
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    strict: bool = False
    model_uri: str | None = None
    compare_with: str | None = None
    shard: tuple[int, int] = (0, 1)
    from_topic: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    to_topic: str | None = None
    drift_window: str | None = None
    progress: bool | None = None  # None: a bar on a TTY, log lines otherwise


@dataclass
class BackfillSummary:
    rows: int = 0
    scored: int = 0
    rejects: int = 0
    labels: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    output: Path | None = None
    rejects_path: Path | None = None
    compare_path: Path | None = None
    compare: dict[str, Any] | None = None
    drift_reports: list[str] = field(default_factory=list)
    resumed_parts: int = 0
    model: str = ""

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def describe(self) -> str:
        labels = " ".join(f"{k}={v}" for k, v in sorted(self.labels.items())) or "-"
        lines = [
            f"backfill done: rows={self.rows} scored={self.scored} rejects={self.rejects} model={self.model}",
            f"labels: {labels}",
            f"wall_time={self.seconds:.2f}s rows_per_s={self.rows_per_second:,.0f}"
            + (f" resumed_parts={self.resumed_parts}" if self.resumed_parts else ""),
            f"output: {self.output if self.output is not None else '-'}",
        ]
        if self.rejects_path is not None:
            lines.append(f"rejects: {self.rejects_path}")
        if self.compare is not None:
            lines.append(f"compare: {orjson.dumps(self.compare).decode()} ({self.compare_path or '-'})")
        if self.drift_reports:
            lines.append(f"drift reports: {len(self.drift_reports)} (last: {self.drift_reports[-1]})")
        return "\n".join(lines)


#: what :func:`validate` finds in a chunk: ids, the feature matrix, which rows are valid
Checked = tuple[pa.ChunkedArray, npt.NDArray[np.float64], npt.NDArray[np.bool_]]


@dataclass(frozen=True)
class Chunk:
    """One normalised input table and where it sits: ``unit`` (input file index), ``index`` within
    the unit, ``first_row`` across the whole input, and where it came from (for rejects)."""

    table: pa.Table
    unit: int
    index: int
    first_row: int
    origin: str
    #: the result of :func:`validate`, when the reader thread has already run it
    checked: Checked | None = None


def sibling(output: Path, suffix: str) -> Path:
    """``out/preds.parquet`` → ``out/preds<suffix>`` (e.g. ``.rejects.jsonl``)."""
    return output.with_name(output.stem + suffix)


def parse_shard(text: str) -> tuple[int, int]:
    index, sep, count = text.partition("/")
    if not sep or not index.isdigit() or not count.isdigit() or not 0 <= int(index) < int(count):
        raise BadInputError(f"--shard {text!r} must be I/N with 0 <= I < N (e.g. 0/4).")
    return int(index), int(count)


def parse_time(text: str, option: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadInputError(
            f"{option} {text!r} is not an ISO timestamp (e.g. 2026-11-26T10:00:00Z)."
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# ---------------------------------------------------------------- scoring one chunk


def output_schema(classes: npt.NDArray[np.str_], compare: bool, *, dictionary: bool = False) -> pa.Schema:
    """The output columns. With ``dictionary`` (Parquet output) the label and the constant columns
    are Arrow dictionaries: built from the argmax indexes at no cost, written by Parquet as they are
    (no hashing of millions of equal strings) and read back as plain strings (see
    :func:`ml.backfill_io.parquet_writer`); Arrow IPC parts stay small too."""
    text = pa.dictionary(pa.int32(), pa.string()) if dictionary else pa.string()
    fields: list[tuple[str, pa.DataType]] = [("id", pa.string())]
    fields += [(name, pa.float64()) for name in FEATURES]
    fields += [("label", text)] + [(f"prob_{c}", pa.float64()) for c in classes.tolist()]
    if compare:
        fields.append(("compare_label", text))
    fields += [("model_name", text), ("model_version", text), ("scored_at", text)]
    return pa.schema(fields)


def output_table(
    ids: pa.ChunkedArray | pa.Array,
    features: list[pa.ChunkedArray],
    scores: Scores,
    compare: Scores | None,
    scored_at: str,
    schema: pa.Schema,
) -> pa.Table:
    """Columns straight from Arrow and numpy: no per-row Python."""
    n = len(scores)
    dictionary = pa.types.is_dictionary(schema.field("label").type)
    columns: list[Any] = [ids, *features]
    columns.append(_labels(scores, dictionary))
    by_class = np.ascontiguousarray(scores.probabilities.T)  # one copy, then zero-copy columns
    columns += [pa.array(by_class[j]) for j in range(len(scores.model.classes))]
    if compare is not None:
        columns.append(_labels(compare, dictionary))
    columns += [
        _constant(value, n, dictionary) for value in (scores.model.name, scores.model.version, scored_at)
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def _labels(scores: Scores, dictionary: bool) -> pa.Array:
    classes = pa.array(scores.model.classes.tolist(), pa.string())
    if dictionary:
        return pa.DictionaryArray.from_arrays(pa.array(scores.index.astype(np.int32)), classes)
    return pc.take(classes, pa.array(scores.index))


_CONSTANTS: dict[tuple[str, bool], pa.Array] = {}


def _constant(value: str, n: int, dictionary: bool) -> pa.Array:
    """``value`` repeated ``n`` times: a zero-copy slice of one array built once per value."""
    whole = _CONSTANTS.get((value, dictionary))
    if whole is None or len(whole) < n:
        if dictionary:
            zeros = pa.array(np.zeros(n, dtype=np.int32))
            whole = pa.DictionaryArray.from_arrays(zeros, pa.array([value], pa.string()))
        else:
            whole = pa.repeat(value, n)
        _CONSTANTS[(value, dictionary)] = whole
    return whole.slice(0, n)


def confusion(scores: Scores, compare: Scores) -> dict[str, dict[str, int]]:
    a, b = scores.model.classes, compare.model.classes
    ia, ib = scores.index, compare.index
    counts = np.bincount(ia * len(b) + ib, minlength=len(a) * len(b)).reshape(len(a), len(b))
    return {
        str(la): {str(lb): int(counts[i, j]) for j, lb in enumerate(b.tolist()) if counts[i, j]}
        for i, la in enumerate(a.tolist())
        if counts[i].any()
    }


def reject_lines(
    chunk: Chunk, ids: pa.ChunkedArray, matrix: npt.NDArray[np.float64], bad: npt.NDArray[np.intp]
) -> list[bytes]:
    """One JSON line per bad row (a loop over the bad rows only)."""
    table = chunk.table
    reasons = table["_reason"].to_pylist() if "_reason" in table.column_names else None
    raw_ids = table["id"].to_pylist() if "id" in table.column_names else None
    id_list = ids.to_pylist()
    lines = []
    for i in bad.tolist():
        errors: list[dict[str, Any]] = []
        if reasons is not None and reasons[i] is not None:
            errors.append({"loc": [], "msg": reasons[i]})
        else:
            errors = [e.to_dict() for e in row_errors(matrix[i])]
            rid = id_list[i]
            if rid is None or not 1 <= len(rid) <= ID_MAX_CHARS:
                errors.append({"loc": ["id"], "msg": f"must be 1-{ID_MAX_CHARS} characters"})
        record = {
            "row": chunk.first_row + i,
            "id": raw_ids[i] if raw_ids is not None else id_list[i],
            "input": chunk.origin,
            "errors": errors,
        }
        lines.append(orjson.dumps(record) + b"\n")
    return lines


@dataclass
class ChunkResult:
    table: pa.Table
    scores: Scores
    matrix: npt.NDArray[np.float64]
    ids: pa.ChunkedArray
    valid: npt.NDArray[np.bool_]
    rejects: list[bytes]
    stats: dict[str, Any]


def validate(chunk: Chunk) -> Checked:
    """Ids (row numbers filled in), the feature matrix and which rows are valid."""
    if chunk.checked is not None:
        return chunk.checked
    table = chunk.table
    ids, id_ok = bio.fill_ids(table, chunk.first_row)
    columns = {name: table[name].to_numpy() for name in FEATURES}
    matrix, valid = check_columns(columns)
    valid &= id_ok
    if "_reason" in table.column_names:
        valid &= np.asarray(pc.is_null(table["_reason"]).to_numpy(zero_copy_only=False), dtype=np.bool_)
    return ids, matrix, valid


def score_chunk(
    chunk: Chunk,
    scorer: Scorer,
    compare_model: LoadedModel | None,
    scored_at: str,
    schema: pa.Schema,
    strict: bool,
) -> ChunkResult:
    ids, matrix, valid = validate(chunk)
    bad = np.flatnonzero(~valid)
    rejects = reject_lines(chunk, ids, matrix, bad) if len(bad) else []
    if rejects and strict:
        first = orjson.loads(rejects[0])
        reasons = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'row'}: {e['msg']}" for e in first["errors"])
        raise BadInputError(
            f"{chunk.origin} row {first['row']} is invalid ({reasons}); --strict stops the run."
        )
    if len(bad):
        scorer.record_errors(SOURCE, "validation_error", len(bad))
    mask = pa.array(valid) if len(bad) else None
    good_ids = ids.filter(mask) if mask is not None else ids
    good = matrix[valid] if mask is not None else matrix
    features = [chunk.table[name] for name in FEATURES]
    if mask is not None:
        features = [column.filter(mask) for column in features]
    scores = scorer.score(good, SOURCE)
    compared = score(compare_model, good) if compare_model is not None else None
    table = output_table(good_ids, features, scores, compared, scored_at, schema)
    classes = scores.model.classes.tolist()
    counts: list[int] = np.bincount(scores.index, minlength=len(classes)).tolist() if len(scores) else []
    stats: dict[str, Any] = {
        "rows": chunk.table.num_rows,
        "scored": len(scores),
        "rejects": len(bad),
        "labels": {str(c): int(k) for c, k in zip(classes, counts, strict=False) if k},
    }
    if compared is not None:
        stats["confusion"] = confusion(scores, compared)
    return ChunkResult(table, scores, good, good_ids, valid, rejects, stats)


def with_checks(items: Iterator[Chunk | UnitDone], workspace: Workspace | None) -> Iterator[Chunk | UnitDone]:
    """Validate chunks ahead of scoring (in the reader thread: Arrow and numpy release the GIL, so
    the scoring thread only scores). Chunks a resumed run already has are passed on unchecked."""
    for item in items:
        if isinstance(item, Chunk) and not (workspace is not None and workspace.done(item.unit, item.index)):
            item = replace(item, checked=validate(item))
        yield item


@dataclass(frozen=True)
class UnitDone:
    """Marks the end of input file ``unit`` (``rows`` rows) in the chunk stream. It travels behind
    the file's last chunk, so the writer records it only once every part of the file is written:
    a resumed run skips a file the manifest counts only if nothing of it is missing."""

    unit: int
    rows: int


def iter_file_chunks(
    files: list[bio.InputFile],
    owned: list[bool],
    chunk_rows: int,
    workspace: Workspace | None,
    *,
    reread_done: bool = False,
) -> Iterator[Chunk | UnitDone]:
    """Chunks of the owned files; row numbers count every input file (other shards' too)."""
    last_owned = max((i for i, own in enumerate(owned) if own), default=-1)
    offset = 0
    for unit, file in enumerate(files):
        if unit > last_owned:
            return
        known = workspace.unit_rows(unit) if workspace is not None else None
        if not owned[unit]:
            rows = known if known is not None else bio.count_rows(file)
            if known is None:
                yield UnitDone(unit, rows)
            offset += rows
            continue
        if known is not None and not reread_done:  # every chunk of this file is done
            offset += known
            continue
        rows = 0
        for index, table in enumerate(bio.read_chunks(file, chunk_rows)):
            yield Chunk(table, unit, index, offset + rows, str(file.path))
            rows += table.num_rows
        if known is None:
            yield UnitDone(unit, rows)
        offset += rows


def iter_topic_chunks(settings: Settings, options: BackfillOptions) -> Iterator[Chunk]:
    from ml.backfill_topics import read_topic_range

    assert options.from_topic is not None
    tables = read_topic_range(settings, options.from_topic, options.start, options.end, options.chunk_rows)
    first_row = 0
    for index, table in enumerate(bio.rechunk(tables, options.chunk_rows)):
        yield Chunk(table, 0, index, first_row, options.from_topic)
        first_row += table.num_rows


# ---------------------------------------------------------------- the run


def check_options(options: BackfillOptions) -> None:
    if (options.input is None) == (options.from_topic is None):
        raise BadInputError("give exactly one of --input (files) or --from-topic (a topic range).")
    if options.output is None and options.to_topic is None:
        raise BadInputError("--output is required (or --to-topic to publish the predictions).")
    if options.output is not None and options.to_topic is None:
        bio.output_kind(options.output)
    if options.chunk_rows < 1:
        raise BadInputError("--chunk-size must be at least 1.")
    if options.from_topic is None and (options.start is not None or options.end is not None):
        raise BadInputError("--start and --end select a topic range: use them with --from-topic.")
    if options.start is not None and options.end is not None and options.start > options.end:
        raise BadInputError("--start is after --end.")


def run_backfill(settings: Settings, options: BackfillOptions) -> BackfillSummary:
    """Rescore the input; see the module docstring. Raises :class:`BadInputError` (exit 2) on bad input."""
    started = time.monotonic()
    check_options(options)
    from ml.backfill_drift import WindowSpec

    spec = WindowSpec.parse(options.drift_window) if options.drift_window else None
    files = bio.discover_inputs(options.input) if options.input is not None else []
    owned = bio.shard_files(files, *options.shard)

    from ml import tracking
    from ml.model import load_model

    client = tracking.configure(settings.mlflow_tracking_uri)
    model = load_model(client, options.model_uri or settings.model_uri, with_reference=spec is not None)
    compare_model = (
        load_model(client, options.compare_with, with_reference=False) if options.compare_with else None
    )
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
        chunks: Iterator[Chunk | UnitDone] = iter_topic_chunks(settings, options)
        total = None
    else:
        chunks = iter_file_chunks(files, owned, options.chunk_rows, workspace, reread_done=drift is not None)
        sizes = [bio.parquet_rows(f) for f, own in zip(files, owned, strict=True) if own]
        total = None if any(s is None for s in sizes) else sum(s or 0 for s in sizes)

    publisher = None
    if options.to_topic is not None:
        from ml.backfill_topics import TopicPublisher

        publisher = TopicPublisher(settings, options.to_topic)
    out_kind = bio.output_kind(output) if output is not None and publisher is None else None
    schema = output_schema(model.classes, compare_model is not None, dictionary=out_kind == "parquet")
    sink = FileSink(workspace, out_kind, schema) if workspace is not None else None
    writer = OrderedWriter() if sink is not None else None
    progress = Progress(total, options.progress)
    delay = chunk_delay()
    stats: list[dict[str, Any]] = []
    resumed = 0
    resume_gc()  # set-up is done (ml.startup): the loop allocates little, collect as usual
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
                result = score_chunk(chunk, scorer, compare_model, scored_at, schema, options.strict)
                if drift is not None:
                    drift.add(result.matrix, _times(chunk.table, result.valid))
                if publisher is not None:
                    publisher.send(result.ids.to_pylist(), result.scores, scored_at)
                if writer is not None and sink is not None:
                    writer.submit(sink.write, chunk, result, drift.closed if drift is not None else 0)
                stats.append(result.stats)
                progress.update(chunk.table.num_rows)
                if delay:
                    time.sleep(delay)
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
    summary.resumed_parts = resumed if workspace is not None and workspace.resumed else 0
    summary.drift_reports = drift.reports if drift is not None else []
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
    from ml.backfill_drift import row_times_ms

    times = row_times_ms(table)
    return None if times is None else times[valid]


def _drift_windows(
    settings: Settings, spec: Any, model: LoadedModel, scored_at: str, workspace: Workspace | None
) -> Any:
    from ml.backfill_drift import DriftWindows
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
    )


def _fingerprint(
    options: BackfillOptions, files: list[bio.InputFile], model: LoadedModel, compare: LoadedModel | None
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


class FileSink:
    """Where scored chunks go when there is an ``--output`` (see :mod:`ml.backfill_parts`).

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
            bio.write_ipc_part(result.table, self.workspace.dir / f"{name}.arrow")
            if self.streaming:
                if self.stream is None:
                    self.stream = bio.parquet_writer(self.stream_path, self.schema)
                self.stream.write_table(result.table)
                self.streamed.append(name)
        elif self.rows is not None:
            bio.append_rows(result.table, str(self.kind), self.rows.handle, header=self.rows.size() == 0)
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
                bio.merge_parquet_parts(parts, output, self.schema)
        elif self.rows is not None:
            if self.kind == "csv" and self.rows.path.stat().st_size == 0:  # no rows at all: header only
                with self.rows.path.open("wb") as handle:
                    bio.append_rows(self.schema.empty_table(), "csv", handle, header=True)
            os.replace(self.rows.path, output)
        if self.kind is not None:
            summary.output = output
        summary.rejects_path = sibling(output, ".rejects.jsonl")
        os.replace(self.rejects.path, summary.rejects_path)
        if summary.compare is not None:
            summary.compare_path = sibling(output, ".compare.json")
            bio.write_atomic_bytes(
                summary.compare_path, orjson.dumps(summary.compare, option=orjson.OPT_INDENT_2)
            )
        shutil.rmtree(self.workspace.dir, ignore_errors=True)
