"""Baseline C: the ceiling of a Python Kafka consumer — copy bytes, no parsing, no model.

Raw aiokafka: ``getmany`` a batch, ``send`` every value unchanged to the output topic, wait for
the acks, commit. ``linger_ms=0`` like our worker's producer: when a whole batch is sent and then
awaited, lingering only adds its delay to every batch (with 5 ms this baseline ran at half speed). ``python -m bench.baselines.passthrough BOOTSTRAP IN_TOPIC OUT_TOPIC GROUP``.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


async def main(bootstrap: str, source: str, target: str, group: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        max_partition_fetch_bytes=4 * 2**20,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, max_batch_size=1 * 2**20)
    await producer.start()
    await consumer.start()
    print("ready", flush=True)
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=500)
            if not batches:
                continue
            futures = [
                await producer.send(target, record.value, key=record.key)
                for records in batches.values()
                for record in records
            ]
            await asyncio.gather(*futures)
            await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
