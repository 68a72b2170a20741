"""The worker's hook for fetch and parse failures (consumers.worker_errors), in memory."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.errors import ConsumerStoppedError, CorruptRecordException, UnsupportedCodecError

from consumers.compat import failed_position
from consumers.worker_errors import ConsumerErrors, guard_fetches
from consumers.worker_http import WorkerState
from ml.metrics import Metrics


def _state() -> WorkerState:
    return WorkerState(holder=SimpleNamespace(ready=True, version="1"), metrics=Metrics())  # type: ignore[arg-type]


def _count(state: WorkerState, reason: str) -> float:
    value = state.metrics.registry.get_sample_value("iris_consumer_errors_total", {"reason": reason})
    return value or 0.0


def _unpack(tp: Any, base_offset: int) -> None:
    next_batch = SimpleNamespace(base_offset=base_offset)  # noqa: F841 - read from the frame
    raise UnsupportedCodecError("Libraries for snappy compression codec not found")


def test_a_fetch_failure_counts_names_the_position_and_clears_once_read_past() -> None:
    state = _state()
    errors = ConsumerErrors(state)
    tp = SimpleNamespace(topic="iris.requests", partition=2)
    calls = {"n": 0}

    async def get_msg(consumer: Any) -> Any:
        calls["n"] += 1
        if calls["n"] <= 2:
            _unpack(tp, 41)
        if calls["n"] == 3:
            return (SimpleNamespace(topic="iris.requests", partition=1, offset=7),)
        return (SimpleNamespace(topic="iris.requests", partition=2, offset=41),)

    subscriber = SimpleNamespace(get_msg=get_msg)
    guard_fetches(subscriber, lambda: errors)
    for _ in range(2):
        with pytest.raises(UnsupportedCodecError) as raised:
            asyncio.run(subscriber.get_msg(None))
    assert failed_position(raised.value) == ("iris.requests", 2, 41)
    assert _count(state, "unsupported_codec") == 2
    assert "unsupported_codec in iris.requests[2] at offset 41" in state.consumer_errors["iris.requests[2]"]
    asyncio.run(subscriber.get_msg(None))  # another partition moves: still stuck
    assert state.consumer_errors
    asyncio.run(subscriber.get_msg(None))  # partition 2 read at 41: cleared
    assert state.consumer_errors == {}


def test_other_failures_have_their_own_reasons_and_a_stop_is_not_one() -> None:
    state = _state()
    errors = ConsumerErrors(state)
    errors.record(CorruptRecordException("Invalid CRC"), "iris.requests", 0, 5)
    errors.record(ValueError("bad batch"), "iris.requests", 1, 9)
    assert _count(state, "corrupt_record") == 1 and _count(state, "parse_error") == 1

    async def stopped(consumer: Any) -> Any:
        raise ConsumerStoppedError

    subscriber = SimpleNamespace(get_msg=stopped)
    guard_fetches(subscriber, lambda: errors)
    with pytest.raises(ConsumerStoppedError):
        asyncio.run(subscriber.get_msg(None))
    assert _count(state, "fetch_error") == 0 and len(state.consumer_errors) == 2
