"""A Kafka-protocol broker for integration tests, taken from the first tier that is available:

1. ``external`` — ``IRIS_TEST_KAFKA``, an address (``host:port``) used as-is;
2. ``real`` — a local Apache Kafka (KRaft) from the Maven Central jars (``iris_scorer.kafka_local``),
   when Java 17+ and Maven or the jar cache are present;
3. ``testcontainers`` — a testcontainers Kafka, when a Docker engine answers a ping;
4. ``mock`` — the embedded broker (``python -m consumers.broker``, librdkafka's mock cluster).

The header of a pytest run names the tier and why each earlier one was not used. The same test
bodies run on each; ``@pytest.mark.real_kafka`` tests skip with that reason on the mock.
``IRIS_REQUIRE_REAL_KAFKA=1`` (set by ``.ci/run``) stops the run instead of falling back to the
mock; ``IRIS_TEST_KAFKA_MOCK=1`` skips tiers 2 and 3 (a quick local run on the mock).

Fixtures and helpers:

- ``embedded_broker`` (session): the bootstrap of ONE broker shared by the whole session.
- ``kafka_kind`` (session): ``"external"``, ``"real"``, ``"testcontainers"`` or ``"mock"``.
- ``kafka_cluster`` (session): the shared :class:`KafkaCluster` (tier ``real`` only, else skip).
- ``own_embedded_broker()`` / ``start_embedded_broker()``: a FRESH broker of its own for one
  test (empty topics, groups and offsets). On tier ``real`` that is a fresh 1-node real Kafka
  (about 2.5 s to start); on the other tiers, the mock as before. ``stop_broker`` stops either.

Use it with ``from kafka_fixtures import ...`` (pytest puts ``tests/`` on ``sys.path``); the
conftest registers it as a plugin (``pytest_plugins = ["kafka_fixtures"]``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

from consumers.broker import DEFAULT_PARTITIONS, DEFAULT_TOPICS

REPO_ROOT = Path(__file__).resolve().parents[1]
TOPICS: tuple[str, ...] = DEFAULT_TOPICS
PARTITIONS = DEFAULT_PARTITIONS
READY_TIMEOUT_S = 30.0

_stderr_files: dict[int, IO[str]] = {}  # mock broker pid -> its stderr (a file, so it never blocks)
_real_brokers: dict[int, Any] = {}  # real broker JVM pid -> its KafkaCluster


class BrokerStartError(RuntimeError):
    """A broker for the tests did not become ready."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --------------------------------------------------------------------------- tier selection


@dataclass
class KafkaSelection:
    kind: str  # "external" | "real" | "testcontainers" | "mock"
    reasons: list[str] = field(default_factory=list)  # why each earlier tier was not used

    def describe(self) -> str:
        why = "; ".join(self.reasons)
        return f"kafka for tests: {self.kind}" + (f" (not earlier tiers: {why})" if why else "")


_selection: KafkaSelection | None = None


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes"}


def select_kafka() -> KafkaSelection:
    """The tier this session uses (decided once; see the module docstring)."""
    global _selection
    if _selection is None:
        _selection = _select()
        if _selection.kind == "mock" and _flag("IRIS_REQUIRE_REAL_KAFKA"):
            _require_failed(_selection.describe())
    return _selection


def _select() -> KafkaSelection:
    if os.environ.get("IRIS_TEST_KAFKA", "").strip():
        return KafkaSelection("external")
    reasons = ["IRIS_TEST_KAFKA is not set"]
    if _flag("IRIS_TEST_KAFKA_MOCK"):
        return KafkaSelection("mock", [*reasons, "IRIS_TEST_KAFKA_MOCK=1 asks for the mock"])
    from iris_scorer.kafka_local import local_kafka_unavailable

    unavailable = local_kafka_unavailable()
    if unavailable is None:
        return KafkaSelection("real", reasons)
    reasons.append(f"local Kafka: {unavailable.rstrip('.')}")
    if docker_available():
        return KafkaSelection("testcontainers", reasons)
    return KafkaSelection("mock", [*reasons, "testcontainers: no Docker engine answers"])


def _require_failed(why: str) -> None:
    pytest.exit(f"IRIS_REQUIRE_REAL_KAFKA=1 but no real Kafka can be used: {why}", returncode=1)


def _fall_back_to_mock(why: str) -> None:
    """Tier ``real`` could not start: use the mock from now on (or stop, if a real one is required)."""
    selection = select_kafka()
    selection.reasons.append(f"local Kafka did not start: {why}")
    selection.kind = "mock"
    if _flag("IRIS_REQUIRE_REAL_KAFKA"):
        _require_failed(selection.describe())
    print(f"\n{selection.describe()}", file=sys.__stderr__, flush=True)


def pytest_sessionstart(session: pytest.Session) -> None:
    select_kafka()  # IRIS_REQUIRE_REAL_KAFKA=1 stops the run here, before any test


def pytest_report_header(config: pytest.Config) -> str:
    return select_kafka().describe()


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("real_kafka") is not None and select_kafka().kind == "mock":
        pytest.skip(f"needs a real Kafka, and the tests use the embedded mock: {select_kafka().describe()}")


# --------------------------------------------------------------------------- tier: the mock


def broker_command(port: int, partitions: int = PARTITIONS) -> list[str]:
    return [sys.executable, "-m", "consumers.broker", "--port", str(port), "--partitions", str(partitions)]


def read_first_line(proc: subprocess.Popen[str], timeout: float) -> str | None:
    """The first stdout line of ``proc``, or None if it exits or stays silent for ``timeout``."""
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout
    reader = threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True)
    reader.start()
    try:
        line = lines.get(timeout=timeout)
    except queue.Empty:
        return None
    return line or None


def start_mock_broker(
    port: int | None = None, partitions: int = PARTITIONS
) -> tuple[subprocess.Popen[str], str]:
    """Start ``python -m consumers.broker`` and wait for its ready line; returns (process, bootstrap).

    With ``port=None`` a free port is picked (and picked again if another process takes it first).
    """
    attempts = 3 if port is None else 1
    last_error = ""
    for _ in range(attempts):
        chosen = free_port() if port is None else port
        stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed by stop_broker()
        proc = subprocess.Popen(
            broker_command(chosen, partitions),
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        _stderr_files[proc.pid] = stderr
        line = read_first_line(proc, READY_TIMEOUT_S)
        if line is not None and line.startswith("broker ready "):
            bootstrap = dict(part.split("=", 1) for part in line.split()[2:])["bootstrap"]
            return proc, bootstrap
        code = stop_broker(proc, keep_stderr=True)
        stderr.seek(0)
        last_error = f"exit code {code}, stderr: {stderr.read().strip()!r}"
        stderr.close()
    raise BrokerStartError(f"the embedded broker did not become ready ({last_error})")


# --------------------------------------------------------------------------- tier: real Kafka


#: The mock has no record size limit and the poison tests produce records of up to ~3 MiB (keys
#: and headers of 2 MiB): the test brokers accept up to 16 MiB, as a topic's ``max.message.bytes``
#: can on any Kafka (the default is 1 MiB; Event Hubs' limit is 1 MB).
TEST_BROKER_PROPERTIES = {
    "message.max.bytes": str(16 * 1024 * 1024),
    "replica.fetch.max.bytes": str(16 * 1024 * 1024),
}


def start_real_broker(port: int | None = None, partitions: int = PARTITIONS) -> Any:
    """A fresh, started 1-node :class:`KafkaCluster` with the four topics (free ports unless ``port``)."""
    from iris_scorer.kafka_local import KafkaCluster, KafkaPortInUse

    attempts = 3 if port is None else 1
    for attempt in range(attempts):
        cluster = KafkaCluster(1, port, partitions=partitions, extra_properties=TEST_BROKER_PROPERTIES)
        try:
            return cluster.start()
        except KafkaPortInUse:  # a free port was taken between the pick and the JVM's bind
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def start_embedded_broker(port: int | None = None, partitions: int = PARTITIONS) -> tuple[Any, str]:
    """A fresh broker of its own: (process, bootstrap). Stop it with :func:`stop_broker`.

    On tier ``real`` the process is the real broker's JVM (``kill()`` is a broker crash); on the
    other tiers it is the mock, as before.
    """
    if select_kafka().kind == "real":
        from iris_scorer.kafka_local import KafkaLocalError, KafkaPortInUse

        try:
            cluster = start_real_broker(port, partitions)
        except KafkaPortInUse as exc:
            raise BrokerStartError(exc.message) from exc
        except KafkaLocalError as exc:
            _fall_back_to_mock(exc.message)
        else:
            proc = cluster.nodes[1].proc
            _real_brokers[proc.pid] = cluster
            return proc, cluster.bootstrap
    return start_mock_broker(port, partitions)


def stop_broker(proc: subprocess.Popen[Any], timeout: float = 10.0, *, keep_stderr: bool = False) -> int:
    """SIGTERM the broker, wait (kill after ``timeout``) and release its pipes; returns the exit code."""
    cluster = _real_brokers.pop(proc.pid, None)
    if cluster is not None:
        cluster.stop(timeout=timeout)
        return int(proc.returncode)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    if proc.stdout is not None:
        proc.stdout.close()
    stderr = _stderr_files.pop(proc.pid, None)
    if stderr is not None and not keep_stderr:
        stderr.close()
    return proc.returncode


# --------------------------------------------------------------------------- other tiers


def docker_available(timeout: float = 3.0) -> bool:
    """True when a Docker engine answers a ping (quickly False when there is none)."""
    try:
        import docker

        client = docker.from_env(timeout=int(timeout))
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


async def _ensure_topics(bootstrap: str, topics: tuple[str, ...], partitions: int) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import IncompatibleBrokerVersion, TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if not missing:
            return
        try:
            await admin.create_topics(
                [NewTopic(name=t, num_partitions=partitions, replication_factor=1) for t in missing]
            )
        except TopicAlreadyExistsError:
            pass
        except IncompatibleBrokerVersion as exc:  # e.g. IRIS_TEST_KAFKA is an embedded broker
            raise BrokerStartError(f"{bootstrap} cannot create topics {missing}: {exc}") from exc
    finally:
        await admin.close()


@contextlib.contextmanager
def _testcontainers_kafka() -> Iterator[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from testcontainers.kafka import KafkaContainer

        container = KafkaContainer()
        container.start()
    try:
        bootstrap = container.get_bootstrap_server()
        asyncio.run(_ensure_topics(bootstrap, TOPICS, PARTITIONS))
        yield bootstrap
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            container.stop()


_shared_cluster: Any = None  # tier "real": the session's KafkaCluster, for the kafka_cluster fixture


@contextlib.contextmanager
def kafka_for_tests() -> Iterator[str]:
    """Yield a bootstrap address from the selected tier (see the module docstring)."""
    global _shared_cluster
    kind = select_kafka().kind
    if kind == "external":
        address = os.environ["IRIS_TEST_KAFKA"].strip()
        asyncio.run(_ensure_topics(address, TOPICS, PARTITIONS))
        yield address
        return
    if kind == "real":
        from iris_scorer.kafka_local import KafkaLocalError

        try:
            cluster = start_real_broker()
        except KafkaLocalError as exc:
            _fall_back_to_mock(exc.message)
        else:
            _shared_cluster = cluster
            try:
                yield cluster.bootstrap
            finally:
                _shared_cluster = None
                cluster.stop()
            return
    if kind == "testcontainers":
        with _testcontainers_kafka() as bootstrap:
            yield bootstrap
        return
    with own_embedded_broker() as bootstrap:
        yield bootstrap


@contextlib.contextmanager
def own_embedded_broker() -> Iterator[str]:
    """A fresh broker for one test or module (stopped on the way out); see start_embedded_broker."""
    proc, bootstrap = start_embedded_broker()
    try:
        yield bootstrap
    finally:
        stop_broker(proc)


@pytest.fixture(scope="session")
def embedded_broker() -> Iterator[str]:
    """Bootstrap address (``host:port``) of the session's shared broker with the four iris topics."""
    with kafka_for_tests() as bootstrap:
        yield bootstrap


@pytest.fixture(scope="session")
def kafka_kind(embedded_broker: str) -> str:
    """The tier the session's broker comes from (after any fall-back): real, external, testcontainers, mock."""
    return select_kafka().kind


@pytest.fixture(scope="session")
def kafka_cluster(embedded_broker: str) -> Any:
    """The session's shared real :class:`KafkaCluster` (kill, restart, leader_of); tier ``real`` only."""
    if _shared_cluster is None:
        pytest.skip(f"needs the local real Kafka: {select_kafka().describe()}")
    return _shared_cluster


@contextlib.contextmanager
def own_real_cluster(nodes: int = 1, **options: Any) -> Iterator[Any]:
    """A started :class:`KafkaCluster` of this test's own (a 3-node cluster, extra listeners),
    stopped on the way out; needs the local real Kafka (skips with the reason on other tiers)."""
    if select_kafka().kind != "real":
        pytest.skip(f"needs the local real Kafka to start a cluster of its own: {select_kafka().describe()}")
    from iris_scorer.kafka_local import KafkaCluster

    properties = {**TEST_BROKER_PROPERTIES, **options.pop("extra_properties", {})}
    cluster = KafkaCluster(nodes, extra_properties=properties, **options)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
