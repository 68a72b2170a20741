"""One chunk of input: validated column-wise, scored in one call, laid out as output columns."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from consumers.backfill import files, readers
from consumers.backfill.options import SOURCE, BackfillOptions
from consumers.backfill.parts import Workspace
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


def output_schema(
    classes: npt.NDArray[np.str_],
    compare: bool,
    *,
    dictionary: bool = False,
    extras: Sequence[pa.Field] = (),
) -> pa.Schema:
    """The output columns: ``id``, the features, the pass-through ``extras`` (the input's other
    columns, :func:`consumers.backfill.readers.extra_fields`), ``label``, ``prob_<class>``,
    ``compare_label`` (with ``compare``), ``model_name``, ``model_version``, ``scored_at``.

    With ``dictionary`` (Parquet output) the label and the constant columns
    are Arrow dictionaries: built from the argmax indexes at no cost, written by Parquet as they are
    (no hashing of millions of equal strings) and read back as plain strings (see
    :func:`consumers.backfill.writers.parquet_writer`); Arrow IPC parts stay small too."""
    text = pa.dictionary(pa.int32(), pa.string()) if dictionary else pa.string()
    fields: list[tuple[str, pa.DataType]] = [("id", pa.string())]
    fields += [(name, pa.float64()) for name in FEATURES]
    fields += [(field.name, field.type) for field in extras]
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
    constants: ConstantColumns | None = None,
    extras: Sequence[pa.ChunkedArray | pa.Array] = (),
) -> pa.Table:
    """Columns straight from Arrow and numpy: no per-row Python."""
    constants = constants if constants is not None else ConstantColumns()
    n = len(scores)
    dictionary = pa.types.is_dictionary(schema.field("label").type)
    columns: list[Any] = [ids, *features, *extras]
    columns.append(_labels(scores, dictionary))
    by_class = np.ascontiguousarray(scores.probabilities.T)  # one copy, then zero-copy columns
    columns += [pa.array(by_class[j]) for j in range(len(scores.model.classes))]
    if compare is not None:
        columns.append(_labels(compare, dictionary))
    columns += [
        constants.column(value, n, dictionary)
        for value in (scores.model.name, scores.model.version, scored_at)
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def extra_names(schema: pa.Schema) -> list[str]:
    """The pass-through columns of an output schema (between the features and ``label``)."""
    names: list[str] = schema.names
    return names[1 + len(FEATURES) : names.index("label")]


def extra_columns(table: pa.Table, schema: pa.Schema, mask: pa.Array | None) -> list[pa.ChunkedArray]:
    """The pass-through columns of an input chunk, typed as ``schema`` says (nulls where the chunk's
    file has no such column), of the rows in ``mask``."""
    columns = []
    for name in extra_names(schema):
        kind = schema.field(name).type
        if name in table.column_names:
            column = table[name]
            if column.type != kind:
                column = column.cast(kind)
        else:
            column = pa.chunked_array([pa.nulls(table.num_rows, kind)])
        columns.append(column.filter(mask) if mask is not None else column)
    return columns


def _labels(scores: Scores, dictionary: bool) -> pa.Array:
    classes = pa.array(scores.model.classes.tolist(), pa.string())
    if dictionary:
        return pa.DictionaryArray.from_arrays(pa.array(scores.index.astype(np.int32)), classes)
    return pc.take(classes, pa.array(scores.index))


class ConstantColumns:
    """Columns of one value repeated (model name, version, ``scored_at``): each a zero-copy slice of
    one array built once per value. One per run, so nothing outlives it."""

    def __init__(self) -> None:
        self._arrays: dict[tuple[str, bool], pa.Array] = {}

    def column(self, value: str, n: int, dictionary: bool) -> pa.Array:
        whole = self._arrays.get((value, dictionary))
        if whole is None or len(whole) < n:
            if dictionary:
                zeros = pa.array(np.zeros(n, dtype=np.int32))
                whole = pa.DictionaryArray.from_arrays(zeros, pa.array([value], pa.string()))
            else:
                whole = pa.repeat(value, n)
            self._arrays[(value, dictionary)] = whole
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
    ids, id_ok = readers.fill_ids(table, chunk.first_row)
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
