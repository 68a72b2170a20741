"""One chunk of input: validated column-wise, scored in one call, laid out as output columns."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from consumers.backfill import files, readers
from consumers.backfill.columns import fill_ids
from consumers.backfill.options import SOURCE, BackfillOptions
from consumers.backfill.output import ConstantColumns, confusion, extra_columns, output_table
from consumers.backfill.parts import Workspace
from consumers.backfill.truth import chunk_truth, truth_stats
from ml.errors import BadInputError
from ml.model import LoadedModel
from ml.predict import Scorer, Scores, score
from ml.schema import FEATURES, ID_MAX_CHARS, check_columns, row_errors, row_position
from ml.settings import Settings

#: what :func:`validate` finds in a chunk: ids, the feature matrix, which rows are valid
Checked = tuple[pa.ChunkedArray, npt.NDArray[np.float64], npt.NDArray[np.bool_]]


@dataclass(frozen=True)
class Chunk:
    """One normalised input table and where it sits: ``unit`` (input file index), ``index`` within
    the unit, ``first_row`` across the whole input (0-based: the ids of rows without one), and
    where it came from (for rejects): ``origin``, ``origin_row`` (its first row's 0-based index in
    ``origin``; ``first_row`` when not given) and whether ``origin`` is a CSV file."""

    table: pa.Table
    unit: int
    index: int
    first_row: int
    origin: str
    origin_row: int | None = None
    csv: bool = False
    #: the result of :func:`validate`, when the reader thread has already run it
    checked: Checked | None = None


# ---------------------------------------------------------------- scoring one chunk


def reject_lines(
    chunk: Chunk, ids: pa.ChunkedArray, matrix: npt.NDArray[np.float64], bad: npt.NDArray[np.intp]
) -> list[bytes]:
    """One JSON line per bad row (a loop over the bad rows only): ``row`` is the 1-based data row
    of ``input`` and, for CSV, ``line`` its line (see :mod:`ml.schema`)."""
    table = chunk.table

    def cells(name: str) -> list[Any] | None:
        return table[name].take(pa.array(bad)).to_pylist() if name in table.column_names else None

    reasons, structured, texts, raw_ids = cells("_reason"), cells("_errors"), cells("_text"), cells("id")
    id_list = ids.take(pa.array(bad)).to_pylist()
    base = chunk.origin_row if chunk.origin_row is not None else chunk.first_row
    lines = []
    for k, i in enumerate(bad.tolist()):
        errors: list[dict[str, Any]] = []
        if structured is not None and structured[k] is not None:
            errors = orjson.loads(structured[k])
        elif reasons is not None and reasons[k] is not None:
            errors.append({"loc": [], "msg": reasons[k]})
        else:
            text = orjson.loads(texts[k]) if texts is not None and texts[k] is not None else None
            errors = [e.to_dict() for e in row_errors(matrix[i], text)]
            rid = id_list[k]
            if rid is None or not 1 <= len(rid) <= ID_MAX_CHARS:
                errors.append({"loc": ["id"], "msg": f"must be 1-{ID_MAX_CHARS} characters"})
        record = {
            **row_position(base + i + 1, csv=chunk.csv),
            "id": raw_ids[k] if raw_ids is not None else id_list[k],
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
    ids, id_ok = fill_ids(table, chunk.first_row)
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
    constants: ConstantColumns | None = None,
    labels: dict[str, str] | None = None,
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
    extras = extra_columns(chunk.table, schema, mask)
    scores = scorer.score(good, SOURCE)
    compared = score(compare_model, good) if compare_model is not None else None
    table = output_table(good_ids, features, scores, compared, scored_at, schema, constants, extras)
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
    truth = chunk_truth(chunk.table, good_ids, mask, labels)
    if truth is not None:
        stats["truth"] = truth_stats(truth, scores, compared)
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
    files: list[files.InputFile],
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
            rows = known if known is not None else readers.count_rows(file)
            if known is None:
                yield UnitDone(unit, rows)
            offset += rows
            continue
        if known is not None and not reread_done:  # every chunk of this file is done
            offset += known
            continue
        rows = 0
        for index, table in enumerate(readers.read_chunks(file, chunk_rows)):
            yield Chunk(table, unit, index, offset + rows, str(file.path), rows, file.kind == "csv")
            rows += table.num_rows
        if known is None:
            yield UnitDone(unit, rows)
        offset += rows


def iter_topic_chunks(
    settings: Settings, options: BackfillOptions, workspace: Workspace | None = None
) -> Iterator[Chunk]:
    """Chunks of the topic range; with a work folder the partitions' offsets are pinned in its
    manifest by the first attempt and reused by a resumed one."""
    from consumers.backfill.topics import read_topic_range

    assert options.from_topic is not None
    tables = read_topic_range(
        settings,
        options.from_topic,
        options.start,
        options.end,
        pinned=workspace.topic_offsets if workspace is not None else None,
        on_pinned=workspace.pin_topic_offsets if workspace is not None else None,
    )
    first_row = 0
    for index, table in enumerate(readers.rechunk(tables, options.chunk_rows)):
        yield Chunk(table, 0, index, first_row, options.from_topic)
        first_row += table.num_rows
