"""Helpers shared by the reliability tests: figures file, raw producing, readiness polling.

The worker subprocess, the topic collector and the publishing helpers are those of
``tests/test_worker_integration.py`` (imported, not copied).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer

FIGURES_ENV = "IRIS_RELIABILITY_FIGURES"


def record_figures(section: str, values: dict[str, Any]) -> None:
    """Print ``values`` and, when ``IRIS_RELIABILITY_FIGURES`` names a JSON file, merge them into it."""
    print(f"\n[reliability] {section}: {json.dumps(values, sort_keys=True)}")
    target = os.environ.get(FIGURES_ENV, "").strip()
    if not target:
        return
    path = Path(target)
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    data[section] = values
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


async def _produce_raw(
    bootstrap: str, topic: str, messages: Sequence[tuple[bytes | None, bytes | None]], max_request_size: int
) -> list[tuple[int, int]]:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", max_request_size=max_request_size, linger_ms=5
    )
    await producer.start()
    try:
        positions = []
        for key, value in messages:  # one at a time: the positions are in message order
            meta = await producer.send_and_wait(topic, value, key=key)
            positions.append((meta.partition, meta.offset))
        return positions
    finally:
        await producer.stop()


def produce_raw(
    bootstrap: str,
    topic: str,
    messages: Sequence[tuple[bytes | None, bytes | None]],
    *,
    max_request_size: int = 4 * 1024 * 1024,
) -> list[tuple[int, int]]:
    """Produce exactly these keys and values (``None`` allowed; a keyless tombstone is sent through
    the low-level batch API since ``send`` refuses it); returns each message's (partition, offset)."""
    plain = [(k, v) for k, v in messages if not (k is None and v is None)]
    if len(plain) != len(messages):
        raise ValueError("use produce_keyless_tombstone() for a record without key and value")
    return asyncio.run(_produce_raw(bootstrap, topic, plain, max_request_size))


async def _keyless_tombstone(bootstrap: str, topic: str, partition: int) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        batch = producer.create_batch()
        assert batch.append(key=None, value=None, timestamp=None) is not None
        batch.close()
        future = await producer.send_batch(batch, topic, partition=partition)
        meta = await future
        return int(meta.offset)
    finally:
        await producer.stop()


def produce_keyless_tombstone(bootstrap: str, topic: str, partition: int = 0) -> tuple[int, int]:
    """A record with neither key nor value (what a non-Python client can produce)."""
    return partition, asyncio.run(_keyless_tombstone(bootstrap, topic, partition))


#: (partition, key, value, headers, compression type or None) of :func:`produce_records`.
Placed = tuple[int, bytes | None, bytes | None, list[tuple[str, bytes]], str | None]


async def _produce_records(bootstrap: str, topic: str, records: Sequence[Placed]) -> list[tuple[int, int]]:
    producers: dict[str | None, AIOKafkaProducer] = {}
    try:
        positions = []
        for partition, key, value, headers, codec in records:
            producer = producers.get(codec)
            if producer is None:
                producer = producers[codec] = AIOKafkaProducer(
                    bootstrap_servers=bootstrap,
                    acks="all",
                    max_request_size=16 * 1024 * 1024,
                    compression_type=codec,
                )
                await producer.start()
            meta = await producer.send_and_wait(
                topic, value, key=key, partition=partition, headers=headers or None
            )
            positions.append((meta.partition, meta.offset))
        return positions
    finally:
        for producer in producers.values():
            await producer.stop()


def produce_records(bootstrap: str, topic: str, records: Sequence[Placed]) -> list[tuple[int, int]]:
    """Produce each record to its partition, with its headers, compressed as asked (one record batch
    each); returns each one's (partition, offset). Up to 16 MiB a record: the broker's limit, not
    the worker's, decides what exists on the topic."""
    return asyncio.run(_produce_records(bootstrap, topic, records))


def ready_status(port: int) -> tuple[int, dict[str, Any]]:
    """(status code, JSON body) of the worker's /ready; (0, {}) when it does not answer."""
    with contextlib.suppress(httpx.HTTPError, ValueError):
        response = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2)
        return response.status_code, response.json()
    return 0, {}


def wait_until(condition: Any, what: str, deadline_s: float = 120.0, step: float = 0.1) -> float:
    """Poll ``condition`` until true; returns the seconds it took (AssertionError at the deadline)."""
    started = time.monotonic()
    while time.monotonic() - started < deadline_s:
        if condition():
            return time.monotonic() - started
        time.sleep(step)
    raise AssertionError(f"timed out after {deadline_s} s waiting for {what}")
