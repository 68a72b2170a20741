"""What the stream worker does around FastStream's consume loop, as the app's lifespan and hooks.

:class:`WorkerRuntime` owns the process-long parts: the HTTP endpoints, the model watcher (hot
reload), the drift monitor, the producer of predictions and dead letters, the broker-loss probe.

- ``lifespan`` (entered before FastStream starts the broker, left after it stopped): bind and
  serve HTTP, start the watcher and the drift monitor, wait for a model, then connect (the
  producer and the broker's own clients) with a capped exponential backoff, ``/ready`` saying
  why it is 503 meanwhile. A stop asked before the worker connected ends it there
  (:class:`StoppedBeforeStart`, exit status 0). On the way out: the producer, the watcher and
  the HTTP server, then the ``worker_stopped`` event.
- ``after_startup``: the worker is connected: probe and drift publishing start.
- ``on_shutdown`` (before FastStream stops the broker): ``/ready`` turns 503, the subscriber
  stops after its in-flight batch is produced and committed, and the drift windows still
  queued are evaluated and published.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaProducer

from consumers.compat import subscriber_consumer, wrap_batch_fetch
from consumers.feedback import FeedbackReader
from consumers.handler import StreamHandler, StreamItem
from consumers.kafka_config import build_kafka_config
from consumers.kafka_connect import explain_connect_failure
from consumers.produce import produce_all
from consumers.worker_background import (
    cancel,
    describe_error,
    new_drift_monitor,
    probe_broker,
    stop_drift,
    supervised,
    tick_drift,
)
from consumers.worker_broker import Batch, create_broker
from consumers.worker_commits import CommitThrottle
from consumers.worker_errors import ConsumerErrors, guard_fetches
from consumers.worker_http import WorkerState, bind_http, create_http_app, http_server
from consumers.worker_models import experiment_for, start_watchers
from consumers.worker_transactions import TransactionalOutputs
from ml.logs import configure_logging, log_event
from ml.metrics import Metrics
from ml.settings import Settings

if TYPE_CHECKING:
    from ml.model import ModelHolder

log = logging.getLogger("consumers.worker")

RETRY_AFTER_FAILURE_S = 1.0
CONNECT_BACKOFF_MAX_S = 10.0
DRIFT_TICK_S = 1.0

#: Awaited after a batch's outputs are acknowledged and before its offsets are committed.
AfterBatch = Callable[[], Awaitable[None]]


class StoppedBeforeStart(Exception):
    """SIGTERM/SIGINT arrived before the worker connected: nothing to finish (the app's ``run``
    returns normally)."""


def _nothing() -> None:
    return None


class WorkerRuntime:
    def __init__(
        self,
        settings: Settings,
        *,
        http_host: str = "127.0.0.1",
        http_port: int = 8001,
        settle_heap: Callable[[], None] = _nothing,
        after_batch: AfterBatch | None = None,
    ) -> None:
        self.settings, self.http_host, self.http_port = settings, http_host, http_port
        self.settle_heap, self.after_batch = settle_heap, after_batch
        self.kafka = build_kafka_config(settings)
        self.metrics = Metrics()
        self.commits = CommitThrottle(
            settings.commit_interval_ms / 1000, record_acks=not self.kafka.exactly_once
        )
        self.transactions = (
            TransactionalOutputs(
                self.kafka,
                settings.consumer_group,
                lambda: subscriber_consumer(self.endpoints.subscriber),
                on_outcome=self._transaction_outcome,
            )
            if self.kafka.exactly_once
            else None
        )
        self.feedback = (
            FeedbackReader(settings, self.kafka, self.metrics, self._produce)
            if settings.feedback_enabled
            else None
        )
        self.endpoints = create_broker(
            settings,
            self.route,
            on_parse_error=self._parse_failed,
            commits=self.commits,
            transactions=self.transactions,
            feedback=self.feedback,
        )
        guard_fetches(self.endpoints.subscriber, lambda: self.consumer_errors)
        wrap_batch_fetch(self.endpoints.subscriber, self.commits.track)  # what a revoke waits for
        self.handler: StreamHandler | None = None
        self.producer: AIOKafkaProducer | None = None
        self.drift: Any = None
        self._drift_monitor: Any = None  # until it is stopped
        self._stop = asyncio.Event()
        self._stop_asked_at: float | None = None
        self._probe: asyncio.Task[None] | None = None
        self._drift_loop: asyncio.Task[None] | None = None
        self._feedback_loop: asyncio.Task[None] | None = None

    @functools.cached_property
    def state(self) -> WorkerState:
        """Built on first use: ``ml.model`` imports MLflow, which an import of the app must not."""
        from ml.model import ModelHolder

        return WorkerState(holder=ModelHolder(), metrics=self.metrics)

    @functools.cached_property
    def consumer_errors(self) -> ConsumerErrors:
        return ConsumerErrors(self.state)

    def _parse_failed(self, exc: BaseException, batch: Batch) -> None:
        first = batch[0] if batch else None
        self.consumer_errors.record(
            exc,
            getattr(first, "topic", None),
            getattr(first, "partition", None),
            getattr(first, "offset", None),
        )

    @property
    def holder(self) -> ModelHolder:
        return self.state.holder

    def request_stop(self) -> None:
        if not self._stop.is_set():
            self._stop_asked_at = time.monotonic()
        self._stop.set()

    # ------------------------------------------------------------------ the hot path

    async def route(self, batch: Batch, items: Sequence[StreamItem]) -> None:
        """Score, produce and wait for every acknowledgement; a failure is logged and re-raised
        a second later (the subscriber's ack policy then rewinds the batch)."""
        handler = self.handler
        try:
            if handler is None:
                raise RuntimeError("the worker is not connected yet")
            if self.transactions is None:
                predicted, rejected = await handler.handle(batch, items)
            else:  # each partition's outputs and offsets in one transaction
                unseen = self.transactions.unseen(batch)
                if unseen is not None:  # a rewound batch: its committed part is done
                    batch, items = unseen, None  # type: ignore[assignment]
                predicted, rejected = (
                    await handler.handle(
                        batch, items, sink=functools.partial(self.transactions.produce, batch)
                    )
                    if batch
                    else (0, 0)
                )
            if self.after_batch is not None:
                await self.after_batch()
        except Exception as exc:
            log_event(log, "batch_failed", logging.ERROR, size=len(batch), error=describe_error(exc))
            await asyncio.sleep(RETRY_AFTER_FAILURE_S)
            raise
        self.state.counts["predictions"] += predicted
        self.state.counts["rejected"] += rejected
        self.state.counts["batches"] += 1

    def _transaction_outcome(self, outcome: str) -> None:
        self.metrics.kafka_transactions.labels(outcome=outcome).inc()

    async def _produce(self, outgoing: Sequence[Any]) -> None:
        assert self.producer is not None
        await produce_all(self.producer, outgoing, max_request_size=self.kafka.max_request_size)

    # ------------------------------------------------------------------ lifespan and hooks

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        if not logging.getLogger().handlers:  # `faststream run`: no entry point configured logs
            configure_logging(self.settings.log_level)
        sock = bind_http(self.http_host, self.http_port)
        server = http_server(create_http_app(self.state))
        http_task = asyncio.create_task(server.serve(sockets=[sock]))
        log_event(log, "worker_http", address=f"http://{self.http_host}:{sock.getsockname()[1]}")
        watch_tasks = start_watchers(self.settings, self.state, self.settle_heap)
        self.state.drift = self.drift = self._drift_monitor = new_drift_monitor(self.settings, self.metrics)
        if self.drift is not None:
            self.drift.start()
        try:
            while not self.holder.ready:
                if await self._wait(0.2):
                    raise StoppedBeforeStart
            await self._connect()
            yield
        finally:
            self.state.stopping = True
            started = self._stop_asked_at or time.monotonic()
            await self._finish_drift(publish=False)  # stopped before connecting
            if self.producer is not None:
                await self.producer.stop()
            if self.transactions is not None:
                await self.transactions.close()
            for task in watch_tasks:
                await cancel(task)
            server.should_exit = True
            await http_task
            log_event(
                log, "worker_stopped", seconds=round(time.monotonic() - started, 2), **self.state.counts
            )

    async def _wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True if a stop was asked meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)
        return self._stop.is_set()

    async def _connect(self) -> None:
        broker, attempt = self.endpoints.broker, 0
        while True:
            attempt += 1
            producer = AIOKafkaProducer(**self.kafka.producer_options(linger_ms=0))
            try:
                await producer.start()
                await broker.connect()
            except Exception as exc:
                backoff_s = min(CONNECT_BACKOFF_MAX_S, 2.0 ** min(attempt - 1, 4))
                self.state.kafka_error = await explain_connect_failure(self.kafka, exc)
                log_event(
                    log,
                    "kafka_connect_failed",
                    logging.WARNING,
                    attempt=attempt,
                    bootstrap=self.kafka.bootstrap_servers,
                    error=self.state.kafka_error,
                    retry_in_s=backoff_s,
                )
                with contextlib.suppress(Exception):
                    await broker.stop()
                with contextlib.suppress(Exception):
                    await producer.stop()
                if await self._wait(backoff_s):
                    raise StoppedBeforeStart from None
                continue
            from ml.predict import Scorer

            self.producer = producer
            experiment, agreement = experiment_for(self.settings, self.state)
            self.handler = StreamHandler(
                Scorer(self.holder, self.metrics),
                self._produce,
                predictions_topic=self.settings.predictions_topic,
                dlq_topic=self.settings.dlq_topic,
                max_message_bytes=self.settings.max_message_bytes,
                max_record_bytes=self.kafka.max_request_size,
                observe=self.drift.observe if self.drift is not None else None,
                experiment=experiment,
                shadow_topic=self.settings.shadow_topic,
                agreement=agreement,
                on_scored=self.feedback.scored if self.feedback is not None else None,
            )
            return

    async def after_startup(self) -> None:
        self.state.connected, self.state.kafka_error = True, None
        self.settle_heap()  # the Kafka clients are long-lived too
        consumer = subscriber_consumer(self.endpoints.subscriber)
        if consumer is not None:  # commits: at most one per interval
            self.commits.install(consumer)
        log_event(
            log,
            "worker_started",
            group=self.settings.consumer_group,
            topic=self.settings.requests_topic,
            **self.kafka.describe(),
        )
        self._probe = asyncio.create_task(supervised(self._probe_broker, "broker_probe"))
        if self.feedback is not None:
            self._feedback_loop = asyncio.create_task(supervised(self.feedback.run, "feedback"))
        if self.drift is not None:
            self._drift_loop = asyncio.create_task(supervised(self._tick_drift, "drift_loop"))

    async def on_shutdown(self) -> None:
        self.state.stopping = True
        await cancel(self._probe)
        await self.endpoints.subscriber.stop()  # waits for the in-flight batch: produced, committed
        await cancel(self._feedback_loop)  # commits the labels joined so far
        await self._finish_drift(publish=True)

    # ------------------------------------------------------------------ background loops

    async def _probe_broker(self) -> None:
        assert self.producer is not None
        await probe_broker(self.producer, self.state)

    async def _tick_drift(self) -> None:
        while True:
            await asyncio.sleep(DRIFT_TICK_S)
            await tick_drift(self.drift, self.endpoints.drift)

    async def _finish_drift(self, *, publish: bool) -> None:
        """Stop the drift monitor once: evaluate the windows still queued and, if asked, publish."""
        drift, self._drift_monitor = self._drift_monitor, None
        if drift is not None:
            await cancel(self._drift_loop)
            await stop_drift(drift, self.endpoints.drift if publish else None)
