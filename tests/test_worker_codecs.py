# ruff: noqa: F811 - the fixtures are imported from test_worker_integration
"""Compressed input (issue 14, point 1): record batches compressed with every codec Kafka has are
scored, whichever client compressed them (aiokafka, librdkafka through confluent-kafka, kcat).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from stream_helpers import wait_until
from test_worker_integration import (
    SETTINGS,
    Collector,
    Worker,
    collectors,  # noqa: F401 - fixture
    own_broker,  # noqa: F401 - fixture
    prediction_ids,
    worker_env,
    workers,  # noqa: F401 - fixture
)

from consumers.publish import sample_messages

pytestmark = [pytest.mark.slow, pytest.mark.integration]

CODECS = ("gzip", "snappy", "lz4", "zstd")
PER_CLIENT = 25
Messages = list[tuple[bytes | None, bytes]]


async def _aiokafka_compressed(bootstrap: str, codec: str, messages: Messages) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, compression_type=codec, linger_ms=50)
    await producer.start()
    try:
        futures = [await producer.send(SETTINGS.requests_topic, v, key=k) for k, v in messages]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def produce_with_aiokafka(bootstrap: str, codec: str, messages: Messages) -> None:
    asyncio.run(_aiokafka_compressed(bootstrap, codec, messages))


def produce_with_librdkafka(bootstrap: str, codec: str, messages: Messages) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "compression.type": codec, "linger.ms": 50})
    for key, value in messages:
        producer.produce(SETTINGS.requests_topic, value, key)
    assert producer.flush(30) == 0


def produce_with_kcat(bootstrap: str, codec: str, messages: Messages) -> None:
    lines = b"".join((key or b"") + b"\t" + value + b"\n" for key, value in messages)
    subprocess.run(
        [
            "kcat",
            "-P",
            "-b",
            bootstrap,
            "-t",
            SETTINGS.requests_topic,
            "-z",
            codec,
            "-K",
            "\t",
            "-X",
            "linger.ms=50",
        ],
        input=lines,
        check=True,
        timeout=60,
    )


def test_batches_compressed_with_every_codec_are_scored(
    registry: Any, own_broker: str, tmp_path: Path, workers: list[Worker], collectors: list[Collector]
) -> None:
    clients = [produce_with_aiokafka, produce_with_librdkafka]
    if shutil.which("kcat"):
        clients.append(produce_with_kcat)
    elif os.environ.get("IRIS_REQUIRE_REAL_KAFKA", "").strip() in {"1", "true", "yes"}:
        pytest.fail("kcat is not installed (CI needs it: `make system-deps` installs it from Debian)")
    expected: set[str] = set()
    for n, codec in enumerate(CODECS):
        for m, client in enumerate(clients):
            rows = [orjson.loads(v) for _, v in sample_messages(PER_CLIENT, seed=1000 + 10 * n + m)]
            ids = [f"{codec}-{client.__name__}-{i}" for i in range(PER_CLIENT)]
            messages: Messages = [
                (i.encode(), orjson.dumps({**row, "id": i})) for i, row in zip(ids, rows, strict=True)
            ]
            expected |= set(ids)
            client(own_broker, codec, messages)
    assert len(expected) == len(CODECS) * len(clients) * PER_CLIENT
    collector = Collector(own_broker, (SETTINGS.predictions_topic,))
    collectors.append(collector)
    worker = Worker(worker_env(registry, own_broker, tmp_path))
    workers.append(worker)
    worker.wait_ready()
    collector.wait_for(
        lambda: set(prediction_ids(collector)) >= expected, "every compressed request scored", deadline_s=60
    )
    assert "UnsupportedCodecError" not in worker.output()
    assert worker.terminate() == 0


async def _compressed_batch(bootstrap: str, partition: int, codec: str, messages: Messages) -> int:
    """One ``codec``-compressed record batch on ``partition``; returns its first (base) offset."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", compression_type=codec, linger_ms=200
    )
    await producer.start()
    try:
        futures = [
            await producer.send(SETTINGS.requests_topic, v, key=k, partition=partition) for k, v in messages
        ]
        offsets = [int(meta.offset) for meta in await asyncio.gather(*futures)]
        return min(offsets)
    finally:
        await producer.stop()


def worker_without_codecs(port: int) -> list[str]:
    """The worker in a process that cannot decompress snappy, lz4 or zstd (tests/worker_without_codecs.py)."""
    return [
        sys.executable,
        str(Path(__file__).with_name("worker_without_codecs.py")),
        "worker",
        "--http-port",
        str(port),
    ]


def test_an_unreadable_batch_turns_ready_503_counts_and_logs_where(
    registry: Any, own_broker: str, tmp_path: Path, workers: list[Worker], collectors: list[Collector]
) -> None:
    """A batch the process cannot decode (here: zstd without the codec library) is never silent."""
    bad: Messages = [(f"bad-codec-{i}".encode(), orjson.dumps({"id": f"bad-codec-{i}"})) for i in range(3)]
    offset = asyncio.run(_compressed_batch(own_broker, 0, "zstd", bad))
    worker = Worker(worker_env(registry, own_broker, tmp_path), worker_without_codecs)
    workers.append(worker)
    port = worker.port

    def ready() -> tuple[int, str]:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            response = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2)
            return response.status_code, str(response.json().get("detail", ""))
        return 0, ""

    where = f"{SETTINGS.requests_topic}[0] at offset {offset}"
    wait_until(lambda: where in ready()[1], "/ready naming the unreadable batch", deadline_s=90)
    status, detail = ready()
    assert status == 503 and "unsupported_codec" in detail, detail
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert 'iris_consumer_errors_total{reason="unsupported_codec"}' in metrics
    assert 'iris_consumer_errors_total{reason="unsupported_codec"} 0.0' not in metrics
    log = worker.output()
    line = next(line for line in log.splitlines() if "consumer_error" in line)
    assert SETTINGS.requests_topic in line and " partition=0 " in line and f" offset={offset} " in line, line
    assert worker.terminate() == 0


def kcat_produce(bootstrap: str, codec: str, lines: bytes, headers: list[str]) -> None:
    """kcat -P: one message per line (``key<TAB>value``), each with ``headers`` (``name=value``)."""
    argv = ["kcat", "-P", "-b", bootstrap, "-t", SETTINGS.requests_topic, "-z", codec, "-K", "\t", "-p", "0"]
    for header in headers:
        argv += ["-H", header]
    subprocess.run(argv, input=lines, check=True, timeout=60)


def test_kcat_headers_and_a_large_message_come_through(
    registry: Any, own_broker: str, tmp_path: Path, workers: list[Worker], collectors: list[Collector]
) -> None:
    """A producer that is not ours: kcat's own headers reach the prediction and the dead letter
    unchanged, and a 900 kB malformed value (zstd-compressed) is dead-lettered whole."""
    if not shutil.which("kcat"):
        pytest.skip("kcat is not installed (`make system-deps` installs it from Debian)")
    row = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
    headers = ["traceparent=00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "x-correlation-id=kc-1"]
    kcat_produce(own_broker, "lz4", b"kc-ok\t" + orjson.dumps({"id": "kc-ok", **row}) + b"\n", headers)
    large = b"{not json" + b" " * 900_000
    kcat_produce(own_broker, "zstd", b"kc-large\t" + large + b"\n", headers)
    kcat_produce(own_broker, "snappy", b"kc-after\t" + orjson.dumps({"id": "kc-after", **row}) + b"\n", [])
    collector = Collector(own_broker, (SETTINGS.predictions_topic, SETTINGS.dlq_topic))
    collectors.append(collector)
    worker = Worker(worker_env(registry, own_broker, tmp_path))
    workers.append(worker)
    worker.wait_ready()
    collector.wait_for(
        lambda: (
            {"kc-ok", "kc-after"} <= set(prediction_ids(collector))
            and collector.count(SETTINGS.dlq_topic) >= 1
        ),
        "both valid kcat messages scored and the large one dead-lettered",
        deadline_s=60,
    )
    sent = [tuple(h.split("=", 1)) for h in headers]
    expected = [(name, value.encode()) for name, value in sent]
    prediction = next(r for r in collector.records[SETTINGS.predictions_topic] if r.key == b"kc-ok")
    assert list(prediction.headers)[: len(expected)] == expected
    (dead,) = collector.records[SETTINGS.dlq_topic]
    assert dead.key == b"kc-large" and dead.value == large, "the large value is copied whole"
    assert list(dead.headers)[: len(expected)] == expected
    assert dict(dead.headers)["error"] == b"invalid_json"
    assert worker.terminate() == 0
