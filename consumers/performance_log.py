"""Read back ``iris.performance``: every window message, from the start of the topic to its end now
(for ``promote --from-live``; the topic's retention bounds how far back the evidence goes)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from consumers.kafka_config import build_kafka_config
from ml.errors import IrisError
from ml.settings import Settings

TIMEOUT_S = 60.0


async def _read(settings: Settings) -> list[dict[str, Any]]:
    kafka = build_kafka_config(settings)
    # earliest: with the default "latest", the reset of a newly assigned partition can land after
    # seek_to_beginning and leave the position at the end (seen on the embedded broker)
    consumer = AIOKafkaConsumer(
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        **kafka.client_options(),
    )
    await consumer.start()
    try:
        topic = settings.performance_topic
        found = consumer.partitions_for_topic(topic)
        if not found:
            await consumer._client.force_metadata_update()  # aiokafka has no public refresh
            found = consumer.partitions_for_topic(topic)
        if not found:
            raise IrisError(f"topic {topic} does not exist at {kafka.bootstrap_servers}: no live evidence.")
        partitions = [TopicPartition(topic, p) for p in sorted(found)]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.seek_to_beginning(*partitions)
        todo = {tp: end for tp, end in ends.items() if end > 0}
        messages: list[dict[str, Any]] = []
        while todo:
            batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for tp, records in batches.items():
                for record in records:
                    if record.value and record.offset < ends[tp]:
                        try:
                            messages.append(orjson.loads(record.value))
                        except orjson.JSONDecodeError:
                            continue
            for tp in list(todo):
                if await consumer.position(tp) >= todo[tp]:
                    todo.pop(tp)
        return messages
    finally:
        await consumer.stop()


def read_performance(settings: Settings) -> list[dict[str, Any]]:
    """Every ``iris.performance`` message now in the topic (a sentence naming the broker on failure)."""
    try:
        return asyncio.run(asyncio.wait_for(_read(settings), TIMEOUT_S))
    except IrisError:
        raise
    except Exception as exc:
        why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise IrisError(
            f"could not read {settings.performance_topic} at {settings.kafka_bootstrap_servers} ({why})."
        ) from None
