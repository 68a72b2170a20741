"""The backfill output's columns: its schema, one chunk's output table and the compare confusion.

``id``, the four features, the pass-through columns, ``label``, ``prob_<class>``, the optional
``compare_label``, ``model_name``, ``model_version`` and ``scored_at`` (see :func:`output_schema`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from ml.predict import Scores
from ml.schema import FEATURES


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
    if compare:  # the second model (--compare-with, --challenger): its label and probabilities
        fields.append(("compare_label", text))
        fields += [(f"compare_prob_{c}", pa.float64()) for c in classes.tolist()]
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
        theirs = np.ascontiguousarray(compare.probabilities.T)
        by_name = dict(zip(compare.model.class_names, range(len(compare.model.classes)), strict=True))
        columns += [pa.array(theirs[by_name[c]]) for c in scores.model.class_names]
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
