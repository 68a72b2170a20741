"""Resolving and loading a model version (with its reference data), and holding the current one.

The small model interface: :func:`load_model` (load), :class:`ModelHolder` (ready, current,
swap) and :class:`LoadedModel` (version and the estimator that :mod:`ml.predict` scores with).
"""

from __future__ import annotations

import functools
import re
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ml import paths
from ml.compiled import Compiled, verified
from ml.errors import BadInputError, ModelNotFound, ModelNotReady, RegistryUnavailable
from ml.schema import FEATURES

if TYPE_CHECKING:  # MLflow and pandas are imported where used: about 1 s that a backfill whose
    # model comes from the verified cache (:mod:`ml.model_cache`) never pays
    import pandas as pd
    from mlflow.tracking import MlflowClient

_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


@dataclass(frozen=True)
class ModelRef:
    """A registry URI resolved to one version."""

    name: str
    version: str
    alias: str | None
    run_id: str | None
    source: str | None = None
    #: the version's creation time (ms since the epoch), part of its identity: a registered model
    #: deleted and registered again starts at version 1 with other artifacts
    created: int | None = None


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A loaded model version: immutable, so a request that holds one finishes on it after a swap."""

    ref: ModelRef
    uri: str
    estimator: Any
    classes: npt.NDArray[np.str_]
    data_hash: str | None = None
    reference: pd.DataFrame | None = field(default=None, repr=False)
    #: ``predict_proba`` as NumPy operations (:mod:`ml.compiled`), when the pipeline has a known,
    #: verified form; None: :func:`ml.predict.score` calls scikit-learn
    compiled: Compiled | None = field(default=None, repr=False)
    #: the part this version plays where it is served: ``champion`` (answers by default) or
    #: ``challenger`` (shadow and canary, :mod:`ml.experiment`); predictions carry it as ``model_alias``
    role: str = "champion"

    @property
    def name(self) -> str:
        return self.ref.name

    @functools.cached_property
    def class_names(self) -> tuple[str, ...]:
        """``classes`` as Python strings (computed once: every prediction record uses them)."""
        return tuple(str(c) for c in self.classes)

    @property
    def version(self) -> str:
        return self.ref.version

    def describe(self) -> dict[str, Any]:
        """What ``GET /model`` shows: identity and lineage, never credentials."""
        return {
            "name": self.ref.name,
            "version": self.ref.version,
            "alias": self.ref.alias,
            "run_id": self.ref.run_id,
            "data_hash": self.data_hash,
            "uri": self.uri,
            "classes": [str(c) for c in self.classes],
            "reference_rows": None if self.reference is None else len(self.reference),
            "scoring": "numpy" if self.compiled is not None else "scikit-learn",
            "role": self.role,
        }


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``models:/name@alias`` or ``models:/name/3`` → (name, alias, version)."""
    match = _MODELS_URI.match(uri.strip())
    if not match:
        raise BadInputError(
            f"IRIS_MODEL_URI {uri!r} is not a registry URI: use models:/<name>@<alias> or models:/<name>/<version>."
        )
    return match["name"], match["alias"], match["version"]


def mask_uri(uri: str) -> str:
    """Hide credentials in a URI (``scheme://user:secret@host`` → ``scheme://user:***@host``)."""
    return re.sub(r"(://[^:/@]+:)[^@/]+@", r"\1***@", uri)


def resolve(client: MlflowClient, uri: str) -> ModelRef:
    """Which version ``uri`` points at now. Cheap: one registry call."""
    from mlflow.exceptions import MlflowException

    name, alias, version = parse_model_uri(uri)
    try:
        if alias is not None:
            mv = client.get_model_version_by_alias(name, alias)
        else:
            mv = client.get_model_version(name, str(version))
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            hint = "run `make train`" if alias == "champion" else "check the name, alias or version"
            what = "no champion model" if alias == "champion" else f"no model at {uri}"
            raise ModelNotFound(f"{what}: {hint} ({uri} does not resolve).") from None
        raise RegistryUnavailable(_unreachable(client, exc)) from None
    except Exception as exc:  # connection refused, DNS, SQL errors: all mean "registry not usable"
        raise RegistryUnavailable(_unreachable(client, exc)) from None
    created = int(mv.creation_timestamp) if mv.creation_timestamp is not None else None
    return ModelRef(
        name=name, version=str(mv.version), alias=alias, run_id=mv.run_id, source=mv.source, created=created
    )


def _unreachable(client: MlflowClient, exc: BaseException) -> str:
    tracking_uri = mask_uri(str(client.tracking_uri))
    return f"model registry at {tracking_uri} is unreachable ({type(exc).__name__})."


def load_model(client: MlflowClient, uri: str, *, with_reference: bool = True) -> LoadedModel:
    """Resolve ``uri`` and load that version, its reference data and its lineage tags."""
    import mlflow.sklearn
    from mlflow.exceptions import MlflowException

    ref = resolve(client, uri)
    version_uri = f"models:/{ref.name}/{ref.version}"
    try:
        # Load through *this* client's registry, not MLflow's process-wide registry setting.
        estimator = mlflow.sklearn.load_model(client.get_model_version_download_uri(ref.name, ref.version))
        data_hash = None
        reference = None
        if ref.run_id:
            data_hash = client.get_run(ref.run_id).data.tags.get("dvc_data_md5")
            if with_reference:
                reference = load_reference(client, ref.run_id)
    except MlflowException as exc:
        raise RegistryUnavailable(f"could not load {version_uri}: {exc.message}") from None
    except OSError as exc:
        raise RegistryUnavailable(f"could not load {version_uri}: {exc}") from None
    take_arrays(estimator, version_uri)
    classes = np.asarray([str(c) for c in estimator.classes_])
    return LoadedModel(
        ref=ref,
        uri=uri,
        estimator=estimator,
        classes=classes,
        data_hash=data_hash,
        reference=reference,
        compiled=verified(estimator, len(FEATURES)),
    )


def take_arrays(estimator: Any, version_uri: str) -> None:
    """Check the column names the model was fitted on against :data:`~ml.schema.FEATURES`, then
    let this in-memory copy take arrays: :mod:`ml.predict` passes rows already validated and put
    in that order by :mod:`ml.schema`, without building a frame per batch (and without
    scikit-learn's "X does not have valid feature names" warning). The registered artifact keeps
    its names for MLflow's pyfunc and other users."""
    names = getattr(estimator, "feature_names_in_", None)
    if names is None:
        return  # fitted on arrays (versions registered before names were kept)
    if [str(n) for n in names] != list(FEATURES):
        raise RegistryUnavailable(
            f"could not load {version_uri}: it was fitted on columns {', '.join(map(str, names))}, "
            f"not {', '.join(FEATURES)}."
        )
    for step in [estimator, *(s for _, s in getattr(estimator, "steps", []))]:
        if "feature_names_in_" in vars(step):  # a Pipeline's is a property of its first step
            del step.feature_names_in_


def load_reference(client: MlflowClient, run_id: str) -> pd.DataFrame:
    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        local = client.download_artifacts(run_id, paths.REFERENCE_ARTIFACT, tmp)
        return pd.read_parquet(Path(local))


class ModelHolder:
    """The model serving now. ``current`` raises :class:`ModelNotReady` until one is loaded.

    Swapping is one reference assignment: callers take ``current`` once per batch, so in-flight
    work finishes on the model it started with.
    """

    def __init__(self, model: LoadedModel | None = None) -> None:
        self._model = model
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        return self._model is not None

    @property
    def current(self) -> LoadedModel:
        model = self._model
        if model is None:
            raise ModelNotReady("no model is loaded yet: the registry is being polled.")
        return model

    @property
    def version(self) -> str | None:
        model = self._model
        return None if model is None else model.version

    @property
    def model(self) -> LoadedModel | None:
        """The model serving now, or None (an optional challenger that is not registered)."""
        return self._model

    def swap(self, model: LoadedModel) -> LoadedModel | None:
        with self._lock:
            previous, self._model = self._model, model
        return previous

    def clear(self) -> LoadedModel | None:
        """Serve nothing (an optional alias that was deleted); returns what was served."""
        with self._lock:
            previous, self._model = self._model, None
        return previous
