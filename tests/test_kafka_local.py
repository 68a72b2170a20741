"""The local real Kafka (iris_scorer.kafka_local): cached jars, a 1-node KRaft cluster, the CLI."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kafka_fixtures import REPO_ROOT, free_port, read_first_line

from consumers.broker import DEFAULT_TOPICS
from iris_scorer import kafka_local
from iris_scorer.kafka_jars import STAMP, cached_lib
from iris_scorer.kafka_local import KafkaCluster, KafkaLocalError, ensure_jars, local_kafka_unavailable
from iris_scorer.kafka_nodes import new_cluster_id

UNAVAILABLE = local_kafka_unavailable()
needs_local_kafka = pytest.mark.skipif(UNAVAILABLE is not None, reason=f"no local Kafka: {UNAVAILABLE}")
READY = re.compile(r"kafka ready bootstrap=127\.0\.0\.1:(?P<port>\d+) nodes=1 partitions=2 ")


def java_pids_under(path: Path) -> list[int]:
    """Live java processes whose command line mentions ``path`` (a cluster's temp dir)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"java") and any(str(path).encode() in a for a in argv):
            pids.append(int(proc.name))
    return pids


# --------------------------------------------------------------------------- jars and Java


def test_a_cold_cache_without_maven_fails_with_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(KafkaLocalError, match=r"Maven \(no-such-mvn\) is not on PATH .* is not cached"):
        ensure_jars(cache_root=tmp_path, mvn="no-such-mvn")


def test_an_old_java_is_refused_with_its_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    java = tmp_path / "bin" / "java"
    java.parent.mkdir()
    java.write_text("#!/bin/sh\necho 'openjdk version \"11.0.22\" 2024-01-16' >&2\n")
    java.chmod(0o755)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    with pytest.raises(KafkaLocalError, match=r"Java 17\+ is needed .* is Java 11"):
        kafka_local.java_executable()


@needs_local_kafka
def test_a_second_fetch_reads_the_stamp_and_runs_no_maven() -> None:
    lib = ensure_jars()  # fetches on a cold cache, else already a cache hit
    stamp = (lib.parent / STAMP).read_text().split()
    assert "kafka_2.13-" + kafka_local.kafka_version() + ".jar" in stamp
    assert all((lib / jar).is_file() for jar in stamp[1:])
    # A Maven that does not exist would fail any attempt to run it: the stamp alone answers.
    assert ensure_jars(mvn="no-such-mvn") == lib == cached_lib()


# --------------------------------------------------------------------------- a 1-node cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[KafkaCluster]:
    with KafkaCluster(nodes=1, partitions=3) as started:
        yield started


@needs_local_kafka
@pytest.mark.integration
def test_a_cluster_id_never_starts_with_a_dash() -> None:
    """kafka-storage reads an id like "-xJ3..." as an option ("expected one argument"): 1 run in 64."""
    dashed = uuid.UUID(bytes=b"\xf8" + bytes(15))
    plain = uuid.UUID(bytes=bytes(16))
    ids = iter([dashed, plain])
    assert new_cluster_id(lambda: next(ids)) == "AAAAAAAAAAAAAAAAAAAAAA"
    assert all(not new_cluster_id().startswith("-") for _ in range(500))


def test_the_four_topics_exist_with_the_requested_partitions(cluster: KafkaCluster) -> None:
    async def partitions() -> dict[str, int]:
        producer = AIOKafkaProducer(bootstrap_servers=cluster.bootstrap)
        await producer.start()
        try:
            return {t: len(await producer.partitions_for(t)) for t in cluster.topics}
        finally:
            await producer.stop()

    assert asyncio.run(partitions()) == dict.fromkeys(DEFAULT_TOPICS, 3)
    assert cluster.leader_of("iris.requests", 0) == 1


@needs_local_kafka
@pytest.mark.integration
def test_produce_and_consume_round_trip(cluster: KafkaCluster) -> None:
    topic, run = "iris.requests", uuid.uuid4().hex

    async def round_trip() -> list[bytes]:
        producer = AIOKafkaProducer(bootstrap_servers=cluster.bootstrap, acks="all", enable_idempotence=True)
        await producer.start()
        try:
            for n in range(20):
                await producer.send_and_wait(topic, f"{run}-{n}".encode(), key=str(n).encode())
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=cluster.bootstrap, group_id=f"g-{run}", auto_offset_reset="earliest"
        )
        await consumer.start()
        seen: list[bytes] = []
        try:
            async with asyncio.timeout(60):
                while len(seen) < 20:
                    for records in (await consumer.getmany(timeout_ms=500)).values():
                        seen += [r.value for r in records if r.value and r.value.startswith(run.encode())]
        finally:
            await consumer.stop()
        return seen

    assert sorted(asyncio.run(round_trip())) == sorted(f"{run}-{n}".encode() for n in range(20))


@needs_local_kafka
@pytest.mark.integration
def test_stop_leaves_no_java_process_and_no_log_dir() -> None:
    cluster = KafkaCluster(nodes=1, topics=())
    cluster.start()
    home, node = cluster.home, cluster.nodes[1]
    assert home is not None and java_pids_under(home)
    cluster.stop()
    assert node.proc is not None and node.proc.returncode is not None
    assert java_pids_under(home) == [] and not home.exists()


@needs_local_kafka
@pytest.mark.integration
def test_a_broker_starts_again_on_the_port_a_killed_one_served() -> None:
    """A broker killed under its clients leaves their connections in TIME_WAIT on its port;
    a broker restarted there (a test's broker outage) must still start."""
    first = KafkaCluster(nodes=1, topics=("iris.requests",), partitions=1).start()
    port = first.nodes[1].port

    async def produce(bootstrap: str, kill: bool) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait("iris.requests", b"x")
            if kill:  # the broker side closes first: the TIME_WAIT sockets are on its port
                first.kill(1)
        finally:
            await producer.stop()

    try:
        asyncio.run(produce(first.bootstrap, kill=True))
    finally:
        first.stop()
    with KafkaCluster(nodes=1, port=port, topics=("iris.requests",), partitions=1) as second:
        asyncio.run(produce(second.bootstrap, kill=False))
        assert second.bootstrap == f"127.0.0.1:{port}"


# --------------------------------------------------------------------------- the CLI (make kafka)


def run_cli(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "iris_scorer.kafka_local", *args],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@needs_local_kafka
@pytest.mark.integration
def test_cli_prints_the_bootstrap_line_and_stops_on_sigint() -> None:
    port = free_port()
    proc = run_cli({"KAFKA_PORT": str(port), "KAFKA_NODES": "1"}, "--partitions", "2")
    try:
        line = read_first_line(proc, 120)
        assert line is not None and (found := READY.match(line)), line
        assert int(found["port"]) == port and "topics=iris.requests,iris.predictions" in line
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "kafka stopped" in out
    with socket.socket() as sock:  # the broker is gone: its port is free again
        sock.bind(("127.0.0.1", port))


def test_cli_names_a_bad_variable_and_exits_2() -> None:
    proc = run_cli({"KAFKA_NODES": "three"})
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert err.strip() == "error: KAFKA_NODES must be a whole number from 1 to 9, not 'three'."


@needs_local_kafka
def test_cli_on_a_taken_port_exits_2_with_one_sentence() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        proc = run_cli({"KAFKA_PORT": str(busy.getsockname()[1])})
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "is taken" in err and "KAFKA_PORT" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
