"""The stream worker's two candidate output paths, and its partitioner, measured side by side.

    python -m bench.publish_paths [--records 20000] [--batch 500] [--repeats 3]

Against one embedded broker (4 partitions), the same prediction-sized records (key = id) are
produced in consumed-batch-sized groups, each group awaited until the broker acknowledged it:

- ``bulk``: :func:`consumers.produce.produce_all` on an ``AIOKafkaProducer`` (``linger_ms=0``);
  the worker's path;
- ``faststream``: a FastStream ``KafkaBroker`` publisher, one ``publish(..., no_confirm=True)``
  per record, then every future awaited (the cheapest way to use FastStream's per-record path
  without waiting a round trip per record).

Then the partition choice for one 500-record batch: :func:`consumers.produce.partitions_for`
(vectorised murmur2) against aiokafka's ``DefaultPartitioner`` called per key (timeit, best of 5).
Prints one JSON line per measurement and a summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import timeit
from collections.abc import Awaitable, Callable
from typing import Any

import orjson


def _records(count: int) -> list[tuple[bytes, bytes]]:
    rows = []
    for n in range(count):
        body = {
            "id": f"r-{n:07d}",
            "label": "setosa",
            "probabilities": {"setosa": 0.97, "versicolor": 0.02, "virginica": 0.01},
            "model_name": "iris-classifier",
            "model_version": "3",
            "source": "stream",
            "scored_at": "2026-12-01T10:00:00.000Z",
        }
        rows.append((str(body["id"]).encode(), orjson.dumps(body)))
    return rows


async def _timed(
    run: Callable[[list[tuple[bytes, bytes]]], Awaitable[None]], groups: list[Any]
) -> dict[str, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    for group in groups:
        await run(group)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    count = sum(len(g) for g in groups)
    return {"msgs_per_s": count / wall, "cpu_us_per_msg": cpu / count * 1e6}


async def _bulk(bootstrap: str, topic: str, groups: list[Any]) -> dict[str, float]:
    from aiokafka import AIOKafkaProducer

    from consumers.produce import Outgoing, produce_all

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await producer.start()
    try:

        async def run(group: list[tuple[bytes, bytes]]) -> None:
            await produce_all(producer, [Outgoing(topic, k, v) for k, v in group], max_request_size=1 << 20)

        await run(groups[0])  # metadata, connections
        return await _timed(run, groups)
    finally:
        await producer.stop()


async def _faststream(bootstrap: str, topic: str, groups: list[Any]) -> dict[str, float]:
    from faststream.kafka import KafkaBroker

    broker = KafkaBroker(bootstrap, acks="all", linger_ms=0, log_level=0)
    publisher = broker.publisher(topic)
    await broker.start()
    try:

        async def run(group: list[tuple[bytes, bytes]]) -> None:
            futures = [await publisher.publish(v, key=k, no_confirm=True) for k, v in group]
            await asyncio.gather(*futures)

        await run(groups[0])
        return await _timed(run, groups)
    finally:
        await broker.stop()


def partitioner_us(batch: int) -> dict[str, float]:
    """Microseconds to choose the partitions of ``batch`` keys among 4 (best of 5 timeit runs)."""
    from aiokafka.partitioner import DefaultPartitioner

    from consumers.produce import partitions_for

    keys = [f"r-{n:07d}".encode() for n in range(batch)]
    default = DefaultPartitioner()
    partitions = [0, 1, 2, 3]
    assert partitions_for(keys, 4) == [default(k, partitions, partitions) for k in keys]
    loops = 200
    ours = min(timeit.repeat(lambda: partitions_for(keys, 4), number=loops, repeat=5)) / loops
    theirs = (
        min(timeit.repeat(lambda: [default(k, partitions, partitions) for k in keys], number=loops, repeat=5))
        / loops
    )
    return {"vectorised_us": ours * 1e6, "default_partitioner_us": theirs * 1e6, "speedup": theirs / ours}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    from bench.scenarios import embedded_broker

    rows = _records(args.records)
    groups = [rows[i : i + args.batch] for i in range(0, len(rows), args.batch)]
    results: dict[str, list[dict[str, float]]] = {"bulk": [], "faststream": []}
    with embedded_broker() as bootstrap:
        for repeat in range(args.repeats):
            for name, path in (("bulk", _bulk), ("faststream", _faststream)):
                sample = asyncio.run(path(bootstrap, "iris.predictions", groups))
                results[name].append(sample)
                print(json.dumps({"path": name, "repeat": repeat, **sample}), flush=True)
    median = {n: sorted(s["msgs_per_s"] for s in v)[len(v) // 2] for n, v in results.items()}
    cpu = {n: sorted(s["cpu_us_per_msg"] for s in v)[len(v) // 2] for n, v in results.items()}
    part = partitioner_us(args.batch)
    print(json.dumps({"partitioner": part}))
    print(
        f"publish paths ({args.records} records, groups of {args.batch}, median of {args.repeats}): "
        f"bulk {median['bulk']:,.0f} msg/s ({cpu['bulk']:.1f} us CPU/msg), "
        f"faststream {median['faststream']:,.0f} msg/s ({cpu['faststream']:.1f} us CPU/msg); "
        f"faststream/bulk throughput {median['faststream'] / median['bulk']:.3f}, "
        f"CPU per record x{cpu['faststream'] / cpu['bulk']:.2f}"
    )
    print(
        f"partitioner ({args.batch} keys, 4 partitions): vectorised {part['vectorised_us']:.0f} us, "
        f"DefaultPartitioner {part['default_partitioner_us']:.0f} us, x{part['speedup']:.1f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
