"""Typed sections of ``params.yaml``. A bad value fails with a message naming its key."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ml.errors import ParamsError

PARAMS_FILE = Path("params.yaml")
CLASSIFIERS = ("logistic_regression", "random_forest")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PrepareParams(_Section):
    test_size: float = Field(gt=0, lt=1)
    seed: int = 42


class TrainParams(_Section):
    classifier: Literal["logistic_regression", "random_forest"]
    seed: int = 42
    #: keyword arguments of ``classifier`` (flat, so ``dvc exp run -S train.hyperparameters.C=0.5``)
    hyperparameters: dict[str, Any] = Field(default_factory=dict)

    def classifier_params(self) -> dict[str, Any]:
        return dict(self.hyperparameters)


class RegisterParams(_Section):
    model_name: str = Field(default="iris-classifier", min_length=1)
    alias: str = Field(default="champion", min_length=1)
    min_f1_macro: float = Field(default=0.9, ge=0, le=1)


class DriftParams(_Section):
    method: str = "ks"
    threshold: float = Field(default=0.05, gt=0)
    drift_share: float = Field(default=0.5, gt=0, le=1)


_SECTIONS: dict[str, type[_Section]] = {
    "prepare": PrepareParams,
    "train": TrainParams,
    "register": RegisterParams,
    "drift": DriftParams,
}


def read_section(section: str, path: Path = PARAMS_FILE) -> Any:
    """Read and validate one section of ``params.yaml``."""
    if not path.exists():
        raise ParamsError(f"{path} not found: run from the repository root or pass the params file.")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path} is not valid YAML: {exc}.") from None
    if not isinstance(raw, dict) or not isinstance(raw.get(section), dict):
        raise ParamsError(f"{path} has no '{section}' section.")
    return parse_section(section, raw[section], path)


def parse_section(section: str, values: dict[str, Any], path: Path = PARAMS_FILE) -> Any:
    model = _SECTIONS[section]
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join([section, *(str(p) for p in first["loc"])])
        raise ParamsError(f"{path}: {key} is invalid: {first['msg']}.") from None
