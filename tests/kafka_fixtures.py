"""A Kafka-protocol broker for integration tests, taken from (in order):

1. ``IRIS_TEST_KAFKA`` — an address (``host:port``) used as-is;
2. a testcontainers Kafka, when a Docker engine answers a ping;
3. the embedded broker (``python -m consumers.broker``) as a subprocess on a free port.

The same test bodies run on each. The four iris topics exist with 4 partitions on every tier
(created through the admin API on real Kafka; the embedded broker creates them at start).

Use it from a test module with ``from kafka_fixtures import embedded_broker`` (pytest puts
``tests/`` on ``sys.path``) or register it in a conftest with ``pytest_plugins = ["kafka_fixtures"]``.
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
from pathlib import Path
from typing import IO

import pytest

from consumers.broker import DEFAULT_PARTITIONS, DEFAULT_TOPICS

REPO_ROOT = Path(__file__).resolve().parents[1]
TOPICS: tuple[str, ...] = DEFAULT_TOPICS
PARTITIONS = DEFAULT_PARTITIONS
READY_TIMEOUT_S = 30.0

_stderr_files: dict[int, IO[str]] = {}  # broker pid -> its stderr (a file, so it never blocks)


class BrokerStartError(RuntimeError):
    """The embedded broker subprocess did not print its ready line."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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


def start_embedded_broker(
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


def stop_broker(proc: subprocess.Popen[str], timeout: float = 10.0, *, keep_stderr: bool = False) -> int:
    """SIGTERM the broker, wait (kill after ``timeout``) and release its pipes; returns the exit code."""
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


@contextlib.contextmanager
def kafka_for_tests() -> Iterator[str]:
    """Yield a bootstrap address from the first tier that is available (see module docstring)."""
    address = os.environ.get("IRIS_TEST_KAFKA", "").strip()
    if address:
        asyncio.run(_ensure_topics(address, TOPICS, PARTITIONS))
        yield address
        return
    if docker_available():
        with _testcontainers_kafka() as bootstrap:
            yield bootstrap
        return
    with own_embedded_broker() as bootstrap:
        yield bootstrap


@contextlib.contextmanager
def own_embedded_broker() -> Iterator[str]:
    """A fresh embedded broker for one test or module (stopped on the way out)."""
    proc, bootstrap = start_embedded_broker()
    try:
        yield bootstrap
    finally:
        stop_broker(proc)


@pytest.fixture(scope="session")
def embedded_broker() -> Iterator[str]:
    """Bootstrap address (``host:port``) of a Kafka-protocol broker with the four iris topics."""
    with kafka_for_tests() as bootstrap:
        yield bootstrap
