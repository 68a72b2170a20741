"""Backfill's fast start (ml.model_cache): the alias resolved without MLflow must agree with MLflow's
own client on real registries, and a cached version must score exactly as the pipeline it came from."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from conftest import Registry
from test_reliability_stream import mlflow_server

from ml import model_cache
from ml.compiled import probe_rows
from ml.model import load_model, resolve
from ml.register import promote

REPO = Path(__file__).resolve().parents[1]
CHAMPION = "models:/iris-classifier@champion"


def _same_ref(tracking_uri: str, client: Any, uri: str) -> None:
    lean = model_cache.lean_resolve(tracking_uri, uri)
    assert lean == resolve(client, uri)
    assert lean is not None and lean.created is not None


def test_lean_resolution_agrees_with_mlflow_on_sqlite_before_and_after_the_alias_moves(
    fresh_registry: Registry,
) -> None:
    uri, client = fresh_registry.tracking_uri, fresh_registry.client
    _same_ref(uri, client, CHAMPION)
    _same_ref(uri, client, f"models:/iris-classifier/{fresh_registry.champion_version}")
    second = fresh_registry.train_version("logistic_regression", seed=3)
    promote(client, "iris-classifier", second, "champion")
    _same_ref(uri, client, CHAMPION)
    assert model_cache.lean_resolve(uri, CHAMPION).version == second  # type: ignore[union-attr]
    # what it cannot answer, MLflow's client answers (and words the error)
    assert model_cache.lean_resolve(uri, "models:/iris-classifier@nobody") is None
    assert model_cache.lean_resolve(uri, "models:/iris-classifier/99") is None
    assert model_cache.lean_resolve(uri, "models:/iris-classifier@latest") is None
    assert model_cache.lean_resolve(f"sqlite:///{fresh_registry.root / 'absent.db'}", CHAMPION) is None


def test_lean_resolution_agrees_with_mlflow_over_a_tracking_servers_rest_api(registry: Registry) -> None:
    from bench.harness import free_port
    from ml import tracking

    port = free_port()
    http_uri = f"http://127.0.0.1:{port}"
    with mlflow_server(registry.tracking_uri, port):
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{http_uri}/health", timeout=2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "mlflow server did not start"
                time.sleep(0.5)
        client = tracking.client(http_uri)
        _same_ref(http_uri, client, CHAMPION)
        _same_ref(http_uri, client, f"models:/iris-classifier/{registry.champion_version}")
        assert model_cache.lean_resolve(http_uri, "models:/iris-classifier@nobody") is None


def test_a_cached_version_scores_exactly_as_the_pipeline_and_names_the_same_version(
    registry: Registry, tmp_path: Path
) -> None:
    full = load_model(registry.client, CHAMPION, with_reference=False)
    assert model_cache.load_cached(str(tmp_path), registry.tracking_uri, CHAMPION) is None  # empty
    assert model_cache.store(str(tmp_path), registry.tracking_uri, full) is not None
    cached = model_cache.load_cached(str(tmp_path), registry.tracking_uri, CHAMPION)
    assert cached is not None and cached.estimator is None
    assert (cached.ref, list(cached.classes), cached.data_hash) == (
        full.ref,
        list(full.classes),
        full.data_hash,
    )
    rows = probe_rows(full.estimator, 4)
    assert cached.compiled is not None and full.compiled is not None
    assert np.array_equal(cached.compiled(rows.copy()), full.compiled(rows.copy()))  # bit for bit
    np.testing.assert_allclose(cached.compiled(rows.copy()), full.estimator.predict_proba(rows), atol=1e-9)


def test_a_moved_alias_misses_the_cache_and_a_bad_entry_is_a_miss_not_an_error(
    fresh_registry: Registry, tmp_path: Path
) -> None:
    cache, uri = str(tmp_path / "cache"), fresh_registry.tracking_uri
    first = load_model(fresh_registry.client, CHAMPION, with_reference=False)
    entry = model_cache.store(cache, uri, first)
    assert entry is not None
    second = fresh_registry.train_version("logistic_regression", seed=5)
    promote(fresh_registry.client, "iris-classifier", second, "champion")
    assert model_cache.load_cached(cache, uri, CHAMPION) is None  # v2 is not cached: load it
    pinned = f"models:/iris-classifier/{first.version}"
    assert model_cache.load_cached(cache, uri, pinned) is not None
    entry.write_text("{not json")
    assert model_cache.load_cached(cache, uri, pinned) is None
    entry.write_text(json.dumps({"format": 1, "identity": {"name": "other"}}))
    assert model_cache.load_cached(cache, uri, pinned) is None
    assert model_cache.load_cached("", uri, pinned) is None  # IRIS_MODEL_CACHE_DIR="": no cache


def test_a_cache_folder_that_cannot_be_written_only_costs_the_fast_start(
    registry: Registry, tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    full = load_model(registry.client, CHAMPION, with_reference=False)
    assert model_cache.store(str(blocker / "cache"), registry.tracking_uri, full) is None


def test_a_random_forest_is_never_cached(fresh_registry: Registry, tmp_path: Path) -> None:
    version = fresh_registry.train_version("random_forest", seed=9)
    forest = load_model(fresh_registry.client, f"models:/iris-classifier/{version}", with_reference=False)
    assert forest.compiled is None
    assert model_cache.store(str(tmp_path), fresh_registry.tracking_uri, forest) is None


_SECOND_RUN = """
import sys
from consumers.backfill.options import BackfillOptions
from consumers.backfill.run import run_backfill
from ml.settings import load_settings
from pathlib import Path
run_backfill(load_settings(), BackfillOptions(input=sys.argv[1], output=Path(sys.argv[2])))
heavy = sorted(m for m in ("mlflow", "sklearn", "scipy", "sqlalchemy") if m in sys.modules)
print("HEAVY=" + ",".join(heavy))
"""


def test_backfill_with_a_cached_champion_imports_neither_mlflow_nor_scikit_learn_and_writes_the_same_rows(
    registry: Registry, tmp_path: Path
) -> None:
    source = tmp_path / "rows.csv"
    rng = np.random.default_rng(1)
    lines = ["sepal_length,sepal_width,petal_length,petal_width"]
    lines += [",".join(f"{v:.2f}" for v in rng.uniform(0.1, 8, 4)) for _ in range(500)]
    source.write_text("\n".join(lines) + "\n")
    env = os.environ | {
        "MLFLOW_TRACKING_URI": registry.tracking_uri,
        "IRIS_MODEL_URI": CHAMPION,
        "IRIS_MODEL_CACHE_DIR": str(tmp_path / "cache"),
        "PYTHONPATH": str(REPO),
    }
    outputs = []
    for name in ("first.parquet", "second.parquet"):
        out = tmp_path / name
        done = subprocess.run(
            [sys.executable, "-c", _SECOND_RUN, str(source), str(out)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        outputs.append((done.stdout, pq.read_table(out).drop(["scored_at"])))
    assert "HEAVY=mlflow,scipy,sklearn,sqlalchemy" in outputs[0][0]  # the first run loads the pipeline
    assert "HEAVY=\n" in outputs[1][0] or outputs[1][0].rstrip().endswith("HEAVY=")
    assert outputs[1][1].equals(outputs[0][1])
