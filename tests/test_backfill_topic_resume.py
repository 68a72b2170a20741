"""A resumed topic-range backfill reads exactly the records the first attempt did: each
partition's offsets are pinned in the work folder's manifest, so a partition that grows (or is
trimmed) between the attempts does not move the chunk boundaries or change the result."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pandas as pd
import pytest
from aiokafka import AIOKafkaProducer
from conftest import Registry
from kafka_fixtures import own_embedded_broker

from consumers.backfill.options import BackfillOptions
from consumers.backfill.run import run_backfill

pytestmark = pytest.mark.integration

START = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def broker() -> Iterator[str]:
    with own_embedded_broker() as bootstrap:
        yield bootstrap


def produce(bootstrap: str, ids: range) -> None:
    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            for i in ids:
                value = {
                    "id": f"m-{i}",
                    "sepal_length": 5.1,
                    "sepal_width": 3.5,
                    "petal_length": 1.4,
                    "petal_width": 0.2,
                }
                await producer.send_and_wait("iris.requests", orjson.dumps(value), key=f"m-{i}".encode())
        finally:
            await producer.stop()

    asyncio.run(send())


class Crash(RuntimeError):
    pass


def test_a_resumed_range_ignores_records_that_arrived_after_the_first_attempt(
    registry: Registry, broker: str, tmp_path: Path
) -> None:
    produce(broker, range(60))
    settings = registry.settings(kafka_bootstrap_servers=broker)
    out = tmp_path / "range.parquet"
    options = BackfillOptions(
        from_topic="iris.requests", start=START, output=out, chunk_rows=10, progress=False
    )
    chunks = 0

    def crash_after_two() -> None:
        nonlocal chunks
        chunks += 1
        if chunks == 2:
            raise Crash("killed part way")

    with pytest.raises(Crash):
        run_backfill(settings, options, after_chunk=crash_after_two)
    manifest = orjson.loads((tmp_path / "range.parquet.parts" / "manifest.json").read_bytes())
    assert sum(end - start for start, end in manifest["topic_offsets"].values()) == 60

    produce(broker, range(60, 90))  # the topic grows before the resume
    summary = run_backfill(settings, options)
    assert summary.resumed_parts >= 1
    result = pd.read_parquet(out)
    assert sorted(result["id"]) == sorted(f"m-{i}" for i in range(60))
