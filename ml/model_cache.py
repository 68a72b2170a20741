"""A model version's verified NumPy form kept on disk, so a short command starts in a fraction of a second.

``iris-scorer backfill`` on a small file spent most of its 2 s start-up importing MLflow (about
1 s with its SQLAlchemy registry client) and scikit-learn with SciPy (about 0.85 s) just to
unpickle a pipeline whose arithmetic :mod:`ml.compiled` does in a few NumPy operations. This
module keeps that verified form (weights, intercept, classes) per registry version and finds it
again without either library:

1. **The alias is still resolved on every start** (never a stale model): with the standard
   library's ``sqlite3`` for a ``sqlite:///`` registry, or one HTTP call to a tracking server's
   REST API (``/api/2.0/mlflow/registered-models/alias``). Anything else (another store, TLS or auth
   settings this module does not handle, MLflow workspaces, the ``latest`` alias, any error)
   returns None and the caller uses :class:`mlflow.tracking.MlflowClient` as before; the tests
   cross-check both answers on real registries.
2. The cache entry is keyed by the version's identity in that registry: tracking URI, name,
   version, creation time, source and run id. Registered versions are immutable; a model deleted
   and registered again gets a new creation time, so an old entry never matches it.
3. Only a form that :func:`ml.compiled.verified` accepted against the unpickled pipeline is
   written (after a full load); anything scored by scikit-learn is never cached.

``IRIS_MODEL_CACHE_DIR`` (default ``$XDG_CACHE_HOME/iris-scorer/models``; empty: no cache) holds one
JSON file per version. A missing, unreadable or mismatching entry is a cache miss, never an
error; a directory that cannot be written (a read-only container) only costs the fast start.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import sqlite3
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from ml.compiled import Linear
from ml.model import LoadedModel, ModelRef, parse_model_uri

#: settings that change how MLflow talks to a registry: with any of them set, MLflow decides
_MLFLOW_SPECIAL_ENV = (
    "MLFLOW_WORKSPACE",
    "MLFLOW_ENABLE_WORKSPACES",
    "MLFLOW_TRACKING_INSECURE_TLS",
    "MLFLOW_TRACKING_SERVER_CERT_PATH",
    "MLFLOW_TRACKING_CLIENT_CERT_PATH",
    "MLFLOW_TRACKING_AUTH",
)
#: MLflow's marker of a deleted version row (``STAGE_DELETED_INTERNAL``)
_DELETED = "Deleted_Internal"
FORMAT = 1


# ---------------------------------------------------------------- resolving without MLflow


def lean_resolve(tracking_uri: str, uri: str) -> ModelRef | None:
    """What MLflow's client would resolve ``uri`` to, or None when this cannot say for sure."""
    name, alias, version = parse_model_uri(uri)
    if (alias or "").lower() == "latest" or any(os.environ.get(k) for k in _MLFLOW_SPECIAL_ENV):
        return None
    try:
        if tracking_uri.startswith("sqlite:///"):
            row = _sqlite_row(tracking_uri.removeprefix("sqlite:///"), name, alias, version)
        elif tracking_uri.startswith(("http://", "https://")):
            row = _rest_row(tracking_uri, name, alias, version)
        else:
            return None
    except Exception:  # any doubt: MLflow's own client answers (and words the error)
        return None
    if row is None or row.get("status") != "READY":
        return None
    return ModelRef(
        name=name,
        version=str(row["version"]),
        alias=alias,
        run_id=row.get("run_id") or None,
        source=row.get("source"),
        created=int(row["created"]) if row.get("created") is not None else None,
    )


def _sqlite_row(path: str, name: str, alias: str | None, version: str | None) -> dict[str, Any] | None:
    if not Path(path).is_file():
        return None  # MLflow would create an empty store here: let it, and say there is no model
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as db:
        if alias is not None:
            found = db.execute(
                "SELECT version FROM registered_model_aliases WHERE workspace = 'default' AND name = ?"
                " AND alias = ?",
                (name, alias),
            ).fetchone()
            if found is None:
                return None
            version = str(found[0])
        got = db.execute(
            "SELECT version, run_id, source, creation_time, status FROM model_versions"
            " WHERE workspace = 'default' AND name = ? AND version = ? AND current_stage != ?",
            (name, int(str(version)), _DELETED),
        ).fetchone()
    if got is None:
        return None
    return {"version": got[0], "run_id": got[1], "source": got[2], "created": got[3], "status": got[4]}


def _rest_row(tracking_uri: str, name: str, alias: str | None, version: str | None) -> dict[str, Any] | None:
    base = tracking_uri.rstrip("/")
    if alias is not None:
        query = urllib.parse.urlencode({"name": name, "alias": alias})
        url = f"{base}/api/2.0/mlflow/registered-models/alias?{query}"
    else:
        query = urllib.parse.urlencode({"name": name, "version": str(version)})
        url = f"{base}/api/2.0/mlflow/model-versions/get?{query}"
    request = urllib.request.Request(url, headers=_auth_headers())  # noqa: S310 - http(s), checked above
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - http(s) only, checked above
        mv = json.loads(response.read())["model_version"]
    return {
        "version": mv["version"],
        "run_id": mv.get("run_id"),
        "source": mv.get("source"),
        "created": mv.get("creation_timestamp"),
        "status": mv.get("status"),
    }


def _auth_headers() -> dict[str, str]:
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if token:
        return {"Authorization": f"Bearer {token}"}
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        pair = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {pair}"}
    return {}


# ---------------------------------------------------------------- the cache


def _identity(tracking_uri: str, ref: ModelRef) -> dict[str, Any]:
    return {
        "tracking_uri": tracking_uri,
        "name": ref.name,
        "version": ref.version,
        "created": ref.created,
        "source": ref.source,
        "run_id": ref.run_id,
    }


def _entry_path(cache_dir: str, identity: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]
    return Path(cache_dir) / f"{identity['name']}-v{identity['version']}-{digest}.json"


def load_cached(cache_dir: str, tracking_uri: str, uri: str) -> LoadedModel | None:
    """The model ``uri`` resolves to now, from the cache, or None (resolve and load as usual)."""
    if not cache_dir:
        return None
    ref = lean_resolve(tracking_uri, uri)
    if ref is None or ref.created is None:
        return None
    identity = _identity(tracking_uri, ref)
    try:
        entry = json.loads(_entry_path(cache_dir, identity).read_text())
        if entry.get("format") != FORMAT or entry.get("identity") != identity:
            return None
        form = entry["linear"]
        weights = np.ascontiguousarray(np.asarray(form["weights"], dtype=np.float64))
        intercept = np.asarray(form["intercept"], dtype=np.float64)
        classes = np.asarray([str(c) for c in entry["classes"]])
        if weights.ndim != 2 or intercept.shape != (weights.shape[1],):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return LoadedModel(
        ref=ref,
        uri=uri,
        estimator=None,  # never needed: the verified form scores (ml.predict.score)
        classes=classes,
        data_hash=entry.get("data_hash"),
        compiled=Linear(weights, intercept, binary=bool(form["binary"])),
    )


def store(cache_dir: str, tracking_uri: str, model: LoadedModel) -> Path | None:
    """Keep ``model``'s verified form (written atomically); None if it has none or cannot be kept."""
    form = model.compiled
    if not cache_dir or not isinstance(form, Linear) or model.ref.created is None:
        return None
    identity = _identity(tracking_uri, model.ref)
    entry = {
        "format": FORMAT,
        "identity": identity,
        "classes": list(model.class_names),
        "data_hash": model.data_hash,
        "linear": {
            "weights": form.weights.tolist(),  # repr of a float64 round-trips exactly
            "intercept": form.intercept.tolist(),
            "binary": form.binary,
        },
    }
    path = _entry_path(cache_dir, identity)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(entry))
        partial.replace(path)
    except OSError:
        return None
    return path
