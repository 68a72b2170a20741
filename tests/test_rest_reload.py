"""Readiness without a registry, hot reload under traffic, and a failed reload keeping the old model."""

from __future__ import annotations

import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest

from app.server import create_app
from ml.errors import RegistryUnavailable
from ml.metrics import Metrics
from ml.model import LoadedModel, ModelHolder, load_model
from ml.register import promote
from ml.reload import ModelWatcher
from ml.settings import Settings

with warnings.catch_warnings():  # starlette warns when httpx (not httpx2) backs its TestClient
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

GOOD = {"sepal_length": 6.1, "sepal_width": 2.8, "petal_length": 4.7, "petal_width": 1.2}


@pytest.fixture(autouse=True)
def _restore_mlflow_uris() -> Iterator[None]:
    """The lifespan points MLflow's process-wide URIs at each test's registry: put them back."""
    tracking_uri, registry_uri = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    yield
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(registry_uri)


def eventually(condition: Callable[[], bool], what: str, attempts: int = 600) -> None:
    """Poll ``condition`` (every 50 ms, bounded); the assertion is on the state, never on time."""
    for _ in range(attempts):
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def watcher_error(client: TestClient) -> str | None:
    state = client.app.state.iris  # type: ignore[attr-defined]
    return None if state.watcher is None else state.watcher.last_error


@pytest.mark.parametrize(
    ("tracking_uri", "reason"),
    [
        pytest.param("http://127.0.0.1:{port}", "unreachable", id="registry down"),
        pytest.param(
            "sqlite:///{tmp}/empty.db", "no champion model", id="empty registry", marks=pytest.mark.slow
        ),  # slow: MLflow creates the store's tables first
    ],
)
def test_not_ready_without_a_model_but_alive_and_retrying(
    tmp_path: Path, tracking_uri: str, reason: str
) -> None:
    uri = tracking_uri.format(port=closed_port(), tmp=tmp_path)
    settings = Settings(mlflow_tracking_uri=uri, model_poll_seconds=0.2)
    metrics = Metrics()
    with TestClient(create_app(settings, metrics=metrics)) as client:
        eventually(lambda: watcher_error(client) is not None, "a failed registry check")
        ready = client.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["error"] == "model_not_ready"
        assert reason in ready.json()["detail"]
        assert client.get("/health").status_code == 200
        response = client.post("/predict", json=GOOD)
        assert response.status_code == 503
        assert response.json()["error"] == "model_not_ready"
        assert client.get("/metrics").status_code == 200
    assert (metrics.registry.get_sample_value("iris_model_reload_errors_total") or 0) >= 1


@pytest.mark.slow
def test_hot_reload_switches_versions_without_failing_a_request(fresh_registry: Any) -> None:
    v2 = fresh_registry.train_version("random_forest")
    v1 = fresh_registry.champion_version
    app = create_app(fresh_registry.settings(model_poll_seconds=0.2), metrics=Metrics())
    seen: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    with TestClient(app) as client:
        eventually(lambda: client.get("/ready").status_code == 200, "first load")

        def traffic() -> None:
            for _ in range(20_000):  # bounded; stops as soon as the test has seen the switch
                if stop.is_set():
                    return
                single = client.post("/predict", json=GOOD)
                batch = client.post("/predict", json={"instances": [GOOD, GOOD, GOOD]})
                for response in (single, batch):
                    if response.status_code != 200:
                        failures.append(f"{response.status_code} {response.text}")
                        continue
                    body = response.json()
                    seen.append(body["model_version"])
                    if "predictions" in body and {p["model_version"] for p in body["predictions"]} != {
                        body["model_version"]
                    }:
                        failures.append("one batch scored by two versions")

        worker = threading.Thread(target=traffic)
        worker.start()
        try:
            eventually(lambda: v1 in seen, "traffic on the first version")
            promote(fresh_registry.client, "iris-classifier", v2)
            eventually(lambda: seen[-1:] == [v2], "traffic on the promoted version")
            count = len(seen)
            eventually(lambda: len(seen) > count + 10, "more traffic after the switch")
        finally:
            stop.set()
            worker.join(30)
        assert client.get("/model").json()["version"] == v2

    assert not failures
    switch = seen.index(v2)
    assert set(seen[:switch]) == {v1}
    assert set(seen[switch:]) == {v2}  # once switched, never back


@pytest.mark.slow
def test_failed_reload_keeps_serving_the_old_model(fresh_registry: Any) -> None:
    calls = {"n": 0}

    def flaky_loader(client: Any, uri: str) -> LoadedModel:
        calls["n"] += 1
        if calls["n"] > 1:
            raise RegistryUnavailable("artifact store down")
        return load_model(client, uri, with_reference=False)

    def watcher_factory(client: Any, holder: ModelHolder, metrics: Metrics) -> ModelWatcher:
        return ModelWatcher(
            client, "models:/iris-classifier@champion", holder, metrics, poll_seconds=0.2, loader=flaky_loader
        )

    metrics = Metrics()
    app = create_app(fresh_registry.settings(), metrics=metrics, watcher_factory=watcher_factory)
    with TestClient(app) as client:
        eventually(lambda: client.get("/ready").status_code == 200, "first load")
        v1 = fresh_registry.champion_version
        promote(fresh_registry.client, "iris-classifier", fresh_registry.train_version("random_forest"))
        eventually(lambda: calls["n"] >= 3, "two failed reloads")
        assert watcher_error(client) == "artifact store down"
        assert client.get("/ready").status_code == 200
        response = client.post("/predict", json=GOOD)
        assert response.status_code == 200
        assert response.json()["model_version"] == v1
    assert (metrics.registry.get_sample_value("iris_model_reload_errors_total") or 0) >= 2
