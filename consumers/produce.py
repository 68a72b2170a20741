"""Produce a whole batch of records at once: one record batch per partition, one future per batch.

``AIOKafkaProducer.send`` costs a coroutine, a partitioner call (pure-Python murmur2) and a future
per record, and every future's completion schedules a callback; for a scorer that produces
hundreds of records per consumed batch, that is most of its CPU time. :func:`produce_all` does
the same work in bulk with aiokafka's public batch API (``create_batch`` / ``send_batch``):

- partitions are chosen exactly as Kafka's default partitioner does (Java client, aiokafka,
  librdkafka's ``murmur2_random``): ``murmur2(key) & 0x7fffffff % partitions`` for keyed
  records, a random partition for keyless ones. The hash is computed for all keys of the same
  length in one vectorised numpy pass (:func:`murmur2_many`);
- each partition's records go into one ``BatchBuilder`` (a new one when it is full), so the
  batch is complete when it is handed over: the producer should use ``linger_ms=0``;
- the call returns when the broker has acknowledged every batch, and raises on the first failure.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.partitioner import murmur2

_SEED = 0x9747B28C
_M = np.uint32(0x5BD1E995)
#: Below this many keys of one length, the scalar murmur2 is cheaper than numpy's set-up.
_VECTOR_MIN_KEYS = 8


class Outgoing(NamedTuple):
    """One record to produce."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None = None


def murmur2_many(keys: Sequence[bytes], length: int) -> npt.NDArray[np.uint32]:
    """Kafka's murmur2 of each key; every key must be ``length`` bytes long (``length`` > 0)."""
    data = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), length)
    h = np.full(len(keys), (_SEED ^ length) & 0xFFFFFFFF, dtype=np.uint32)
    whole = length // 4
    if whole:
        blocks = np.ascontiguousarray(data[:, : whole * 4]).view("<u4")
        for i in range(whole):
            k = blocks[:, i] * _M
            k ^= k >> np.uint32(24)
            k *= _M
            h *= _M
            h ^= k
    tail = length & 3
    base = whole * 4
    if tail >= 3:
        h ^= data[:, base + 2].astype(np.uint32) << np.uint32(16)
    if tail >= 2:
        h ^= data[:, base + 1].astype(np.uint32) << np.uint32(8)
    if tail >= 1:
        h ^= data[:, base].astype(np.uint32)
        h *= _M
    h ^= h >> np.uint32(13)
    h *= _M
    h ^= h >> np.uint32(15)
    return h


def partitions_for(keys: Sequence[bytes | None], count: int) -> list[int]:
    """The default partitioner's choice for each key among partitions ``0 .. count-1``."""
    chosen = [0] * len(keys)
    by_length: dict[int, list[int]] = {}
    for index, key in enumerate(keys):
        if key is None:
            chosen[index] = random.randrange(count)
        else:
            by_length.setdefault(len(key), []).append(index)
    for length, indexes in by_length.items():
        if length == 0 or len(indexes) < _VECTOR_MIN_KEYS:
            for index in indexes:
                chosen[index] = (murmur2(keys[index]) & 0x7FFFFFFF) % count
            continue
        hashes = murmur2_many([keys[i] for i in indexes], length)  # type: ignore[misc]
        for index, partition in zip(indexes, ((hashes & 0x7FFFFFFF) % count).tolist(), strict=True):
            chosen[index] = partition
    return chosen


def record_size(record: Outgoing) -> int:
    """An upper bound of the record's size on the wire (what ``max_request_size`` limits)."""
    size = 64 + len(record.key or b"") + len(record.value or b"")
    for name, value in record.headers or ():
        size += 16 + len(name) + len(value)
    return size


async def produce_all(producer: Any, records: Sequence[Outgoing], *, max_request_size: int) -> None:
    """Produce ``records`` (any topics) and wait until the broker has acknowledged every one."""
    if not records:
        return
    for record in records:  # refuse before anything is sent: no partial batch to retry
        if record_size(record) > max_request_size:
            raise MessageSizeTooLargeError(
                f"a record for {record.topic} is about {record_size(record)} bytes, more than the "
                f"producer's max_request_size of {max_request_size}"
            )
    partition_counts: dict[str, int] = {}
    for topic in {r.topic for r in records}:
        partition_counts[topic] = len(await producer.partitions_for(topic))
    groups: dict[tuple[str, int], list[Outgoing]] = {}
    by_topic: dict[str, list[Outgoing]] = {}
    for record in records:
        by_topic.setdefault(record.topic, []).append(record)
    for topic, items in by_topic.items():
        for record, partition in zip(
            items, partitions_for([r.key for r in items], partition_counts[topic]), strict=True
        ):
            groups.setdefault((topic, partition), []).append(record)
    futures: list[asyncio.Future[Any]] = []
    for (topic, partition), items in groups.items():
        batch = producer.create_batch()
        for record in items:
            headers = record.headers or []
            if batch.append(key=record.key, value=record.value, timestamp=None, headers=headers) is None:
                futures.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                batch.append(key=record.key, value=record.value, timestamp=None, headers=headers)
        futures.append(await producer.send_batch(batch, topic, partition=partition))
    await asyncio.gather(*futures)
