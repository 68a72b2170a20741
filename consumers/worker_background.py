"""The stream worker's background loops: the broker-loss probe and the drift windows' publishing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaProducer

from consumers.worker_contract import DriftMessageModel
from consumers.worker_http import WorkerState
from ml.logs import log_event
from ml.metrics import Metrics
from ml.settings import Settings

log = logging.getLogger("consumers.worker")

BROKER_PROBE_S = 2.0  # how often a connected worker checks that the broker still answers
BROKER_PROBE_TIMEOUT_S = 5.0
DRIFT_STOP_S = 3.0  # how long a stop waits for the drift windows already queued


def describe_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def supervised(run: Callable[[], Awaitable[None]], name: str) -> None:
    """Keep a background loop alive: a crash is logged and the loop restarted a second later."""
    while True:
        try:
            await run()
        except Exception as exc:
            log_event(log, "task_crashed", logging.ERROR, task=name, error=describe_error(exc))
            await asyncio.sleep(1.0)


async def cancel(task: asyncio.Task[Any] | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def probe_broker(producer: AIOKafkaProducer, state: WorkerState) -> None:
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
            if state.connected:
                log_event(log, "kafka_connection_lost", logging.WARNING, error=describe_error(exc))
            state.connected, state.kafka_error = False, f"lost: {describe_error(exc)}"
            continue
        if not state.connected:
            log_event(log, "kafka_connection_restored")
        state.connected, state.kafka_error = True, None


def new_drift_monitor(settings: Settings, metrics: Metrics) -> Any:
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


async def publish_drift(drift: Any, publisher: Any) -> None:
    """Publish the windows evaluated since the last call (FastStream's drift publisher)."""
    for result in drift.drain_results():
        try:
            await publisher.publish(DriftMessageModel.model_validate(result))
        except Exception as exc:
            log_event(log, "drift_publish_failed", logging.WARNING, error=describe_error(exc))


async def tick_drift(drift: Any, publisher: Any) -> None:
    """Close the current window if it is due, then publish what has been evaluated."""
    try:
        drift.tick()
    except Exception as exc:
        log_event(log, "drift_tick_failed", logging.WARNING, error=describe_error(exc))
    await publish_drift(drift, publisher)


async def stop_drift(drift: Any, publisher: Any | None) -> None:
    """Stop the monitor (windows already queued get ``DRIFT_STOP_S``), then publish if asked."""
    stopping = asyncio.ensure_future(asyncio.to_thread(drift.stop, DRIFT_STOP_S))
    await asyncio.wait({stopping}, timeout=DRIFT_STOP_S + 0.5)
    # A window still being evaluated after that grace period (or Evidently still being imported)
    # is dropped, and logged by the monitor: otherwise the stop, then the process exit, would wait
    # for the drift process to finish it and the window queued behind it.
    for child in multiprocessing.active_children():
        child.terminate()
    with contextlib.suppress(Exception):
        await stopping
    if publisher is not None:
        await publish_drift(drift, publisher)
