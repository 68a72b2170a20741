"""Backfill over Kafka: read a historical time range of ``iris.requests``, publish to ``iris.predictions``.

The reader never joins the live consumer group: it uses ``group_id=None``, assigns every
partition itself and reads them one after another (partition order, then offset order), so the
rows come in the same order on every run. Each partition starts at the offset
``offsets_for_times`` gives for ``--start``; brokers that cannot answer it (the embedded broker
returns ``None``) are scanned from the beginning and filtered on the record timestamp. A
partition stops at its end offset (taken when the run starts) or at its first record after
``--end``. The range is ``start <= timestamp <= end`` (either side optional).

aiokafka is asynchronous and the backfill loop is not: the reader (and the topic sink,
:mod:`consumers.backfill.topic_sink`) own a private event loop and run one coroutine at a time
on it.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from consumers.backfill.readers import rechunk
from ml.errors import BadInputError, IrisError
from ml.logs import log_event
from ml.messages import decode_batch
from ml.schema import FEATURES
from ml.settings import Settings

log = logging.getLogger("consumers.backfill")

EMPTY_POLLS_BEFORE_GIVING_UP = 30
#: records read from one partition at a time: small enough that holding one table per partition
#: ahead (see :func:`interleave_by_time`) stays cheap, large enough for few fetch round trips
PARTITION_READ_ROWS = 10_000
POLL_TIMEOUT_MS = 1000


class TopicError(IrisError):
    code = "kafka_error"


def kafka_config(settings: Settings) -> Any:
    from consumers.kafka_config import build_kafka_config

    return build_kafka_config(settings)


async def construct_on_loop(cls: Any, **options: Any) -> Any:
    """aiokafka clients bind to the running loop when they are built: build them on ours."""
    return cls(**options)


def _call(loop: asyncio.AbstractEventLoop, function: Any, *args: Any) -> Any:
    """Run a synchronous aiokafka method inside our loop (some of them look the loop up)."""

    async def call() -> Any:
        return function(*args)

    return loop.run_until_complete(call())


def _ms(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


def read_topic_range(
    settings: Settings,
    topic: str,
    start: datetime | None,
    end: datetime | None,
    *,
    pinned: Mapping[int, tuple[int, int]] | None = None,
    on_pinned: Callable[[dict[int, tuple[int, int]]], None] | None = None,
) -> Iterator[pa.Table]:
    """Tables of the messages in the range, each row valid or carrying a ``_reason``, in
    event-time order across partitions (:func:`interleave_by_time`).

    The range is a ``[start, end)`` offset pair per partition: looked up once (``on_pinned``
    receives it, so a resumable run records it) or given (``pinned``: a resumed run reads exactly
    the records the first attempt did, whether the partitions grew or were trimmed since)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.errors import KafkaError

    kafka = kafka_config(settings)
    loop = asyncio.new_event_loop()
    consumer = loop.run_until_complete(
        construct_on_loop(
            AIOKafkaConsumer,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=kafka.max_partition_fetch_bytes,
            **kafka.client_options(),
        )
    )
    start_ms, end_ms = _ms(start), _ms(end)
    try:
        try:
            loop.run_until_complete(consumer.start())
            partitions = loop.run_until_complete(_partition_ids(kafka, topic))
        except (KafkaError, TimeoutError) as exc:
            from consumers.kafka_connect import explain_connect_failure

            raise TopicError(loop.run_until_complete(explain_connect_failure(kafka, exc))) from None
        if not partitions:
            raise BadInputError(f"topic {topic} does not exist on {kafka.bootstrap_servers}.")
        tps = [TopicPartition(topic, p) for p in partitions]
        _call(loop, consumer.assign, tps)
        first = loop.run_until_complete(consumer.beginning_offsets(tps))
        lookup = "pinned" if pinned is not None else "none" if start_ms is None else "scan"
        if pinned is None:
            last = loop.run_until_complete(consumer.end_offsets(tps))
            starts = dict(first)
            if start_ms is not None:
                by_time = _offsets_for_times(loop, consumer, tps, start_ms)
                starts.update(by_time)
                if by_time:  # the broker looks up by time: a partition it found nothing in for
                    # start_ms has no record at or after it, and is not read at all
                    lookup = "offsets_for_times"
                    starts.update({tp: last[tp] for tp in tps if tp not in by_time})
            if on_pinned is not None:
                on_pinned({tp.partition: (starts[tp], last[tp]) for tp in tps})
        else:
            starts, last = _pinned_offsets(topic, tps, first, pinned)
        offsets = ",".join(f"{tp.partition}:{starts[tp]}-{last[tp]}" for tp in tps)
        log_event(log, "topic_range", topic=topic, lookup=lookup, offsets=offsets)
        counts = {"fetched": 0, "in_range": 0}
        readers: dict[Any, Iterator[pa.Table]] = {}
        for tp in tps:
            if starts[tp] >= last[tp]:
                continue
            _call(loop, consumer.seek, tp, starts[tp])
            fetched = _read_partition(
                loop, consumer, tp, last[tp], start_ms, end_ms, PARTITION_READ_ROWS, settings, counts
            )
            # tables cut at fixed record counts, whatever each fetch returned: the same data
            # interleaves the same way on every run (a resumed run relies on it)
            readers[tp] = rechunk(fetched, PARTITION_READ_ROWS)
        yield from interleave_by_time(readers)
        # what the broker sent (``fetched``) against what was in the time range: by time, the two
        # are close; a scan fetches the partitions from their start
        log_event(log, "topic_range_read", topic=topic, lookup=lookup, offsets=offsets, **counts)
    finally:
        loop.run_until_complete(consumer.stop())
        loop.close()


async def _partition_ids(kafka: Any, topic: str) -> list[int]:
    """The topic's partition ids, none if it does not exist.

    A consumer without a subscription caches no topic metadata and has no public call to fetch
    it, so the admin client asks the cluster once. It asks for every topic, as the consumer's own
    refresh does: a request naming the topic could make a broker auto-create it.
    """
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**kafka.client_options())
    try:
        await admin.start()
        described = await admin.describe_topics()
    finally:
        await admin.close()
    return sorted(
        part["partition"]
        for found in described
        if found["topic"] == topic and found["error_code"] == 0
        for part in found["partitions"]
    )


def _pinned_offsets(
    topic: str, tps: Sequence[Any], first: Mapping[Any, int], pinned: Mapping[int, tuple[int, int]]
) -> tuple[dict[Any, int], dict[Any, int]]:
    """The recorded ranges, checked against the topic as it is now."""
    by_partition = {tp.partition: tp for tp in tps}
    missing = sorted(set(pinned) - set(by_partition))
    if missing:
        raise BadInputError(
            f"topic {topic} has no partition {missing[0]} any more: the interrupted backfill cannot be "
            "resumed (its work folder is removed): run the command again to start over."
        )
    starts, last = {}, {}
    for partition, (start, end) in pinned.items():
        tp = by_partition[partition]
        if start < end and first[tp] > start:
            raise BadInputError(
                f"topic {topic} partition {partition} no longer holds offsets {start}-{end - 1} "
                f"(retention trimmed it to {first[tp]}): the interrupted backfill cannot be resumed with "
                "the same result (its work folder is removed): run the command again to start over."
            )
        starts[tp], last[tp] = start, end
    for tp in tps:  # partitions added since the first attempt are not in its range
        if tp.partition not in pinned:
            starts[tp] = last[tp] = first[tp]
    return starts, last


def interleave_by_time(readers: Mapping[Any, Iterator[pa.Table]]) -> Iterator[pa.Table]:
    """Merge per-partition tables (each partition's in its own offset order) by record time: next
    comes the partition whose pending table starts earliest (ties: the smaller key). Every
    partition stays within about one table of the others in event time, so drift windows over
    event time (:mod:`ml.windows`, a few windows open) see each period's rows from all partitions
    together; read partition after partition, the later partitions' rows would all come late.
    One table per partition is held ahead."""
    heads: dict[Any, tuple[pa.Table, Iterator[pa.Table]]] = {}
    for key, tables in readers.items():
        table = next(tables, None)
        if table is not None:
            heads[key] = (table, tables)
    while heads:
        key = min(heads, key=lambda k: (_first_ms(heads[k][0]), _order(k)))
        table, tables = heads[key]
        yield table
        following = next(tables, None)
        if following is None:
            del heads[key]
        else:
            heads[key] = (following, tables)


def _first_ms(table: pa.Table) -> float:
    first = pc.min(table["_ts"]).as_py() if table.num_rows else None
    return math.inf if first is None else float(first)


def _order(key: Any) -> Any:
    return getattr(key, "partition", key)


def _offsets_for_times(
    loop: asyncio.AbstractEventLoop, consumer: Any, tps: Sequence[Any], start_ms: int
) -> dict[Any, int]:
    """Where ``start_ms`` begins in each partition; partitions with no offset for it are left out
    (the caller skips them when others have one; the embedded mock answers none, and the whole
    topic is then scanned from the beginning and filtered on the record timestamp)."""
    try:
        found = loop.run_until_complete(consumer.offsets_for_times(dict.fromkeys(tps, start_ms)))
    except Exception:  # brokers without the ListOffsets-by-time API
        return {}
    return {tp: found[tp].offset for tp in tps if found.get(tp) is not None}


def _read_partition(
    loop: asyncio.AbstractEventLoop,
    consumer: Any,
    tp: Any,
    end_offset: int,
    start_ms: int | None,
    end_ms: int | None,
    batch_rows: int,
    settings: Settings,
    counts: dict[str, int] | None = None,
) -> Iterator[pa.Table]:
    """The partition's records from its position up to ``end_offset`` (or its first record
    after ``end_ms``), those from ``start_ms`` on; ``counts`` adds up ``fetched`` (records the
    broker returned that were read) and ``in_range`` (records kept)."""
    counts = counts if counts is not None else {"fetched": 0, "in_range": 0}
    empty_polls = 0
    while True:
        batch = loop.run_until_complete(
            consumer.getmany(tp, timeout_ms=POLL_TIMEOUT_MS, max_records=batch_rows)
        )
        messages = batch.get(tp, [])
        if not messages:
            if loop.run_until_complete(consumer.position(tp)) >= end_offset:
                return
            empty_polls += 1
            if empty_polls >= EMPTY_POLLS_BEFORE_GIVING_UP:
                raise TopicError(
                    f"reading {tp.topic} partition {tp.partition} stalled before offset {end_offset}."
                )
            continue
        empty_polls = 0
        kept = []
        finished = False
        for message in messages:
            if message.offset >= end_offset or (end_ms is not None and message.timestamp > end_ms):
                finished = True
                break
            counts["fetched"] += 1
            if start_ms is None or message.timestamp >= start_ms:
                kept.append(message)
            if message.offset >= end_offset - 1:
                finished = True
                break
        counts["in_range"] += len(kept)
        if kept:
            yield messages_table(kept, settings.max_message_bytes)
        if finished:
            return


def messages_table(messages: Sequence[Any], max_bytes: int) -> pa.Table:
    """A normalised backfill table (see :mod:`consumers.backfill.readers`) from consumer records."""
    n = len(messages)
    decoded = decode_batch([m.value for m in messages], max_bytes)
    ids: list[str | None] = [None] * n
    sent: list[str | None] = [None] * n
    reasons: list[str | None] = [None] * n
    values = np.full((n, len(FEATURES)), np.nan)
    for index, record in zip(decoded.good_idx, decoded.records, strict=True):
        ids[index], sent[index] = record.id, record.sent_at
        values[index] = record.features
    for position, code, detail in decoded.bad:  # (Rejected.index is shadowed by tuple.index)
        m = messages[position]
        reasons[position] = f"{code}: {detail} (partition {m.partition}, offset {m.offset})"
    columns: dict[str, Any] = {"id": pa.array(ids, pa.string())}
    columns.update({name: pa.array(values[:, j]) for j, name in enumerate(FEATURES)})
    columns["sent_at"] = pa.array(sent, pa.string())
    columns["_reason"] = pa.array(reasons, pa.string())
    columns["_ts"] = pa.array([m.timestamp for m in messages], pa.int64())
    return pa.table(columns)
