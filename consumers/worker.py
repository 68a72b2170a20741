"""The stream worker as a FastStream application: ``consumers.worker:app``.

    faststream run consumers.worker:app [--http-port 8001] [--http-host 127.0.0.1]
    faststream docs gen consumers.worker:app -o docs/asyncapi.json
    iris-scorer worker [--http-port 8001]          # the same app, through run_worker

Importing this module builds objects only: the settings are read from the environment
(:func:`ml.settings.load_settings`), the broker, its subscriber and publishers are declared,
nothing connects and no model loads. All of that happens in the app's lifespan and hooks
(:class:`consumers.worker_runtime.WorkerRuntime`). The parts:

- :mod:`consumers.worker_broker`: the broker, the batch subscriber on ``iris.requests`` with its
  ack policy (``NACK_ON_ERROR``: commit after every output is acknowledged, rewind to the batch's
  first offsets on failure), its tolerant parser and per-message decoder, and the routes to the
  predictions, dead-letter and drift publishers;
- :mod:`consumers.worker_contract`: the typed messages and headers of the AsyncAPI document;
- :mod:`consumers.worker_runtime`: HTTP, model hot reload, drift windows, connect retries, the
  broker-loss probe, the graceful stop (the in-flight batch produced and committed, exit 0);
- :mod:`consumers.worker_http`: ``/health``, ``/ready``, ``/metrics``, ``/drift/latest``.

**Why predictions and dead letters do not go through FastStream's publishers.** They are
produced a whole batch at a time by :func:`consumers.produce.produce_all` (one record batch per
partition, one future per record batch) on the worker's own ``AIOKafkaProducer`` (``linger_ms=0``:
each batch is complete when it is handed over). FastStream's Kafka publisher sends one record
per ``publish`` call (a publish command, middlewares, serialisation, a partitioner call and a
future each); it has no per-record keys or headers in ``publish_batch``, which the predictions
(key = id) and the DLQ (reason headers) need. Measured on this machine
(``python -m bench.publish_paths``, bench/RESULTS.md): FastStream's publisher costs several
times the bulk path per record, far beyond the 15% of stream throughput the project allows. The
publishers are still declared (the contract) and the drift publisher, one message a window, is
used as is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from faststream import FastStream

from consumers.kafka_config import build_kafka_config
from consumers.worker_contract import WorkerAsyncAPI, headers_by_topic
from consumers.worker_http import WorkerState, create_http_app
from consumers.worker_runtime import AfterBatch, StoppedBeforeStart, WorkerRuntime
from ml.settings import Settings, load_settings

__all__ = [
    "WorkerApp",
    "WorkerState",
    "app",
    "asyncapi_document",
    "build_app",
    "create_http_app",
    "run_worker",
    "serve_worker",
    "write_asyncapi",
]

ASYNCAPI_PATH = Path(__file__).resolve().parents[1] / "docs" / "asyncapi.json"


class WorkerApp(FastStream):
    """FastStream's application; a stop (SIGTERM/SIGINT, ``exit()``) also reaches the runtime,
    which may still be connecting when it comes."""

    def __init__(self, runtime: WorkerRuntime, **kwargs: Any) -> None:
        self.runtime = runtime
        super().__init__(runtime.endpoints.broker, **kwargs)

    def exit(self) -> None:
        self.runtime.request_stop()
        super().exit()

    async def run(self, *args: Any, **kwargs: Any) -> None:
        with contextlib.suppress(StoppedBeforeStart):
            await super().run(*args, **kwargs)


def _nothing() -> None:
    return None


def build_app(
    settings: Settings,
    *,
    http_host: str = "127.0.0.1",
    http_port: int = 8001,
    settle_heap: Callable[[], None] = _nothing,
    after_batch: AfterBatch | None = None,
) -> WorkerApp:
    """The worker's app for ``settings``; objects only, nothing connects until it runs."""
    runtime = WorkerRuntime(
        settings, http_host=http_host, http_port=http_port, settle_heap=settle_heap, after_batch=after_batch
    )

    @contextlib.asynccontextmanager
    async def lifespan(http_port: int = http_port, http_host: str = http_host) -> Any:
        runtime.http_port, runtime.http_host = int(http_port), str(http_host)
        async with runtime.lifespan():
            yield

    specification = WorkerAsyncAPI(
        title="iris-scorer worker",
        version="1.0.0",
        schema_version="3.0.0",
        description="The stream adapter of iris-scorer (docs/ARCHITECTURE.md).",
        headers=headers_by_topic(
            settings.requests_topic,
            settings.predictions_topic,
            settings.dlq_topic,
            settings.drift_topic,
            settings.shadow_topic,
            settings.feedback_dlq_topic,
            settings.performance_topic,
        ),
    )
    return WorkerApp(
        runtime,
        logger=logging.getLogger("consumers.faststream"),
        lifespan=lifespan,
        after_startup=[runtime.after_startup],
        on_shutdown=[runtime.on_shutdown],
        specification=specification,
    )


async def serve_worker(
    settings: Settings,
    *,
    http_host: str,
    http_port: int,
    stop: asyncio.Event,
    settle_heap: Callable[[], None] = _nothing,
    after_batch: AfterBatch | None = None,
) -> int:
    """Run the worker's app until ``stop`` is set (or SIGTERM/SIGINT); 0 after a clean stop."""
    worker = build_app(
        settings, http_host=http_host, http_port=http_port, settle_heap=settle_heap, after_batch=after_batch
    )
    running = asyncio.create_task(worker.run())
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not running.done():
            worker.exit()
        await running
    finally:
        stopping.cancel()
    return 0


def run_worker(
    settings: Settings,
    *,
    http_host: str,
    http_port: int,
    on_ready: Callable[[], None] = _nothing,
    settle_heap: Callable[[], None] = _nothing,
    after_batch: AfterBatch | None = None,
) -> int:
    """``iris-scorer worker``: run until SIGTERM/SIGINT; 0 after a clean stop. ``on_ready`` runs
    once imports are done, ``settle_heap`` after connecting and after each model swap (the entry
    point's GC policy, :mod:`iris_scorer.process`); ``after_batch`` (tests) is awaited after a
    batch's outputs are acknowledged and before its offsets are committed."""
    build_kafka_config(settings)  # bad Kafka settings fail before anything starts
    worker = build_app(
        settings, http_host=http_host, http_port=http_port, settle_heap=settle_heap, after_batch=after_batch
    )
    on_ready()  # imports are done; the heap is settled again once connected
    asyncio.run(worker.run())
    return 0


def asyncapi_document(settings: Settings | None = None) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the worker's topics, as ``faststream docs gen`` writes it
    (default settings: the committed ``docs/asyncapi.json``)."""
    worker = build_app(settings or load_settings(environ={}))
    document: dict[str, Any] = worker.schema.to_specification().to_jsonable()
    return document


def write_asyncapi(path: Path = ASYNCAPI_PATH) -> None:
    """Write :func:`asyncapi_document` (default settings) to ``path``, formatted as
    ``faststream docs gen`` formats it."""
    path.write_text(json.dumps(asyncapi_document(), indent=2), encoding="utf-8")


#: The app of ``faststream run`` / ``faststream docs``: settings from the environment.
app = build_app(load_settings())
