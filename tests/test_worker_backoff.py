"""The connect-retry backoff never leaks into the batch path (issue 14, point 3).

A former bug: after failed connects, every batch slept the backoff. Here the worker runs in
process, its broker down for the first two connect attempts, then up; 1,000 messages are then
processed. Every ``asyncio.sleep`` and every ``WorkerRuntime._wait`` (the backoff's own wait) is
recorded with whether it ran inside a batch (a context variable set around ``route``): the
batches must await neither. No wall-clock threshold: what is asserted is what the batch path
awaits, not how long it took.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest
from kafka_fixtures import free_port, start_embedded_broker, stop_broker
from test_worker_integration import publish

from consumers import worker_runtime
from consumers.publish import sample_messages
from consumers.worker import serve_worker
from consumers.worker_runtime import WorkerRuntime

pytestmark = [pytest.mark.slow, pytest.mark.integration]

COUNT = 1000
IN_BATCH: contextvars.ContextVar[bool] = contextvars.ContextVar("in_batch", default=False)


class ConnectFailures(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "kafka_connect_failed":
            self.count += 1


def test_batches_after_failed_connects_never_await_the_backoff(
    registry: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sleeps: list[tuple[float, bool]] = []  # (seconds, inside a batch)
    waits: list[tuple[float, bool]] = []
    batches: list[int] = []
    real_sleep, real_route, real_wait = asyncio.sleep, WorkerRuntime.route, WorkerRuntime._wait

    async def recorded_sleep(delay: float, *args: Any, **kwargs: Any) -> Any:
        sleeps.append((float(delay), IN_BATCH.get()))
        return await real_sleep(delay, *args, **kwargs)

    async def recorded_wait(self: WorkerRuntime, seconds: float) -> bool:
        waits.append((float(seconds), IN_BATCH.get()))
        return await real_wait(self, seconds)

    async def recorded_route(self: WorkerRuntime, batch: Sequence[Any], items: Sequence[Any]) -> None:
        token = IN_BATCH.set(True)
        try:
            await real_route(self, batch, items)
            batches.append(len(batch))
        finally:
            IN_BATCH.reset(token)

    monkeypatch.setattr(asyncio, "sleep", recorded_sleep)
    monkeypatch.setattr(WorkerRuntime, "_wait", recorded_wait)
    monkeypatch.setattr(WorkerRuntime, "route", recorded_route)
    failures = ConnectFailures()
    logging.getLogger("consumers.worker").addHandler(failures)

    port = free_port()
    settings = registry.settings(
        kafka_bootstrap_servers=f"127.0.0.1:{port}",
        drift_enabled=False,
        kafka_session_timeout_ms=6000,
        batch_max_records=50,  # many batches: a per-batch wait would be awaited 20+ times
    )
    result: dict[str, Any] = {}
    procs: list[Any] = []

    def drive(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
        """The test's side, in a thread (FastStream's signal handling wants the main thread)."""
        try:
            deadline = time.monotonic() + 120
            while failures.count < 2:
                assert time.monotonic() < deadline, "two failed connects"
                time.sleep(0.1)
            proc, bootstrap = start_embedded_broker(port=port)
            procs.append(proc)
            publish(bootstrap, sample_messages(COUNT, seed=51))
            while sum(batches) < COUNT:
                assert time.monotonic() < deadline, f"{COUNT} messages processed"
                time.sleep(0.1)
        except BaseException as exc:
            result["error"] = exc
        finally:
            loop.call_soon_threadsafe(stop.set)

    async def main() -> int:
        stop = asyncio.Event()
        driver = threading.Thread(target=drive, args=(asyncio.get_running_loop(), stop), daemon=True)
        driver.start()
        code = await serve_worker(settings, http_host="127.0.0.1", http_port=free_port(), stop=stop)
        await asyncio.to_thread(driver.join, 30)
        return code

    try:
        result["code"] = asyncio.run(main())
    finally:
        logging.getLogger("consumers.worker").removeHandler(failures)
        for proc in procs:
            stop_broker(proc)
    assert "error" not in result, result["error"]
    assert result.get("code") == 0, result
    assert failures.count >= 2
    backoffs = [s for s, inside in waits if not inside]
    assert any(s >= 1.0 for s in backoffs), "the connect retries waited their backoff"
    assert len(batches) >= COUNT // settings.batch_max_records
    assert [s for s, inside in waits if inside] == [], "a batch awaited the connect backoff"
    assert [s for s, inside in sleeps if inside and s > 0] == [], "a batch slept"
    assert worker_runtime.RETRY_AFTER_FAILURE_S > 0  # the only sleep a batch may take: after a failure
