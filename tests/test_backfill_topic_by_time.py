"""A topic-range backfill on a real Kafka starts each partition at the offset ``offsets_for_times``
gives for ``--start`` (issue 15): a range covering the last 1% of 200,000 messages fetches that
1% from the broker, not the whole topic (the embedded mock cannot look offsets up by time and
scans, so this runs on a real Kafka only)."""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pandas as pd
import pytest
from conftest import Registry
from kafka_fixtures import _ensure_topics

from consumers.backfill.options import BackfillOptions
from consumers.backfill.run import run_backfill

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.real_kafka]

MESSAGES = 200_000
PARTITIONS = 4
EARLY_ONLY = 4  # a fifth partition whose records all come before the range
EARLY = 1000
STEP_MS = 10
T0 = datetime(2026, 3, 1, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)


def produce_timed(bootstrap: str, topic: str) -> None:
    """Message i at T0 + i * 10 ms on partition i mod 4, then 1,000 early ones on partition 4
    (librdkafka: 200k in a few seconds)."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "acks": "all"})
    row = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
    for i in range(MESSAGES):
        while True:
            try:
                producer.produce(
                    topic,
                    orjson.dumps({"id": f"t-{i}", **row}),
                    f"t-{i}".encode(),
                    partition=i % PARTITIONS,
                    timestamp=T0_MS + i * STEP_MS,
                )
                break
            except BufferError:  # the local queue is full: let it drain
                producer.poll(0.1)
        producer.poll(0)
    for i in range(EARLY):
        producer.produce(
            topic,
            orjson.dumps({"id": f"e-{i}", **row}),
            f"e-{i}".encode(),
            partition=EARLY_ONLY,
            timestamp=T0_MS + i,
        )
    assert producer.flush(60) == 0


def test_the_last_percent_of_a_topic_is_fetched_by_time_not_scanned(
    registry: Registry, embedded_broker: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    topic = f"iris.requests.bytime.{uuid.uuid4().hex[:8]}"
    asyncio.run(_ensure_topics(embedded_broker, (topic,), PARTITIONS + 1))
    produce_timed(embedded_broker, topic)
    first_in_range = MESSAGES - MESSAGES // 100  # the last 1%: messages 198,000 to 199,999
    start = T0 + timedelta(milliseconds=first_in_range * STEP_MS)
    out = tmp_path / "last-percent.parquet"
    settings = registry.settings(kafka_bootstrap_servers=embedded_broker)
    options = BackfillOptions(from_topic=topic, start=start, output=out, progress=False)
    with caplog.at_level(logging.INFO, logger="consumers.backfill"):
        summary = run_backfill(settings, options)
    assert summary.rows == MESSAGES // 100 and summary.rejects == 0
    ids = pd.read_parquet(out)["id"]
    assert set(ids) == {f"t-{i}" for i in range(first_in_range, MESSAGES)}
    lines = [
        r.getMessage() + " " + str(r.__dict__) for r in caplog.records if r.getMessage() == "topic_range_read"
    ]
    assert lines, "the reader reports what it fetched"
    record = next(r for r in caplog.records if r.getMessage() == "topic_range_read")
    assert record.__dict__["lookup"] == "offsets_for_times"
    # fetched from the broker: exactly the range (each partition starts at its looked-up offset;
    # the partition with nothing at or after --start is not read at all)
    assert record.__dict__["fetched"] == MESSAGES // 100, lines
    assert record.__dict__["in_range"] == MESSAGES // 100
    assert re.fullmatch(r"(\d+:\d+-\d+,){4}\d+:\d+-\d+", record.__dict__["offsets"]), lines
