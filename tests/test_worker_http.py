"""The worker's HTTP endpoints (in memory) and its AsyncAPI contract."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from consumers.worker import WorkerState, asyncapi_document, create_http_app
from consumers.worker_contract import DriftMessageModel
from ml.metrics import Metrics
from ml.model import ModelHolder

ASYNCAPI = Path(__file__).resolve().parents[1] / "docs" / "asyncapi.json"
FASTSTREAM = str(Path(sys.executable).parent / "faststream")


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


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("IRIS_")}


def test_committed_asyncapi_is_what_faststream_docs_gen_writes(tmp_path: Path) -> None:
    """Regenerate with: faststream docs gen consumers.worker:app -o docs/asyncapi.json (no IRIS_*
    variables set, so the default topics)."""
    assert ASYNCAPI.exists(), "docs/asyncapi.json is missing"
    out = tmp_path / "asyncapi.json"
    subprocess.run(
        [FASTSTREAM, "docs", "gen", "consumers.worker:app", "-o", str(out)],
        cwd=ASYNCAPI.parents[1],
        env=_clean_env(),
        check=True,
        capture_output=True,
        timeout=120,
    )
    committed = json.loads(ASYNCAPI.read_text())
    assert committed == json.loads(out.read_text()) == asyncapi_document(), (
        "docs/asyncapi.json is out of sync with the worker: regenerate it with "
        "faststream docs gen consumers.worker:app -o docs/asyncapi.json"
    )


def test_importing_the_app_builds_objects_only() -> None:
    code = (
        "import os, sys; before = dict(os.environ)\n"
        "import consumers.worker as w\n"
        "assert dict(os.environ) == before, 'the import wrote the environment'\n"
        "runtime = w.app.runtime\n"
        "assert runtime.producer is None and runtime.handler is None and 'state' not in vars(runtime)\n"
        "assert not w.app.broker.running and 'mlflow' not in sys.modules\n"
        "print('ok')\n"
    )
    env = {
        **_clean_env(),
        "IRIS_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:1",
    }
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ASYNCAPI.parents[1],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_asyncapi_documents_every_topic_with_its_payload_and_headers() -> None:
    document = asyncapi_document()
    channels = json.dumps(document["channels"])
    for topic in ("iris.requests", "iris.predictions", "iris.requests.dlq", "iris.drift"):
        assert f'"address": "{topic}"' in channels
    messages, schemas = document["components"]["messages"], document["components"]["schemas"]
    correlated = {name.split(":")[0] for name, m in messages.items() if "correlationId" in m}
    assert correlated == {"iris.drift"}, "only FastStream's publisher (drift) sends a correlation_id"

    def message(topic: str) -> dict[str, Any]:
        (found,) = [m for name, m in messages.items() if name.startswith(f"{topic}:")]
        return dict(found)

    def payload(topic: str) -> dict[str, Any]:
        found: dict[str, Any] = schemas[message(topic)["payload"]["$ref"].rsplit("/", 1)[1]]
        return found

    request = payload("iris.requests")
    assert request["type"] == "object", "one request object per Kafka message, not an array"
    assert request["required"][0] == "id"
    assert payload("iris.predictions")["title"] == "IrisPrediction"
    assert payload("iris.drift")["title"] == "IrisDriftWindow"
    dlq_headers = message("iris.requests.dlq")["headers"]
    assert set(dlq_headers["required"]) == {
        "error",
        "error_detail",
        "source_topic",
        "source_partition",
        "source_offset",
    }
    assert "headers" in message("iris.requests") and "headers" in message("iris.predictions")


def test_the_drift_payload_model_matches_the_published_message() -> None:
    from datetime import UTC, datetime

    from ml.drift import DriftResult, FeatureDrift, load_drift_params
    from ml.drift_reports import drift_message

    result = DriftResult(
        features={
            "sepal_length": FeatureDrift("ks", 0.01, True),
            "petal_width": FeatureDrift("ks", 0.4, False),
        },
        drifted_share=0.5,
        dataset_drift=True,
        rows=500,
        reference_rows=150,
        params=load_drift_params(),
    )
    now = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
    published = drift_message(result, window_start=now, window_end=now, model_version="3", report=None)
    assert DriftMessageModel.model_validate(published).model_dump() == published
