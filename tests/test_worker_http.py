"""The worker's HTTP endpoints (in memory) and its AsyncAPI contract."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx

from consumers.worker import WorkerState, asyncapi_document, create_http_app
from ml.metrics import Metrics
from ml.model import ModelHolder

ASYNCAPI = Path(__file__).resolve().parents[1] / "docs" / "asyncapi.json"


class FakeDrift:
    latest: dict[str, object] | None = None


class client:
    """A tiny sync facade over httpx's ASGI transport (no server, no threads)."""

    def __init__(self, state: WorkerState) -> None:
        self.app = create_http_app(state)

    def get(self, path: str) -> httpx.Response:
        async def fetch() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://worker") as http:
                return await http.get(path)

        return asyncio.run(fetch())


def test_ready_needs_broker_and_model() -> None:
    state = WorkerState(holder=ModelHolder(), metrics=Metrics())
    http = client(state)
    assert http.get("/health").status_code == 200
    response = http.get("/ready")
    assert response.status_code == 503
    assert "broker not connected" in response.json()["detail"]
    assert "no model loaded" in response.json()["detail"]
    state.connected = True
    assert "broker" not in http.get("/ready").json()["detail"]


def test_metrics_are_prometheus_text() -> None:
    metrics = Metrics()
    metrics.dlq_messages.labels(reason="invalid_json").inc(3)
    response = client(WorkerState(holder=ModelHolder(), metrics=metrics)).get("/metrics")
    assert response.status_code == 200
    assert 'iris_dlq_messages_total{reason="invalid_json"} 3.0' in response.text


def test_drift_latest_is_404_until_a_window_closes() -> None:
    drift = FakeDrift()
    state = WorkerState(holder=ModelHolder(), metrics=Metrics(), drift=drift)
    http = client(state)
    assert http.get("/drift/latest").status_code == 404
    drift.latest = {"rows": 500, "dataset_drift": True}
    assert http.get("/drift/latest").json() == {"rows": 500, "dataset_drift": True}
    assert (
        client(WorkerState(holder=ModelHolder(), metrics=Metrics())).get("/drift/latest").status_code == 404
    )


def test_committed_asyncapi_matches_the_app() -> None:
    """Regenerate with: python -c 'from consumers.worker import write_asyncapi; write_asyncapi()'."""
    assert ASYNCAPI.exists(), "docs/asyncapi.json is missing"
    assert json.loads(ASYNCAPI.read_text()) == asyncapi_document(), (
        "docs/asyncapi.json is out of sync with the worker: regenerate it with "
        "python -c 'from consumers.worker import write_asyncapi; write_asyncapi()'"
    )


def test_asyncapi_documents_every_topic() -> None:
    document = asyncapi_document()
    channels = json.dumps(document["channels"])
    for topic in ("iris.requests", "iris.predictions", "iris.requests.dlq", "iris.drift"):
        assert f'"address": "{topic}"' in channels
    schemas = document["components"]["schemas"]
    assert "IrisPrediction" in schemas
    request = next(s for s in schemas.values() if s.get("type") == "array")["items"]
    assert request["required"][0] == "id"
