"""The REST service end to end through its lifespan, on the real registry's champion."""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import Iterator
from typing import Any

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
from openapi_spec_validator import validate

from app.server import create_app
from ml.metrics import Metrics
from ml.model import LoadedModel, ModelHolder, load_model
from ml.predict import score
from ml.schema import FEATURES, LABELS

with warnings.catch_warnings():  # starlette warns when httpx (not httpx2) backs its TestClient
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

URI = "models:/iris-classifier@champion"
ROWS = [
    [5.1, 3.5, 1.4, 0.2],
    [6.4, 3.2, 4.5, 1.5],
    [6.3, 3.3, 6.0, 2.5],
    [5.9, 3.0, 5.1, 1.8],
    [4.9, 3.0, 1.4, 0.2],
]


def record(row: list[float], **extra: Any) -> dict[str, Any]:
    return {**dict(zip(FEATURES, row, strict=True)), **extra}


@pytest.fixture(scope="module")
def champion(registry: Any) -> LoadedModel:
    return load_model(registry.client, URI, with_reference=False)


@pytest.fixture(scope="module")
def served(registry: Any) -> Iterator[tuple[TestClient, Metrics]]:
    """The real thing: the lifespan builds the client and the watcher, which loads the champion."""
    metrics = Metrics()
    app = create_app(registry.settings(model_poll_seconds=60), metrics=metrics)
    with TestClient(app) as client:
        wait_ready(client)
        yield client, metrics


def wait_ready(client: TestClient, attempts: int = 600) -> None:
    for _ in range(attempts):
        if client.get("/ready").status_code == 200:
            return
        time.sleep(0.05)  # polling for readiness, not asserting on time
    raise AssertionError(f"never ready: {client.get('/ready').json()}")


def test_ready_and_model_describe_the_champion(served: Any, registry: Any) -> None:
    client, _ = served
    ready = client.get("/ready").json()
    assert ready == {
        "status": "ready",
        "model_name": "iris-classifier",
        "model_version": registry.champion_version,
    }
    model = client.get("/model").json()
    assert model["version"] == registry.champion_version
    assert model["alias"] == "champion"
    assert model["run_id"] and model["data_hash"] == "test"
    assert set(model["classes"]) == set(LABELS)
    assert client.get("/health").json() == {"status": "ok"}


def test_predict_one_record_with_and_without_id(served: Any, registry: Any, champion: LoadedModel) -> None:
    client, _ = served
    expected = score(champion, np.asarray([ROWS[0]])).labels[0]
    for extra, expected_id in (({}, None), ({"id": "r-42", "unknown": "ignored"}, "r-42")):
        response = client.post("/predict", json=record(ROWS[0], **extra))
        assert response.status_code == 200
        prediction = response.json()
        assert prediction["id"] == expected_id
        assert prediction["label"] == expected == "setosa"
        assert set(prediction["probabilities"]) == set(LABELS)
        assert abs(sum(prediction["probabilities"].values()) - 1) < 1e-4
        assert prediction["model_name"] == "iris-classifier"
        assert prediction["model_version"] == registry.champion_version
        assert prediction["source"] == "rest"
        assert prediction["scored_at"].endswith("Z")


def test_predict_batch_keeps_order_and_ids(served: Any, registry: Any, champion: LoadedModel) -> None:
    client, _ = served
    instances = [record(row, id=f"r-{i}") for i, row in enumerate(ROWS)]
    instances[2].pop("id")
    response = client.post("/predict", json={"instances": instances})
    assert response.status_code == 200
    body = response.json()
    assert body["model_name"] == "iris-classifier"
    assert body["model_version"] == registry.champion_version
    assert [p["id"] for p in body["predictions"]] == ["r-0", "r-1", None, "r-3", "r-4"]
    expected = score(champion, np.asarray(ROWS)).labels.tolist()
    assert [p["label"] for p in body["predictions"]] == expected
    assert len(set(expected)) == 3  # the rows cover every class


def _mlflow_payloads() -> dict[str, Any]:
    columns = list(FEATURES)
    return {
        "dataframe_split": {"dataframe_split": {"columns": columns, "data": ROWS}},
        "dataframe_records": {"dataframe_records": [record(r) for r in ROWS]},
        "instances": {"instances": [record(r) for r in ROWS]},
        "inputs": {"inputs": {name: [r[i] for r in ROWS] for i, name in enumerate(columns)}},
        "instances-rows": {"instances": ROWS},
    }


@pytest.mark.parametrize("payload_name", list(_mlflow_payloads()))
def test_invocations_equals_mlflow_pyfunc(served: Any, registry: Any, payload_name: str) -> None:
    client, _ = served
    pyfunc = mlflow.pyfunc.load_model(
        registry.client.get_model_version_download_uri("iris-classifier", registry.champion_version)
    )
    expected = pyfunc.predict(pd.DataFrame(ROWS, columns=list(FEATURES)))
    response = client.post("/invocations", json=_mlflow_payloads()[payload_name])
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"predictions": [str(v) for v in expected]}


def test_invocations_reads_csv_like_mlflow(served: Any, registry: Any) -> None:
    client, _ = served
    frame = pd.DataFrame(ROWS, columns=list(FEATURES))
    pyfunc = mlflow.pyfunc.load_model(
        registry.client.get_model_version_download_uri("iris-classifier", registry.champion_version)
    )
    response = client.post(
        "/invocations", content=frame.to_csv(index=False).encode(), headers={"content-type": "text/csv"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == [str(v) for v in pyfunc.predict(frame)]


def test_metrics_use_route_templates(served: Any) -> None:
    client, metrics = served
    before = metrics.registry.get_sample_value(
        "iris_http_requests_total", {"route": "/predict", "method": "POST", "status": "200"}
    )
    client.post("/predict", json=record(ROWS[1]))
    for path in ("/nope/1", "/nope/2", "/nope/3"):
        assert client.get(path).status_code == 404
    text = client.get("/metrics").text
    assert 'iris_http_requests_total{method="POST",route="/predict",status="200"}' in text
    after = metrics.registry.get_sample_value(
        "iris_http_requests_total", {"route": "/predict", "method": "POST", "status": "200"}
    )
    assert after == (before or 0) + 1
    assert "/nope" not in text  # raw paths never become labels
    unmatched = {"route": "<unmatched>", "method": "GET", "status": "404"}
    assert metrics.registry.get_sample_value("iris_http_requests_total", unmatched) >= 3
    assert metrics.registry.get_sample_value(
        "iris_http_request_duration_seconds_count", {"route": "/predict"}
    )
    assert 'iris_predictions_total{label="versicolor",model_version=' in text
    assert "iris_model_info{" in text


def test_openapi_is_valid_and_lists_every_route(served: Any) -> None:
    client, _ = served
    document = client.get("/openapi.json").json()
    validate(document)
    routes = {route.path for route in client.app.routes}  # type: ignore[attr-defined]
    assert set(document["paths"]) == routes
    record_schema = document["components"]["schemas"]["IrisRecord"]
    assert set(FEATURES) <= set(record_schema["required"])
    assert record_schema["properties"]["sepal_length"]["maximum"] == 100.0


def test_openapi_declares_bearer_auth_when_a_key_is_set(champion: LoadedModel) -> None:
    from ml.settings import Settings

    app = create_app(Settings(api_key="k"), holder=ModelHolder(champion), metrics=Metrics())
    with TestClient(app) as client:
        document = client.get("/openapi.json").json()
    validate(document)
    assert document["paths"]["/predict"]["post"]["security"] == [{"bearer": []}]
    assert "security" not in document["paths"]["/health"]["get"]


def test_concurrent_requests_are_coalesced_into_fewer_scoring_calls(champion: LoadedModel) -> None:
    from ml.settings import Settings

    metrics = Metrics()
    app = create_app(Settings(microbatch_max_size=64), holder=ModelHolder(champion), metrics=metrics)
    n = 64

    async def fire() -> list[httpx.Response]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://rest") as client:
                requests = [
                    client.post("/predict", json=record(ROWS[i % len(ROWS)], id=f"c-{i}")) for i in range(n)
                ]
                return list(await asyncio.gather(*requests))

    responses = asyncio.run(fire())
    expected = score(champion, np.asarray(ROWS)).labels.tolist()
    for i, response in enumerate(responses):
        assert response.status_code == 200
        assert response.json()["id"] == f"c-{i}"
        assert response.json()["label"] == expected[i % len(ROWS)]  # each request got its own slice
    labels = {"source": "rest"}
    calls = metrics.registry.get_sample_value("iris_batch_size_count", labels)
    rows = metrics.registry.get_sample_value("iris_batch_size_sum", labels)
    single_row_calls = metrics.registry.get_sample_value("iris_batch_size_bucket", {**labels, "le": "1.0"})
    assert rows == n
    assert calls is not None and single_row_calls is not None
    assert single_row_calls < calls  # at least one call scored more than one request
    assert calls < n


def test_serve_runs_on_the_event_loop_uvicorn_picks(monkeypatch: pytest.MonkeyPatch) -> None:
    """uvicorn's "auto" loop is uvloop when installed (as in the lock): the service must run on it,
    not on the stdlib loop a plain ``asyncio.run`` would give (about a third of the CPU per
    request of a trivial route; bench/RESULTS.md)."""
    import app.server
    from ml.settings import Settings

    seen: dict[str, type] = {}

    async def fake_serve(server: Any) -> None:
        seen["loop"] = type(asyncio.get_running_loop())
        server.started = True

    monkeypatch.setattr(app.server, "_serve_until_signal", fake_serve)
    app.server.serve(Settings(), port=0)
    assert seen["loop"].__module__.startswith("uvloop"), seen["loop"]
