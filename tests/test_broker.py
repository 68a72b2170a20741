"""The embedded Kafka-protocol broker: fixed port, CLI contract, and a real client round trip."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest
from kafka_fixtures import (
    PARTITIONS,
    REPO_ROOT,
    TOPICS,
    broker_command,
    embedded_broker,  # noqa: F401 - pytest fixture
    free_port,
    read_first_line,
    stop_broker,
)

from consumers.broker import (
    DEFAULT_TOPICS,
    EmbeddedBroker,
    PortInUseError,
    main,
    probe_kafka,
)
from ml.errors import BadInputError

READY = re.compile(
    r"broker ready bootstrap=127\.0\.0\.1:(?P<port>\d+) partitions=(?P<partitions>\d+) topics=(?P<topics>\S+)"
)
REQUESTS = "iris.requests"


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port with a live listener on it (another process' broker, as far as we can tell)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


# --------------------------------------------------------------------------- in process


def test_broker_listens_on_the_requested_fixed_port_and_releases_it() -> None:
    port = free_port()
    with EmbeddedBroker(port=port) as broker:
        assert broker.bootstrap_servers == f"127.0.0.1:{port}"
        broker.wait_ready(timeout=10)
        assert probe_kafka("127.0.0.1", port)
    assert not broker.running
    assert not probe_kafka("127.0.0.1", port, timeout=0.5)
    # The same fixed port can be taken again at once (a restarted broker).
    with EmbeddedBroker(port=port, partitions=1, topics=["t"]) as again:
        again.wait_ready(timeout=10)
        assert probe_kafka("127.0.0.1", port)


def test_port_zero_picks_a_free_port() -> None:
    with EmbeddedBroker(port=0) as broker:
        assert broker.port > 0
        assert broker.bootstrap_servers.endswith(f":{broker.port}")
        broker.wait_ready(timeout=10)


def test_port_in_use_is_bad_input_naming_the_port(busy_port: int) -> None:
    broker = EmbeddedBroker(port=busy_port)
    with pytest.raises(PortInUseError) as caught:
        broker.start()
    assert isinstance(caught.value, BadInputError)
    assert caught.value.exit_code == 2
    assert f"port {busy_port} is already in use" in caught.value.message
    assert "--port" in caught.value.message
    assert not broker.running


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"partitions": 0}, "partitions"),
        ({"port": 70000}, "port 70000"),
        ({"topics": ["ok", "bad topic"]}, "bad topic"),
        ({"topics": ["a", "a"]}, "duplicates"),
    ],
)
def test_invalid_arguments_are_bad_input(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(BadInputError, match=fragment):
        EmbeddedBroker(**kwargs)  # type: ignore[arg-type]


def test_main_rejects_bad_partitions_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--port", str(free_port()), "--partitions", "0"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "partitions" in err


def test_default_topics_are_the_four_iris_topics() -> None:
    assert DEFAULT_TOPICS == (
        "iris.requests",
        "iris.predictions",
        "iris.requests.dlq",
        "iris.drift",
        "iris.shadow",
        "iris.feedback",
        "iris.feedback.dlq",
        "iris.performance",
    )


# --------------------------------------------------------------------------- as a process


def _spawn(port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        broker_command(port),
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.integration
def test_subprocess_prints_one_ready_line_and_serves_kafka() -> None:
    port = free_port()
    proc = _spawn(port)
    try:
        line = read_first_line(proc, timeout=30)
        assert line is not None, "no ready line"
        match = READY.fullmatch(line.strip())
        assert match, line
        assert int(match["port"]) == port
        assert int(match["partitions"]) == PARTITIONS
        assert tuple(match["topics"].split(",")) == TOPICS
        assert probe_kafka("127.0.0.1", port)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert out == "", "the ready line must be the only stdout line"


@pytest.mark.integration
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_the_broker_quickly_with_exit_0(signum: signal.Signals) -> None:
    port = free_port()
    proc = _spawn(port)
    try:
        assert read_first_line(proc, timeout=30) is not None
        started = time.monotonic()
        proc.send_signal(signum)
        proc.wait(timeout=10)
        elapsed = time.monotonic() - started
    finally:
        stop_broker(proc)
        if proc.stderr is not None:
            proc.stderr.close()
    assert proc.returncode == 0
    assert elapsed < 3.0, f"took {elapsed:.1f}s to stop"
    assert not probe_kafka("127.0.0.1", port, timeout=0.5)


@pytest.mark.integration
def test_port_taken_exits_2_with_one_sentence_naming_the_port(busy_port: int) -> None:
    result = subprocess.run(
        broker_command(busy_port),
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert f"port {busy_port} is already in use" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# --------------------------------------------------------------------------- with a real client


async def _produce(bootstrap: str, run: str, count: int) -> dict[int, int]:
    """Send ``count`` keyed records with headers; returns {partition: next offset after ours}."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        pending = [
            await producer.send(
                REQUESTS,
                key=f"{run}-{i}".encode(),
                value=f'{{"id": "{run}-{i}", "n": {i}}}'.encode(),
                headers=[("run", run.encode()), ("n", str(i).encode()), ("empty", b"")],
            )
            for i in range(count)
        ]
        sent = await asyncio.gather(*pending)
    finally:
        await producer.stop()
    ends: dict[int, int] = {}
    for meta in sent:
        ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)
    return ends


def _consumer(bootstrap: str, group: str):  # type: ignore[no-untyped-def]
    from aiokafka import AIOKafkaConsumer

    # Real Kafka refuses session timeouts under 6 s; the mock waits (session - 1 s) on a rejoin.
    return AIOKafkaConsumer(
        REQUESTS,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )


async def _round_trip(bootstrap: str) -> None:
    from aiokafka import TopicPartition

    run, count = uuid.uuid4().hex[:12], 400
    ends = await _produce(bootstrap, run, count)
    assert set(ends) == set(range(PARTITIONS)), "keyed records should spread over all partitions"

    consumer = _consumer(bootstrap, f"test-round-trip-{run}")
    await consumer.start()
    try:
        got: dict[str, tuple[tuple[str, bytes], ...]] = {}
        deadline = time.monotonic() + 60
        while len(got) < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    if dict(record.headers).get("run") == run.encode():
                        assert record.key is not None
                        got[record.key.decode()] = tuple(record.headers)
        assert len(got) == count
        assert got[f"{run}-7"] == (("run", run.encode()), ("n", b"7"), ("empty", b""))
        await consumer.commit()
        partitions = [TopicPartition(REQUESTS, p) for p in range(PARTITIONS)]
        end_offsets = await consumer.end_offsets(partitions)
        for tp in partitions:
            committed = await consumer.committed(tp)
            assert committed is not None
            assert committed >= ends[tp.partition]
            assert end_offsets[tp] >= committed
    finally:
        await consumer.stop()


async def _resume(bootstrap: str) -> None:
    from aiokafka import TopicPartition
    from aiokafka.structs import OffsetAndMetadata

    run, count = uuid.uuid4().hex[:12], 200
    await _produce(bootstrap, run, count)
    group = f"test-resume-{run}"

    first = _consumer(bootstrap, group)
    await first.start()
    seen_first: set[str] = set()
    try:
        deadline = time.monotonic() + 60
        while len(seen_first) < count // 2 and time.monotonic() < deadline:
            batches = await first.getmany(timeout_ms=500, max_records=20)
            offsets: dict[TopicPartition, OffsetAndMetadata] = {}
            for tp, records in batches.items():
                for record in records:
                    if dict(record.headers).get("run") == run.encode():
                        assert record.key is not None
                        seen_first.add(record.key.decode())
                if records:
                    offsets[tp] = OffsetAndMetadata(records[-1].offset + 1, "")
            if offsets:
                await first.commit(offsets)  # commit exactly what was processed
    finally:
        await first.stop()
    assert count // 2 <= len(seen_first) < count

    second = _consumer(bootstrap, group)
    await second.start()
    seen_second: set[str] = set()
    try:
        deadline = time.monotonic() + 60
        while len(seen_first) + len(seen_second) < count and time.monotonic() < deadline:
            batches = await second.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    if dict(record.headers).get("run") == run.encode():
                        assert record.key is not None
                        seen_second.add(record.key.decode())
    finally:
        await second.stop()
    assert not seen_first & seen_second, "a restarted consumer must resume after committed offsets"
    assert len(seen_first | seen_second) == count


async def _topic_partitions(bootstrap: str) -> dict[str, int]:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        return {topic: len(await producer.partitions_for(topic)) for topic in TOPICS}
    finally:
        await producer.stop()


@pytest.mark.integration
def test_the_four_topics_exist_with_four_partitions(embedded_broker: str) -> None:  # noqa: F811
    assert asyncio.run(_topic_partitions(embedded_broker)) == dict.fromkeys(TOPICS, PARTITIONS)


@pytest.mark.integration
def test_produce_consume_round_trip_with_headers_and_commits(embedded_broker: str) -> None:  # noqa: F811
    asyncio.run(_round_trip(embedded_broker))


@pytest.mark.integration
def test_restarted_consumer_resumes_from_committed_offsets(embedded_broker: str) -> None:  # noqa: F811
    asyncio.run(_resume(embedded_broker))
