"""The stream worker: a FastStream ``KafkaBroker`` app with one batch subscriber on the requests topic.

Delivery is at-least-once. The subscriber is declared with ``AckPolicy.MANUAL``: a batch is
decoded message by message, its valid rows scored in one call, predictions (key = id) and DLQ
records (original key, value and headers describing the error) produced, and only when the
broker has acknowledged every one of them are the batch's offsets committed. If anything fails
the consumer is rewound to the batch's first offsets and the batch is consumed again.

Outputs go through a plain ``AIOKafkaProducer``, a whole batch at a time (one record batch per
partition, see :mod:`consumers.produce`, ``linger_ms=0`` since each batch is complete when it is
handed over): FastStream's per-message publish path costs several times more per record.

``IRIS_WORKER_BATCH_DELAY_S`` (tests only) sleeps that long after a batch's outputs are
acknowledged and before its offsets are committed, so a crash test can kill the worker mid-stream
at the point that costs the most duplicates.

Also here: the HTTP side (``/health``, ``/ready``, ``/metrics``, ``/drift/latest``) served by
uvicorn in the same event loop, model hot reload, drift windows, broker retries with backoff and
a graceful stop on SIGTERM/SIGINT (finish the in-flight batch, produce, commit, exit 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

from aiokafka import AIOKafkaProducer, ConsumerRecord
from faststream.kafka import KafkaBroker, KafkaMessage, Topic
from faststream.kafka.message import FAKE_CONSUMER, KafkaAckableMessage
from faststream.middlewares import AckPolicy
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512
from faststream.specification import AsyncAPI
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import WithJsonSchema
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from consumers.handler import StreamHandler
from consumers.kafka_config import KafkaConfig, build_kafka_config
from consumers.produce import Outgoing, produce_all
from ml.errors import BadInputError
from ml.logs import log_event
from ml.metrics import Metrics
from ml.model import ModelHolder
from ml.predict import Scorer
from ml.schema import PredictionModel, RecordModel
from ml.settings import Settings, load_settings

log = logging.getLogger(__name__)

GRACEFUL_TIMEOUT_S = 6.0
RETRY_AFTER_FAILURE_S = 1.0
CONNECT_BACKOFF_MAX_S = 10.0
DRIFT_TICK_S = 1.0
BROKER_PROBE_S = 2.0  # how often a connected worker checks that the broker still answers
BROKER_PROBE_TIMEOUT_S = 5.0
BATCH_DELAY_ENV = "IRIS_WORKER_BATCH_DELAY_S"


def _batch_delay() -> float:
    try:
        return max(0.0, float(os.environ.get(BATCH_DELAY_ENV, "0") or 0))
    except ValueError:
        return 0.0


def _request_schema() -> dict[str, Any]:
    schema = RecordModel.model_json_schema()
    schema["required"] = ["id", *schema["required"]]
    schema["description"] = "A scoring request (JSON, UTF-8); the id is required on the stream."
    return schema


#: One raw request value: the handler gets the bytes (decoded and validated by ml.messages, one
#: message at a time); the documented schema is the request's.
StreamRequest = Annotated[bytes | None, WithJsonSchema(_request_schema())]
BatchCallback = Callable[[Sequence[ConsumerRecord[Any, Any]]], Awaitable[None]]


# --------------------------------------------------------------------------- the FastStream app


def _security(kafka: KafkaConfig) -> BaseSecurity | None:
    if kafka.security_protocol == "PLAINTEXT":
        return None
    ssl_context = kafka.client_options().get("ssl_context")
    if kafka.sasl_mechanism is None:
        return BaseSecurity(ssl_context=ssl_context, use_ssl=True)
    password = kafka.sasl_password.get_secret_value() if kafka.sasl_password else ""
    sasl = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512}
    cls = sasl[kafka.sasl_mechanism]
    return cls(kafka.sasl_username or "", password, ssl_context=ssl_context, use_ssl=kafka.uses_ssl)


def create_broker(settings: Settings, on_batch: BatchCallback) -> KafkaBroker:
    """The worker's broker and its one subscriber; nothing connects until ``start()``."""
    kafka = build_kafka_config(settings)
    broker = KafkaBroker(
        kafka.bootstrap_servers,
        request_timeout_ms=kafka.request_timeout_ms,
        metadata_max_age_ms=kafka.metadata_max_age_ms,
        connections_max_idle_ms=kafka.connections_max_idle_ms,
        security=_security(kafka),
        consumer_only=True,  # outputs use the worker's own producer (see the module docstring)
        graceful_timeout=GRACEFUL_TIMEOUT_S,
        logger=logging.getLogger("consumers.faststream"),  # our structured format
        log_level=logging.DEBUG,  # FastStream logs every batch: keep that out of INFO
        description="Iris stream scorer: requests in, predictions and dead letters out.",
    )
    consumer = kafka.consumer_options()
    consumer.pop("enable_auto_commit")  # FastStream derives it from the ack policy (MANUAL: off)
    holder: dict[str, Any] = {}

    def parse(raw: tuple[ConsumerRecord[Any, Any], ...]) -> KafkaAckableMessage:
        # FastStream's own batch parser decodes every header as UTF-8 and would fail the whole
        # batch on one odd header; ours reads nothing it does not need.
        live = holder["subscriber"].consumer
        return KafkaAckableMessage(
            body=raw,
            raw_message=raw,
            headers={},
            message_id=f"{raw[0].topic}-{raw[0].partition}-{raw[0].offset}" if raw else "",
            consumer=live if live is not None else FAKE_CONSUMER,
        )

    def decode(message: Any) -> list[bytes | None]:
        return [r.value for r in message.raw_message]

    subscriber = broker.subscriber(
        Topic(settings.requests_topic, declare=False),
        group_id=settings.consumer_group,
        batch=True,
        max_records=settings.batch_max_records,
        batch_timeout_ms=settings.batch_max_wait_ms,
        fetch_max_wait_ms=max(10, min(500, settings.batch_max_wait_ms)),
        ack_policy=AckPolicy.MANUAL,
        parser=parse,
        decoder=decode,
        title=f"{settings.requests_topic}:score",
        description=(
            "Scoring requests, consumed in batches. Valid ones are scored and published to "
            f"{settings.predictions_topic}; bad ones go unchanged to {settings.dlq_topic}. "
            "Offsets are committed after both are acknowledged (at-least-once)."
        ),
        **consumer,
    )
    holder["subscriber"] = subscriber

    @subscriber  # type: ignore[untyped-decorator]
    async def score_requests(body: list[StreamRequest], message: KafkaMessage) -> None:
        await _process(on_batch, message)

    # Declared for the AsyncAPI contract; records are produced by the worker's own producer.
    broker.publisher(
        Topic(settings.predictions_topic, declare=False),
        schema=PredictionModel,
        title=f"{settings.predictions_topic}:publish",
        description="One prediction per valid request; key: the request id.",
    )
    broker.publisher(
        Topic(settings.dlq_topic, declare=False),
        schema=bytes,
        title=f"{settings.dlq_topic}:publish",
        description=(
            "Requests that could not be scored: the original key and value bytes unchanged; headers "
            "error (empty, too_large, invalid_json, validation_error), error_detail, source_topic, "
            "source_partition, source_offset."
        ),
    )
    broker.publisher(
        Topic(settings.drift_topic, declare=False),
        schema=dict[str, Any],
        title=f"{settings.drift_topic}:publish",
        description="One drift summary per closed window (rows, dataset_drift, per-feature scores, report path).",
    )
    return broker


async def _process(on_batch: BatchCallback, message: KafkaMessage) -> None:
    """Handle, then commit; on failure rewind to the batch's first offsets (it will come again)."""
    batch: Sequence[ConsumerRecord[Any, Any]] = message.raw_message
    try:
        await on_batch(batch)
    except Exception as exc:
        log_event(log, "batch_failed", logging.ERROR, size=len(batch), error=f"{type(exc).__name__}: {exc}")
        await asyncio.sleep(RETRY_AFTER_FAILURE_S)
        with contextlib.suppress(Exception):  # partitions revoked meanwhile: the new owner re-reads
            await message.nack()
        return
    try:
        await message.ack()
    except Exception as exc:  # e.g. a rebalance: the batch will be delivered again (duplicates)
        log_event(
            log, "commit_failed", logging.WARNING, size=len(batch), error=f"{type(exc).__name__}: {exc}"
        )


def asyncapi_document(settings: Settings | None = None) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the worker's topics (committed as ``docs/asyncapi.json``)."""

    async def never(_: Sequence[ConsumerRecord[Any, Any]]) -> None:
        return None

    broker = create_broker(settings or load_settings(environ={}), never)
    spec = AsyncAPI(broker, title="iris-scorer worker", version="1.0.0", schema_version="3.0.0")
    document: dict[str, Any] = spec.to_specification().to_jsonable()
    return document


# --------------------------------------------------------------------------- outputs


class ProducerSink:
    """Produce a batch of records and wait for every acknowledgement (raises on the first failure)."""

    def __init__(self, producer: AIOKafkaProducer, max_request_size: int) -> None:
        self.producer, self.max_request_size = producer, max_request_size

    async def __call__(self, outgoing: Sequence[Outgoing]) -> None:
        await produce_all(self.producer, outgoing, max_request_size=self.max_request_size)


# --------------------------------------------------------------------------- HTTP


@dataclass
class WorkerState:
    holder: ModelHolder
    metrics: Metrics
    drift: Any = None
    connected: bool = False
    kafka_error: str | None = "not connected yet"
    stopping: bool = False
    counts: dict[str, int] = field(default_factory=lambda: {"predictions": 0, "rejected": 0, "batches": 0})


def create_http_app(state: WorkerState) -> Starlette:
    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def ready(_: Request) -> Response:
        reasons = []
        if not state.connected:
            reasons.append(f"broker not connected ({state.kafka_error})")
        if not state.holder.ready:
            reasons.append("no model loaded yet")
        if state.stopping:
            reasons.append("stopping")
        if reasons:
            return JSONResponse({"status": "not_ready", "detail": "; ".join(reasons)}, status_code=503)
        return JSONResponse({"status": "ready", "model_version": state.holder.version, **state.counts})

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def drift_latest(_: Request) -> Response:
        latest = state.drift.latest if state.drift is not None else None
        if latest is None:
            return JSONResponse(
                {"error": "not_found", "detail": "no drift window has closed yet"}, status_code=404
            )
        return JSONResponse(latest)

    routes = [
        Route("/health", health),
        Route("/ready", ready),
        Route("/metrics", metrics),
        Route("/drift/latest", drift_latest),
    ]
    return Starlette(routes=routes)


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise BadInputError(
            f"the worker's HTTP port {host}:{port} cannot be used ({exc.strerror})."
        ) from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _http_server(app: Starlette) -> Any:
    import uvicorn

    class QuietServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:  # the worker owns SIGTERM/SIGINT
            yield

    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
    return QuietServer(config)


# --------------------------------------------------------------------------- drift


def _drift_monitor(settings: Settings, metrics: Metrics) -> Any:
    if not settings.drift_enabled:
        log_event(log, "drift_disabled", reason="IRIS_DRIFT_ENABLED=false")
        return None
    try:
        from consumers.drift_monitor import DriftMonitor
    except (ImportError, AttributeError) as exc:
        log_event(
            log,
            "drift_disabled",
            logging.WARNING,
            reason=f"consumers.drift_monitor.DriftMonitor unavailable: {exc}",
        )
        return None
    return DriftMonitor(settings, metrics)


async def _publish_drift(drift: Any, producer: AIOKafkaProducer, topic: str) -> None:
    import orjson

    for result in drift.drain_results():
        try:
            await producer.send_and_wait(topic, orjson.dumps(result, default=str))
        except Exception as exc:
            log_event(log, "drift_publish_failed", logging.WARNING, error=f"{type(exc).__name__}: {exc}")


async def _drift_loop(drift: Any, producer: AIOKafkaProducer, topic: str) -> None:
    while True:
        await asyncio.sleep(DRIFT_TICK_S)
        try:
            drift.tick()
        except Exception as exc:
            log_event(log, "drift_tick_failed", logging.WARNING, error=f"{type(exc).__name__}: {exc}")
        await _publish_drift(drift, producer, topic)


# --------------------------------------------------------------------------- broker liveness


async def _probe_broker(producer: AIOKafkaProducer, state: WorkerState) -> None:
    """Keep ``state.connected`` true only while the cluster answers a metadata request.

    The consumer and producer reconnect on their own, so a lost broker does not stop the worker
    (it keeps retrying; nothing is committed while outputs cannot be produced); ``/ready`` turns
    503 within about ``BROKER_PROBE_S + BROKER_PROBE_TIMEOUT_S`` and back to 200 when it returns.
    """
    while True:
        await asyncio.sleep(BROKER_PROBE_S)
        try:
            await asyncio.wait_for(producer.client.fetch_all_metadata(), BROKER_PROBE_TIMEOUT_S)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if state.connected:
                log_event(log, "kafka_connection_lost", logging.WARNING, error=error)
            state.connected, state.kafka_error = False, f"lost: {error}"
            continue
        if not state.connected:
            log_event(log, "kafka_connection_restored")
        state.connected, state.kafka_error = True, None


# --------------------------------------------------------------------------- the process


async def _supervised(run: Callable[[], Awaitable[None]], name: str) -> None:
    """Keep a background loop alive: a crash is logged and the loop restarted a second later."""
    while True:
        try:
            await run()
        except Exception as exc:
            log_event(log, "task_crashed", logging.ERROR, task=name, error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(1.0)


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to ``seconds``; True if ``stop`` was set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


def _nothing() -> None:
    return None


async def serve_worker(
    settings: Settings,
    *,
    http_host: str,
    http_port: int,
    stop: asyncio.Event,
    settle_heap: Callable[[], None] = _nothing,
) -> int:
    from ml import tracking
    from ml.reload import ModelWatcher

    kafka = build_kafka_config(settings)
    metrics = Metrics()
    holder = ModelHolder()
    state = WorkerState(holder=holder, metrics=metrics)
    scorer = Scorer(holder, metrics)
    sock = _bind(http_host, http_port)
    server = _http_server(create_http_app(state))
    http_task = asyncio.create_task(server.serve(sockets=[sock]))
    log_event(log, "worker_http", address=f"http://{http_host}:{sock.getsockname()[1]}")

    client = tracking.client(settings.mlflow_tracking_uri)
    watcher = ModelWatcher(
        client,
        settings.model_uri,
        holder,
        metrics,
        poll_seconds=settings.model_poll_seconds,
        after_swap=settle_heap,
    )
    watch_task = asyncio.create_task(_supervised(watcher.run, "model_watcher"))
    state.drift = drift = _drift_monitor(settings, metrics)
    if drift is not None:
        drift.start()
    producer: AIOKafkaProducer | None = None
    broker: KafkaBroker | None = None
    drift_task: asyncio.Task[None] | None = None
    probe_task: asyncio.Task[None] | None = None
    try:
        while not holder.ready:
            if await _wait(stop, 0.2):
                return 0
        handler: StreamHandler | None = None
        delay = _batch_delay()

        async def on_batch(batch: Sequence[ConsumerRecord[Any, Any]]) -> None:
            assert handler is not None
            predicted, rejected = await handler.handle(batch)
            if delay:
                await asyncio.sleep(delay)
            state.counts["predictions"] += predicted
            state.counts["rejected"] += rejected
            state.counts["batches"] += 1

        attempt = 0
        while broker is None:
            attempt += 1
            candidate = create_broker(settings, on_batch)
            new_producer = AIOKafkaProducer(**kafka.producer_options(linger_ms=0))
            try:
                await new_producer.start()
                handler = StreamHandler(
                    scorer,
                    ProducerSink(new_producer, kafka.max_request_size),
                    predictions_topic=settings.predictions_topic,
                    dlq_topic=settings.dlq_topic,
                    max_message_bytes=settings.max_message_bytes,
                    observe=drift.observe if drift is not None else None,
                )
                await candidate.start()
            except Exception as exc:
                delay = min(CONNECT_BACKOFF_MAX_S, 2.0 ** min(attempt - 1, 4))
                state.kafka_error = f"{type(exc).__name__}: {exc}"
                log_event(
                    log,
                    "kafka_connect_failed",
                    logging.WARNING,
                    attempt=attempt,
                    bootstrap=kafka.bootstrap_servers,
                    error=state.kafka_error,
                    retry_in_s=delay,
                )
                with contextlib.suppress(Exception):
                    await candidate.stop()
                with contextlib.suppress(Exception):
                    await new_producer.stop()
                if await _wait(stop, delay):
                    return 0
                continue
            broker, producer = candidate, new_producer
        state.connected, state.kafka_error = True, None
        settle_heap()  # the Kafka clients are long-lived too
        log_event(
            log,
            "worker_started",
            group=settings.consumer_group,
            topic=settings.requests_topic,
            **kafka.describe(),
        )
        probe_task = asyncio.create_task(_supervised(lambda: _probe_broker(producer, state), "broker_probe"))
        if drift is not None:
            drift_task = asyncio.create_task(_drift_loop(drift, producer, settings.drift_topic))
        await stop.wait()
        return 0
    finally:
        state.stopping = True
        started = time.monotonic()
        if probe_task is not None:
            probe_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probe_task
        if broker is not None:
            await broker.stop()  # waits for the in-flight batch: produced and committed
        if drift_task is not None:
            drift_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drift_task
        if drift is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(drift.stop, 3.0)
            if producer is not None:
                await _publish_drift(drift, producer, settings.drift_topic)
        if producer is not None:
            await producer.stop()
        watch_task.cancel()
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await watch_task
        await http_task
        log_event(log, "worker_stopped", seconds=round(time.monotonic() - started, 2), **state.counts)


def run_worker(
    settings: Settings,
    *,
    http_host: str,
    http_port: int,
    on_ready: Callable[[], None] = _nothing,
    settle_heap: Callable[[], None] = _nothing,
) -> int:
    """``iris-scorer worker``: run until SIGTERM/SIGINT; 0 after a clean stop. ``on_ready`` runs
    once imports are done, ``settle_heap`` after connecting and after each model swap (the entry
    point's GC policy, :mod:`iris_scorer.process`)."""
    build_kafka_config(settings)  # bad Kafka settings fail before anything starts

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await serve_worker(
            settings, http_host=http_host, http_port=http_port, stop=stop, settle_heap=settle_heap
        )

    on_ready()  # imports are done; the heap is settled again once connected
    return asyncio.run(main())


def write_asyncapi(path: str = "docs/asyncapi.json") -> None:
    """Write :func:`asyncapi_document` (default settings) to ``path``."""
    import json
    from pathlib import Path

    Path(path).write_text(json.dumps(asyncapi_document(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
