"""Backfill over a topic time range (``--from-topic --start --end``) and publishing (``--to-topic``).

These tests use a broker of their own (the embedded one, started for this module), so messages
with hand-picked timestamps do not mix with other tests' traffic. The embedded broker cannot
answer ``offsets_for_times``, so this also covers the scan-and-filter fallback.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from conftest import Registry
from kafka_fixtures import own_embedded_broker

from consumers.backfill.options import BackfillOptions
from consumers.backfill.run import run_backfill
from consumers.backfill.topics import TopicError
from ml.errors import BadInputError

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, tzinfo=UTC)
START, END = T0 + timedelta(hours=1), T0 + timedelta(hours=2)


@pytest.fixture(scope="module")
def broker() -> Iterator[str]:
    with own_embedded_broker() as bootstrap:
        yield bootstrap


def request(i: int) -> bytes:
    return orjson.dumps(
        {
            "id": f"m-{i}",
            "sepal_length": 5.0 + i % 3,
            "sepal_width": 3.0,
            "petal_length": 1.5 + i % 5,
            "petal_width": 0.3,
        }
    )


# (id number, minutes after T0, value): before, inside (with one invalid) and after the range.
MESSAGES: list[tuple[int, int, bytes | None]] = (
    [(i, 10 + i, request(i)) for i in range(0, 20)]  # 00:10-00:29: before --start
    + [(i, 60 + (i - 20), request(i)) for i in range(20, 60)]  # 01:00-01:39: inside
    + [(60, 100, b"{not json")]  # 01:40: inside, invalid
    + [(i, 121 + (i - 61), request(i)) for i in range(61, 80)]  # 02:01-: after --end
)
INSIDE = {f"m-{i}" for i in range(20, 60)}


async def _produce(bootstrap: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for number, minutes, value in MESSAGES:
            stamp = int((T0 + timedelta(minutes=minutes)).timestamp() * 1000)
            await producer.send_and_wait(
                "iris.requests", value, key=f"m-{number}".encode(), timestamp_ms=stamp
            )
    finally:
        await producer.stop()


@pytest.fixture(scope="module")
def produced(broker: str) -> str:
    asyncio.run(_produce(broker))
    return broker


def options(**values: Any) -> BackfillOptions:
    base: dict[str, Any] = {"from_topic": "iris.requests", "start": START, "end": END, "progress": False}
    base.update(values)
    return BackfillOptions(**base)


def test_a_time_range_is_rescored_and_bad_messages_are_rejected(
    registry: Registry, produced: str, tmp_path: Path
) -> None:
    settings = registry.settings(kafka_bootstrap_servers=produced)
    out = tmp_path / "range.parquet"
    summary = run_backfill(settings, options(output=out, chunk_rows=16))
    assert (summary.rows, summary.scored, summary.rejects) == (41, 40, 1)
    result = pd.read_parquet(out)
    assert set(result["id"]) == INSIDE
    rejects = [orjson.loads(x) for x in (tmp_path / "range.rejects.jsonl").read_bytes().splitlines()]
    assert len(rejects) == 1 and rejects[0]["errors"][0]["msg"].startswith("invalid_json")

    again = tmp_path / "again.parquet"
    run_backfill(settings, options(output=again, chunk_rows=7))
    pd.testing.assert_frame_equal(  # same order on every run, whatever the chunk size
        pd.read_parquet(again).drop(columns="scored_at"), result.drop(columns="scored_at")
    )


def test_open_ended_range_takes_everything_from_start(
    registry: Registry, produced: str, tmp_path: Path
) -> None:
    settings = registry.settings(kafka_bootstrap_servers=produced)
    summary = run_backfill(settings, options(output=tmp_path / "tail.csv", end=None))
    assert (summary.scored, summary.rejects) == (59, 1)


def test_an_unknown_topic_is_bad_input_named_in_one_sentence(
    registry: Registry, produced: str, tmp_path: Path
) -> None:
    settings = registry.settings(kafka_bootstrap_servers=produced)
    with pytest.raises(BadInputError) as raised:
        run_backfill(settings, options(from_topic="iris.nope", output=tmp_path / "none.csv"))
    assert str(raised.value) == f"topic iris.nope does not exist on {produced}."


def test_an_unreachable_broker_is_a_topic_error_naming_the_setting(
    registry: Registry, tmp_path: Path
) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        nobody = f"127.0.0.1:{sock.getsockname()[1]}"
    settings = registry.settings(kafka_bootstrap_servers=nobody)
    with pytest.raises(TopicError) as raised:
        run_backfill(settings, options(output=tmp_path / "none.csv"))
    assert str(raised.value).startswith(
        f"cannot reach the Kafka broker at {nobody} (IRIS_KAFKA_BOOTSTRAP_SERVERS): "
    )


async def _consume_all(bootstrap: str, topic: str) -> list[tuple[bytes | None, bytes]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    partitions = [
        TopicPartition(topic, p) for p in sorted(part["partition"] for part in described["partitions"])
    ]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.seek_to_beginning(*partitions)
        out: list[tuple[bytes | None, bytes]] = []

        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in partitions])

        while await behind():
            for messages in (await consumer.getmany(timeout_ms=1000)).values():
                out.extend((m.key, m.value) for m in messages)
        return out
    finally:
        await consumer.stop()


def test_to_topic_publishes_predictions_in_the_stream_shape(
    registry: Registry, produced: str, tmp_path: Path
) -> None:
    settings = registry.settings(kafka_bootstrap_servers=produced)
    summary = run_backfill(settings, options(to_topic="iris.predictions", output=tmp_path / "pub.jsonl"))
    assert summary.scored == 40 and summary.output is None
    assert not (tmp_path / "pub.jsonl").exists()
    published = asyncio.run(_consume_all(produced, "iris.predictions"))
    assert len(published) == 40
    for key, value in published:
        message = orjson.loads(value)
        assert key == message["id"].encode()
        assert message["source"] == "backfill"
        assert message["model_version"] == registry.champion_version
        assert set(message) == {
            "id",
            "label",
            "probabilities",
            "model_name",
            "model_version",
            "model_alias",
            "source",
            "scored_at",
        }
        assert message["model_alias"] == "champion"
        assert abs(sum(message["probabilities"].values()) - 1) < 1e-5
    assert {orjson.loads(v)["id"] for _, v in published} == INSIDE
