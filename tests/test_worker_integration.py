"""The worker as a subprocess against a real Kafka-protocol broker process, over TCP.

Each destructive test gets its own embedded broker (topics are shared state). Waits are polls
with deadlines, never sleeps-as-assertions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import numpy as np
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from kafka_fixtures import (
    REPO_ROOT,
    _ensure_topics,
    free_port,
    own_embedded_broker,
    start_embedded_broker,
    stop_broker,
)

from consumers.publish import bad_message, sample_messages, send_messages
from ml.model import load_model
from ml.predict import score
from ml.schema import FEATURES
from ml.settings import Settings, load_settings

pytestmark = [pytest.mark.slow, pytest.mark.integration]

DEADLINE_S = 120.0
IRIS_SCORER = str(Path(sys.executable).parent / "iris-scorer")
FASTSTREAM = str(Path(sys.executable).parent / "faststream")
SETTINGS = load_settings(environ={})


@pytest.fixture
def own_broker() -> Iterator[str]:
    with own_embedded_broker() as bootstrap:
        yield bootstrap


def slow_worker(delay_s: float) -> Callable[[int], list[str]]:
    """The worker with a pause after each batch's outputs are acknowledged (tests/stream_worker.py)."""
    return lambda port: [
        sys.executable,
        str(REPO_ROOT / "tests" / "stream_worker.py"),
        str(delay_s),
        str(port),
    ]


def faststream_run(port: int) -> list[str]:
    """The worker's FastStream app under FastStream's own CLI."""
    return [FASTSTREAM, "run", "consumers.worker:app", "--http-port", str(port)]


class Worker:
    """``iris-scorer worker`` (or ``command(port)``) as a subprocess; stderr goes to a temp file."""

    def __init__(self, env: dict[str, str], command: Callable[[int], list[str]] | None = None) -> None:
        self.port = free_port()
        self.log: IO[str] = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed in stop()
        argv = command(self.port) if command else [IRIS_SCORER, "worker", "--http-port", str(self.port)]
        self.proc = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
        )

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def wait_ready(self, deadline_s: float = DEADLINE_S) -> None:
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"worker exited early:\n{self.output()[-3000:]}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{self.port}/ready", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise AssertionError(f"worker not ready in {deadline_s} s:\n{self.output()[-3000:]}")

    def terminate(self, timeout: float = 10.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    try:
        yield started
    finally:
        for worker in started:
            worker.stop()


def worker_env(registry: Any, bootstrap: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IRIS_")}
    env.update(
        MLFLOW_TRACKING_URI=registry.tracking_uri,
        IRIS_KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        IRIS_REPORTS_DIR=str(tmp_path / "reports"),
        IRIS_KAFKA_SESSION_TIMEOUT_MS="6000",
        IRIS_LOG_LEVEL="INFO",
    )
    env.update(extra)
    return env


class Collector:
    """Reads topics from the beginning in a background thread, keeping every record."""

    def __init__(
        self, bootstrap: str, topics: tuple[str, ...], *, isolation_level: str = "read_uncommitted"
    ) -> None:
        self.bootstrap, self.topics, self.isolation_level = bootstrap, topics, isolation_level
        self.records: dict[str, list[Any]] = {t: [] for t in topics}
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            asyncio.run(self._consume())
        except BaseException as exc:
            self._error = exc

    async def _consume(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, isolation_level=self.isolation_level
        )
        await consumer.start()
        try:
            partitions = [
                TopicPartition(t, p) for t in self.topics for p in sorted(await _partitions(consumer, t))
            ]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            while not self._stop.is_set():
                batches = await consumer.getmany(timeout_ms=200, max_records=5000)
                for tp, records in batches.items():
                    self.records[tp.topic].extend(records)
        finally:
            await consumer.stop()

    def count(self, topic: str) -> int:
        assert self._error is None, self._error
        return len(self.records[topic])

    def wait_for(self, condition: Callable[[], bool], what: str, deadline_s: float = DEADLINE_S) -> None:
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    for _ in range(50):
        found = consumer.partitions_for_topic(topic)
        if found:
            return set(found)
        await consumer._client.force_metadata_update()
        await asyncio.sleep(0.1)
    raise AssertionError(f"topic {topic} has no partitions")


@pytest.fixture
def collectors() -> Iterator[list[Collector]]:
    started: list[Collector] = []
    try:
        yield started
    finally:
        for collector in started:
            collector.stop()


def publish(
    bootstrap: str, messages: list[tuple[bytes | None, bytes]], *, rate: float = 0.0, **kw: Any
) -> None:
    asyncio.run(send_messages(Settings(kafka_bootstrap_servers=bootstrap, **kw), messages, rate=rate))


def publish_in_background(
    bootstrap: str, messages: list[tuple[bytes | None, bytes]], rate: float, **kw: Any
) -> threading.Thread:
    """:func:`publish` on a thread (``kw``: settings such as ``requests_topic``)."""
    thread = threading.Thread(
        target=publish, args=(bootstrap, messages), kwargs={"rate": rate, **kw}, daemon=True
    )
    thread.start()
    return thread


async def _offsets(bootstrap: str, group: str, topic: str) -> tuple[dict[int, int], dict[int, int]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(await _partitions(consumer, topic))]
        ends = await consumer.end_offsets(partitions)
        committed = {tp.partition: (await consumer.committed(tp)) or 0 for tp in partitions}
        return committed, {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


def offsets(
    bootstrap: str, group: str = SETTINGS.consumer_group, topic: str = SETTINGS.requests_topic
) -> Any:
    return asyncio.run(_offsets(bootstrap, group, topic))


def prediction_ids(collector: Collector) -> list[str]:
    return [r.key.decode() for r in collector.records[SETTINGS.predictions_topic]]


def valid_ids(messages: list[tuple[bytes | None, bytes]]) -> set[str]:
    return {key.decode() for key, _ in messages if key and key.startswith(b"r-")}


#: What each kind of malformed message (consumers.publish.bad_message) must be dead-lettered as:
#: this test's own table, not the decoder's answer.
EXPECTED_DLQ_REASON = {
    "invalid_json": "invalid_json",
    "missing_field": "validation_error",
    "negative_value": "validation_error",
    "string_value": "validation_error",
    "nan_literal": "invalid_json",
    "empty_value": "empty",
    "not_an_object": "validation_error",
    "invalid_utf8": "invalid_json",
}


# --------------------------------------------------------------------------- tests


def test_worker_scores_10k_and_dead_letters_100(
    registry: Any, own_broker: str, tmp_path: Path, workers: list[Worker], collectors: list[Collector]
) -> None:
    messages = sample_messages(10_000, bad=100, seed=11)
    publish(own_broker, messages)
    collector = Collector(own_broker, (SETTINGS.predictions_topic, SETTINGS.dlq_topic))
    collectors.append(collector)
    worker = Worker(worker_env(registry, own_broker, tmp_path))
    workers.append(worker)
    worker.wait_ready()
    expected = valid_ids(messages)
    collector.wait_for(
        lambda: (
            len(set(prediction_ids(collector))) >= len(expected)
            and collector.count(SETTINGS.dlq_topic) >= 100
        ),
        "all predictions and DLQ records",
    )
    collector.wait_for(
        lambda: (lambda c, e: c == e)(*offsets(own_broker)), "committed offsets at the end offsets"
    )

    predictions = {
        r.key.decode(): orjson.loads(r.value) for r in collector.records[SETTINGS.predictions_topic]
    }
    assert set(predictions) == expected
    model = load_model(registry.client, SETTINGS.model_uri, with_reference=False)
    by_id = {key.decode(): orjson.loads(value) for key, value in messages if key and key.startswith(b"r-")}
    ids = sorted(by_id)
    matrix = np.array([[by_id[i][f] for f in FEATURES] for i in ids])
    labels = score(model, matrix).labels.tolist()
    assert [predictions[i]["label"] for i in ids] == labels
    assert {p["model_version"] for p in predictions.values()} == {model.version}

    bad = {key: value for key, value in messages if key and key.startswith(b"bad-")}
    dead = collector.records[SETTINGS.dlq_topic]
    assert len(dead) == 100
    reasons: dict[str, int] = {}
    for record in dead:
        assert record.value == bad[record.key], "DLQ bytes must be the original bytes"
        headers = dict(record.headers)
        n = int(record.key.decode().rsplit("-", 1)[1])
        kinds = [k for k in EXPECTED_DLQ_REASON if bad_message(k, n, seed=11)[1] == record.value]
        assert len(kinds) == 1, (record.key, record.value)
        assert headers["error"].decode() == EXPECTED_DLQ_REASON[kinds[0]], kinds[0]
        reasons[kinds[0]] = reasons.get(kinds[0], 0) + 1
        assert headers["source_topic"] == SETTINGS.requests_topic.encode()
        assert {"error_detail", "source_partition", "source_offset"} <= set(headers)
    assert set(reasons) == set(EXPECTED_DLQ_REASON), "every kind of bad message was sent and dead-lettered"

    stamps = [r.timestamp for t in collector.records.values() for r in t]
    elapsed_s = max((max(stamps) - min(stamps)) / 1000, 0.001)
    print(
        f"\nworker throughput: {len(stamps)} records in {elapsed_s:.2f} s = {len(stamps) / elapsed_s:.0f} msg/s"
    )
    assert worker.terminate() == 0


def test_kill_9_mid_stream_then_restart_loses_nothing(
    registry: Any, own_broker: str, tmp_path: Path, workers: list[Worker], collectors: list[Collector]
) -> None:
    messages = sample_messages(6000, seed=12)
    collector = Collector(own_broker, (SETTINGS.predictions_topic,))
    collectors.append(collector)
    env = worker_env(registry, own_broker, tmp_path)
    first = Worker(env)
    workers.append(first)
    first.wait_ready()
    sender = publish_in_background(own_broker, messages, rate=2000)
    collector.wait_for(lambda: collector.count(SETTINGS.predictions_topic) >= 500, "first predictions")
    first.proc.kill()
    first.proc.wait(10)
    at_kill = len(set(prediction_ids(collector)))
    sender.join(DEADLINE_S)
    second = Worker(env)
    workers.append(second)
    second.wait_ready()
    expected = valid_ids(messages)
    collector.wait_for(lambda: set(prediction_ids(collector)) >= expected, "every id predicted after restart")
    ids = prediction_ids(collector)
    duplicates = len(ids) - len(set(ids))
    print(f"\nkill -9: {len(ids)} predictions for {len(expected)} ids, {duplicates} duplicates")
    assert at_kill < len(expected), "the first worker finished before it was killed: not mid-stream"
    assert set(ids) == expected
    assert second.terminate() == 0


def test_sigterm_during_a_run_commits_and_exits_0(
    registry: Any, own_broker: str, tmp_path: Path, workers: list[Worker], collectors: list[Collector]
) -> None:
    messages = sample_messages(6000, seed=13)
    collector = Collector(own_broker, (SETTINGS.predictions_topic, SETTINGS.requests_topic))
    collectors.append(collector)
    env = worker_env(registry, own_broker, tmp_path)
    worker = Worker(env)
    workers.append(worker)
    worker.wait_ready()
    sender = publish_in_background(own_broker, messages, rate=2000)
    collector.wait_for(lambda: collector.count(SETTINGS.predictions_topic) >= 500, "first predictions")
    started = time.monotonic()
    assert worker.terminate(timeout=15) == 0
    assert time.monotonic() - started < 10.0 + 1.0, "stop took longer than 10 s"
    assert "worker_stopped" in worker.output()
    committed, _ = offsets(own_broker)
    assert sum(committed.values()) > 0
    # Nothing lost: every request below a committed offset has its prediction.
    collector.wait_for(
        lambda: collector.count(SETTINGS.requests_topic) >= sum(committed.values()), "requests"
    )
    predicted = set(prediction_ids(collector))
    behind = [r for r in collector.records[SETTINGS.requests_topic] if r.offset < committed[r.partition]]
    assert behind and all(r.key.decode() in predicted for r in behind)
    # And a restarted worker finishes the rest.
    sender.join(DEADLINE_S)
    again = Worker(env)
    workers.append(again)
    again.wait_ready()
    collector.wait_for(
        lambda: set(prediction_ids(collector)) >= valid_ids(messages), "the rest after restart"
    )
    assert again.terminate() == 0


def test_broker_down_at_start_is_retried_until_it_comes(
    registry: Any, tmp_path: Path, workers: list[Worker], collectors: list[Collector]
) -> None:
    port = free_port()
    worker = Worker(worker_env(registry, f"127.0.0.1:{port}", tmp_path))
    workers.append(worker)
    deadline = time.monotonic() + DEADLINE_S
    while worker.output().count("kafka_connect_failed") < 2:
        assert time.monotonic() < deadline and worker.proc.poll() is None, worker.output()[-3000:]
        time.sleep(0.2)
    response = httpx.get(f"http://127.0.0.1:{worker.port}/ready", timeout=5)
    assert response.status_code == 503 and "broker not connected" in response.json()["detail"]
    proc, bootstrap = start_embedded_broker(port=port)
    try:
        worker.wait_ready()
        publish(bootstrap, sample_messages(10, seed=14))
        collector = Collector(bootstrap, (SETTINGS.predictions_topic,))
        collectors.append(collector)
        collector.wait_for(lambda: collector.count(SETTINGS.predictions_topic) >= 10, "predictions")
        assert worker.terminate() == 0
    finally:
        stop_broker(proc)


def test_faststream_run_scores_the_contract_example_and_keeps_odd_headers(
    registry: Any, own_broker: str, tmp_path: Path, workers: list[Worker], collectors: list[Collector]
) -> None:
    """`faststream run consumers.worker:app` against a broker process: the AsyncAPI example is
    scored; a header value that is not UTF-8 fails nothing and travels unchanged."""
    example = json.loads((REPO_ROOT / "docs" / "asyncapi.json").read_text())["components"]["schemas"]
    request = example["iris.requests:score:Message:Payload"]
    (body,) = request["examples"]
    odd = [("trace", b"\xff\xfe"), ("source", b"lab-3")]
    valid = {**body, "id": "r-odd"}
    produce_with_headers(
        own_broker,
        [
            (body["id"].encode(), orjson.dumps(body), []),
            (b"r-odd", orjson.dumps(valid), odd),
            (b"bad-odd", b"{not json", odd),
        ],
    )
    collector = Collector(own_broker, (SETTINGS.predictions_topic, SETTINGS.dlq_topic))
    collectors.append(collector)
    worker = Worker(worker_env(registry, own_broker, tmp_path), faststream_run)
    workers.append(worker)
    worker.wait_ready()
    collector.wait_for(
        lambda: collector.count(SETTINGS.predictions_topic) >= 2 and collector.count(SETTINGS.dlq_topic) >= 1,
        "two predictions and one dead letter",
    )
    predictions = {r.key: r for r in collector.records[SETTINGS.predictions_topic]}
    assert set(predictions) == {body["id"].encode(), b"r-odd"}, "the contract's example is scored"
    assert list(predictions[b"r-odd"].headers) == odd
    (dead,) = collector.records[SETTINGS.dlq_topic]
    assert dead.value == b"{not json" and list(dead.headers)[:2] == odd
    assert dict(dead.headers)["error"] == b"invalid_json"
    collector.wait_for(lambda: (lambda c, e: c == e)(*offsets(own_broker)), "committed to the end")
    assert worker.terminate() == 0
    assert "worker_stopped" in worker.output()


async def _produce_with_headers(
    bootstrap: str, records: list[tuple[bytes, bytes, list[tuple[str, bytes]]]]
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value, headers in records:
            await producer.send_and_wait(SETTINGS.requests_topic, value, key=key, headers=headers)
    finally:
        await producer.stop()


def produce_with_headers(bootstrap: str, records: list[tuple[bytes, bytes, list[tuple[str, bytes]]]]) -> None:
    asyncio.run(_produce_with_headers(bootstrap, records))


def private_topics(bootstrap: str, partitions: int) -> tuple[str, dict[str, str], dict[str, str]]:
    """The four iris topics under a fresh suffix, created with ``partitions`` each: (suffix,
    topics by role, the worker's IRIS_*_TOPIC settings for them)."""
    suffix = uuid.uuid4().hex[:8]
    topics = {name: f"{name}.{suffix}" for name in ("requests", "predictions", "dlq", "drift")}
    asyncio.run(_ensure_topics(bootstrap, tuple(topics.values()), partitions))
    return suffix, topics, {f"IRIS_{name.upper()}_TOPIC": topic for name, topic in topics.items()}


def publish_and_await_scores(
    bootstrap: str,
    topics: dict[str, str],
    messages: list[tuple[bytes | None, bytes]],
    collectors: list[Collector],
) -> None:
    """Publish ``messages`` to the private requests topic; wait until every valid one is predicted."""
    publish(bootstrap, messages, requests_topic=topics["requests"])
    collector = Collector(bootstrap, (topics["predictions"],))
    collectors.append(collector)
    expected = valid_ids(messages)
    collector.wait_for(
        lambda: {r.key.decode() for r in collector.records[topics["predictions"]]} >= expected,
        "all predictions",
    )


def predictions_counted(worker: Worker) -> float:
    """The worker's own ``iris_predictions_total`` (all labels summed), from its /metrics."""
    text = httpx.get(f"http://127.0.0.1:{worker.port}/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("iris_predictions_total{") or line.startswith("iris_predictions_total ")
    )


# Two members in one group: the embedded mock answers a late follower's SyncGroup with error 42
# (rdkafka_mock_cgrp.c), so this runs on a real Kafka only (skipped with that reason on the mock).
@pytest.mark.real_kafka
def test_two_workers_in_one_group_share_the_work(
    registry: Any,
    embedded_broker: str,
    tmp_path: Path,
    workers: list[Worker],
    collectors: list[Collector],
) -> None:
    suffix, topics, extra = private_topics(embedded_broker, 4)
    extra["IRIS_CONSUMER_GROUP"] = f"iris-two-{suffix}"
    env = worker_env(registry, embedded_broker, tmp_path, **extra)
    for _ in range(2):
        workers.append(Worker(env))
    for worker in workers:
        worker.wait_ready()
    messages = sample_messages(4000, seed=15)
    publish_and_await_scores(embedded_broker, topics, messages, collectors)
    expected = valid_ids(messages)
    counted = [predictions_counted(worker) for worker in workers]
    assert all(n > 0 for n in counted), f"both members scored part of the work: {counted}"
    assert sum(counted) >= len(expected)
    assert all(worker.terminate() == 0 for worker in workers)
