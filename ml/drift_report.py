"""``iris-scorer drift-report``: one report of a features file against a reference."""

from __future__ import annotations

from pathlib import Path

import orjson
import pandas as pd

from ml.drift import DriftResult, evaluate_drift, load_drift_params
from ml.drift_reports import write_atomic
from ml.errors import BadInputError
from ml.params import DriftParams
from ml.settings import Settings

READERS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def read_features_file(path: Path, *, role: str) -> pd.DataFrame:
    """A CSV or Parquet file, or :class:`BadInputError` naming it."""
    kind = READERS.get(path.suffix.lower())
    if kind is None:
        raise BadInputError(f"{role} file {path} must be .csv or .parquet, not '{path.suffix or '(none)'}'.")
    if not path.is_file():
        raise BadInputError(f"{role} file {path} does not exist.")
    try:
        return pd.read_csv(path) if kind == "csv" else pd.read_parquet(path)
    except Exception as exc:
        raise BadInputError(f"{role} file {path} could not be read as {kind.upper()}: {exc}.") from None


def write_drift_report(
    current_path: Path,
    reference_path: Path | None,
    output_path: Path,
    settings: Settings,
    params: DriftParams | None = None,
) -> DriftResult:
    """One report of ``current_path`` against ``reference_path`` (default: the model at
    ``settings.model_uri``, i.e. the champion's training features), to ``.html`` or ``.json``."""
    out_kind = output_path.suffix.lower()
    if out_kind not in (".html", ".json"):
        raise BadInputError(f"output {output_path} must end in .html or .json.")
    params = params if params is not None else load_drift_params()
    current = read_features_file(current_path, role="current")
    if reference_path is not None:
        reference = read_features_file(reference_path, role="reference")
        reference_name = f"reference file {reference_path}"
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
        current_name=f"current file {current_path}",
    )
    output_path.parent.mkdir(parents=True, exist_ok=True)
    if out_kind == ".html":
        write_atomic(output_path, result.snapshot.get_html_str(as_iframe=False).encode())
    else:
        document = result.to_dict()
        document.update({"current": str(current_path), "reference": str(reference_path or reference_name)})
        write_atomic(output_path, orjson.dumps(document, option=orjson.OPT_INDENT_2))
    return result
