"""Bulk produce (consumers.produce): Kafka's partitioning, batching and acknowledgement, for real.

The partition of every keyed record must be the one Kafka's default partitioner gives (what
``AIOKafkaProducer.send`` and the Java client choose), or consumers that rely on key locality
(compacted topics, joins) would break. Checked against aiokafka's own murmur2 with Hypothesis and
against records produced with ``send`` on a real broker.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.partitioner import DefaultPartitioner, murmur2
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka_fixtures import PARTITIONS, own_embedded_broker

from consumers.produce import Outgoing, murmur2_many, partitions_for, produce_all


@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=1, max_value=64).flatmap(
        lambda n: st.lists(st.binary(min_size=n, max_size=n), min_size=1, max_size=40)
    )
)
def test_vectorised_murmur2_equals_kafkas(keys: list[bytes]) -> None:
    assert murmur2_many(keys, len(keys[0])).tolist() == [murmur2(k) for k in keys]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.binary(max_size=24)), max_size=80), st.integers(1, 64))
def test_partitions_are_the_default_partitioners(keys: list[bytes | None], count: int) -> None:
    partitions = list(range(count))
    chosen = partitions_for(keys, count)
    for key, partition in zip(keys, chosen, strict=True):
        if key is None:
            assert 0 <= partition < count
        else:
            assert partition == DefaultPartitioner()(key, partitions, partitions)


@pytest.fixture(scope="module")
def broker() -> Iterator[str]:
    with own_embedded_broker() as bootstrap:
        yield bootstrap


async def _read_all(
    bootstrap: str, topic: str
) -> dict[int, list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        partitions = list(range(PARTITIONS))
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: dict[int, list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]]] = {
            p: [] for p in partitions
        }
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                out[tp.partition].extend((r.key, r.value, list(r.headers)) for r in records)
        return out
    finally:
        await consumer.stop()


def test_records_land_where_send_puts_them_in_order_and_intact(broker: str) -> None:
    keys = [f"r-{i}".encode() for i in range(1500)] + [os.urandom(n) for n in range(1, 200)]
    records = [Outgoing("iris.predictions", k, b"v-" + k + b"x" * 200) for k in keys]
    records += [Outgoing("iris.predictions", b"dlq-key", None, [("error", b"empty"), ("tombstone", b"1")])]
    records += [Outgoing("iris.predictions", None, b"keyless", [("error", b"invalid_json")])]

    async def main() -> None:
        # A small max_batch_size: each partition's records need several record batches.
        producer = AIOKafkaProducer(bootstrap_servers=broker, linger_ms=0, max_batch_size=16 * 1024)
        await producer.start()
        try:
            await produce_all(producer, records, max_request_size=1_048_576)
            futures = [await producer.send("iris.drift", b"same", key=k) for k in keys]
            await asyncio.gather(*futures)
        finally:
            await producer.stop()

    asyncio.run(main())
    got = asyncio.run(_read_all(broker, "iris.predictions"))
    by_send = asyncio.run(_read_all(broker, "iris.drift"))
    assert sum(len(v) for v in got.values()) == len(records)
    send_partition = {key: p for p, rows in by_send.items() for key, _, _ in rows}
    for partition, rows in got.items():
        keyed = [key for key, _, _ in rows if key is not None and key != b"dlq-key"]
        assert all(send_partition[k] == partition for k in keyed)
        # Order within a partition is the order of the input.
        assert keyed == [r.key for r in records if r.key in set(keyed)]
    flat = {key: (value, headers) for rows in got.values() for key, value, headers in rows}
    assert flat[b"r-7"][0] == b"v-r-7" + b"x" * 200
    assert flat[b"dlq-key"] == (None, [("error", b"empty"), ("tombstone", b"1")])
    assert flat[None] == (b"keyless", [("error", b"invalid_json")])


def test_an_oversized_record_fails_before_anything_is_sent(broker: str) -> None:
    async def main() -> tuple[int, int]:
        producer = AIOKafkaProducer(bootstrap_servers=broker, linger_ms=0)
        await producer.start()
        consumer = AIOKafkaConsumer(bootstrap_servers=broker, enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [
                TopicPartition("iris.requests.dlq", p)
                for p in sorted(await producer.partitions_for("iris.requests.dlq"))
            ]
            before = sum((await consumer.end_offsets(tps)).values())
            small = [Outgoing("iris.requests.dlq", f"k{i}".encode(), b"ok") for i in range(50)]
            huge = Outgoing("iris.requests.dlq", b"big", b"x" * 300_000)
            with pytest.raises(MessageSizeTooLargeError, match="max_request_size of 200000"):
                await produce_all(producer, [*small, huge], max_request_size=200_000)
            await asyncio.sleep(0.3)
            after = sum((await consumer.end_offsets(tps)).values())
            return before, after
        finally:
            await consumer.stop()
            await producer.stop()

    before, after = asyncio.run(main())
    assert after == before
