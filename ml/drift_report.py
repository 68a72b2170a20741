"""``iris-scorer drift-report``: one report of a features file against a reference.

Rows are validated as backfill validates them (:mod:`ml.schema`: the same rules, the same
messages, the same ``row``/``line`` numbering): invalid rows, including CSV rows with the wrong
number of values, are skipped and counted, and the first few reasons are reported
(:class:`SkippedRows`). The command fails (:class:`BadInputError`, exit 2) only when no valid row
is left, or on the first invalid row with ``strict``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

from ml.drift import DriftResult, evaluate_drift, load_drift_params
from ml.drift_reports import write_atomic
from ml.errors import BadInputError
from ml.params import DriftParams
from ml.schema import FEATURES, NUMBER_TEXT, check_columns, ragged_row_message, row_errors, row_position
from ml.settings import Settings

READERS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
#: how many skipped rows are described on the output line and in the JSON report
FIRST_SKIPPED = 3


@dataclass(frozen=True)
class SkippedRows:
    """Invalid rows of one input: how many, and the first :data:`FIRST_SKIPPED` of them as
    ``{"row", "line" (CSV), "errors": [{"loc", "msg"}]}`` (the backfill rejects' shape)."""

    rows: int = 0
    first: list[dict[str, Any]] = field(default_factory=list)

    def describe(self) -> str:
        """``row 4: petal_width: is not a number: 'wide'; row 10: …`` (the first few)."""
        return "; ".join(f"row {entry['row']}: {_reasons(entry)}" for entry in self.first)

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "first": self.first}


@dataclass(frozen=True)
class DriftReport:
    """What ``drift-report`` did: the comparison, where it went, what it skipped."""

    result: DriftResult
    output: Path
    skipped: SkippedRows
    reference_skipped: SkippedRows

    def summary_line(self) -> str:
        result = self.result
        drifted = ", ".join(result.drifted_features) or "none"
        line = (
            f"dataset_drift={'yes' if result.dataset_drift else 'no'} drifted_share={result.drifted_share:.2f} "
            f"drifted=[{drifted}] rows={result.rows} reference_rows={result.reference_rows} report={self.output}"
        )
        for label, skipped in (("skipped", self.skipped), ("reference_skipped", self.reference_skipped)):
            if skipped.rows:
                line += f" {label}={skipped.rows} ({skipped.describe()})"
        return line


def _reasons(entry: dict[str, Any]) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" if error["loc"] else error["msg"]
        for error in entry["errors"]
    )


@dataclass
class FeatureRows:
    frame: pd.DataFrame
    csv: bool
    #: 1-based data rows of CSV rows with the wrong number of values, and why
    ragged: list[tuple[int, str]] = field(default_factory=list)


def read_features_file(path: Path, *, role: str) -> pd.DataFrame:
    """A CSV or Parquet file, or :class:`BadInputError` naming it (CSV rows with the wrong number
    of values are left out: :func:`valid_features` reports them)."""
    return read_rows(path, role=role).frame


def read_rows(path: Path, *, role: str) -> FeatureRows:
    kind = READERS.get(path.suffix.lower())
    if kind is None:
        raise BadInputError(f"{role} file {path} must be .csv or .parquet, not '{path.suffix or '(none)'}'.")
    if not path.is_file():
        raise BadInputError(f"{role} file {path} does not exist.")
    try:
        if kind == "parquet":
            return FeatureRows(pd.read_parquet(path), csv=False)
        return _read_csv(path)
    except Exception as exc:
        raise BadInputError(f"{role} file {path} could not be read as {kind.upper()}: {exc}.") from None


def _read_csv(path: Path) -> FeatureRows:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    ragged: list[tuple[int, str]] = []

    def skip(row: Any) -> str:
        # row.number counts records from 1, the header being record 1 (known when parsing serially)
        ragged.append(
            (int(row.number) - 1, ragged_row_message(row.expected_columns, row.actual_columns, row.text))
        )
        return "skip"

    table = pacsv.read_csv(
        path,
        read_options=pacsv.ReadOptions(use_threads=False),
        parse_options=pacsv.ParseOptions(invalid_row_handler=skip),
        convert_options=pacsv.ConvertOptions(column_types={name: pa.string() for name in FEATURES}),
    )
    return FeatureRows(table.to_pandas(), csv=True, ragged=ragged)


def valid_features(
    features: FeatureRows, *, name: str, strict: bool = False
) -> tuple[pd.DataFrame, SkippedRows]:
    """The valid rows' features (float64) and what was skipped; :class:`BadInputError` when no
    valid row is left (or, with ``strict``, at the first invalid row)."""
    frame = features.frame
    missing = [c for c in FEATURES if c not in frame.columns]
    if missing:
        raise BadInputError(f"{name} has no column '{missing[0]}' (expected columns: {', '.join(FEATURES)}).")
    if len(frame) == 0 and not features.ragged:
        raise BadInputError(f"{name} has no rows.")
    numbers: dict[str, np.ndarray[Any, np.dtype[np.float64]]] = {}
    texts: dict[str, pd.Series[Any]] = {}
    for column in FEATURES:
        values = frame[column]
        if pd.api.types.is_bool_dtype(values.dtype) or not pd.api.types.is_numeric_dtype(values.dtype):
            text = values.astype("string")
            numeric = text.str.fullmatch(NUMBER_TEXT).fillna(False).astype(bool)
            numbers[column] = pd.to_numeric(text.where(numeric), errors="coerce").to_numpy(
                dtype=np.float64, na_value=np.nan
            )
            texts[column] = text.where(text.notna() & ~numeric)
        else:
            numbers[column] = values.to_numpy(dtype=np.float64, na_value=np.nan)
    matrix, valid = check_columns(numbers)
    data_rows = _data_rows(len(frame), [row for row, _ in features.ragged])
    entries: list[dict[str, Any]] = [
        {**row_position(row, csv=features.csv), "errors": [{"loc": [], "msg": reason}]}
        for row, reason in features.ragged
    ]
    for position in np.flatnonzero(~valid).tolist():
        cells = {c: str(t.iloc[position]) for c, t in texts.items() if not pd.isna(t.iloc[position])}
        errors = [e.to_dict() for e in row_errors(matrix[position], cells)]
        entries.append({**row_position(int(data_rows[position]), csv=features.csv), "errors": errors})
    entries.sort(key=lambda entry: int(entry["row"]))
    skipped = SkippedRows(len(entries), entries[:FIRST_SKIPPED])
    if entries and strict:
        raise BadInputError(
            f"{name} row {entries[0]['row']} is invalid ({_reasons(entries[0])}); --strict stops the report."
        )
    if not valid.any():
        raise BadInputError(f"{name} has no valid row ({skipped.rows} invalid; {skipped.describe()}).")
    return pd.DataFrame(matrix[valid], columns=list(FEATURES)), skipped


def _data_rows(kept: int, ragged: list[int]) -> np.ndarray[Any, np.dtype[np.int64]]:
    """The 1-based data rows of the ``kept`` rows read, once the ``ragged`` ones are left out."""
    every = np.arange(1, kept + len(ragged) + 1, dtype=np.int64)
    return np.setdiff1d(every, np.asarray(ragged, dtype=np.int64), assume_unique=True)


def write_drift_report(
    current_path: Path,
    reference_path: Path | None,
    output_path: Path,
    settings: Settings,
    params: DriftParams | None = None,
    *,
    strict: bool = False,
) -> DriftReport:
    """One report of ``current_path`` against ``reference_path`` (default: the model at
    ``settings.model_uri``, i.e. the champion's training features), to ``.html`` or ``.json``.
    Invalid rows of either file are skipped and reported (see the module docstring)."""
    out_kind = output_path.suffix.lower()
    if out_kind not in (".html", ".json"):
        raise BadInputError(f"output {output_path} must end in .html or .json.")
    params = params if params is not None else load_drift_params()
    current_name = f"current file {current_path}"
    current, skipped = valid_features(
        read_rows(current_path, role="current"), name=current_name, strict=strict
    )
    reference_skipped = SkippedRows()
    if reference_path is not None:
        reference_name = f"reference file {reference_path}"
        reference, reference_skipped = valid_features(
            read_rows(reference_path, role="reference"), name=reference_name, strict=strict
        )
    else:
        from ml import tracking
        from ml.model import load_model

        model = load_model(tracking.client(settings.mlflow_tracking_uri), settings.model_uri)
        if model.reference is None:
            raise BadInputError(
                f"model {model.name} v{model.version} has no reference data: pass --reference."
            )
        reference, reference_name = model.reference, f"the reference of {model.name} v{model.version}"
    result = evaluate_drift(
        reference,
        current,
        params,
        reference_name=reference_name,
        current_name=current_name,
    )
    output_path.parent.mkdir(parents=True, exist_ok=True)
    if out_kind == ".html":
        write_atomic(output_path, result.snapshot.get_html_str(as_iframe=False).encode())
    else:
        document = result.to_dict()
        document.update({"current": str(current_path), "reference": str(reference_path or reference_name)})
        document["skipped"] = skipped.to_dict()
        if reference_skipped.rows:
            document["reference_skipped"] = reference_skipped.to_dict()
        write_atomic(output_path, orjson.dumps(document, option=orjson.OPT_INDENT_2))
    return DriftReport(result, output_path, skipped, reference_skipped)
