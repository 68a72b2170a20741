"""Embedded Kafka-protocol broker: librdkafka's mock cluster, driven through ``ctypes``.

The ``confluent-kafka`` wheel ships librdkafka, and librdkafka contains a mock cluster that speaks
the real Kafka wire protocol (so aiokafka and FastStream talk to it unchanged) while keeping all
data in memory. ``iris-scorer broker`` runs one as its own process for dev, the demo and CI.

Fixed port. The mock always binds its listener to an ephemeral port on 127.0.0.1 (librdkafka has
no setting for it; ``rd_kafka_mock_broker_set_host_port`` only changes the *advertised* address).
So we bind the fixed port ourselves *before* the cluster exists (which is also the "port already
in use" check, free of races), swap our listening socket in under the mock's own listener
descriptor with ``dup2``, and advertise our port in metadata. The mock thread keeps polling and
accepting on "its" descriptor, which now is our socket: no proxy, no extra hop. POSIX only.

Limits of the mock: see :mod:`consumers.mock_cluster` and the README.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType, TracebackType
from typing import Any

from consumers.mock_cluster import (
    HOST,
    BrokerError,
    PortInUseError,
    bind_listener,
    find_listener_fd,
    librdkafka_version,
    load_librdkafka,
    probe_kafka,
)
from ml.errors import BadInputError, IrisError

DEFAULT_PORT = 9092
DEFAULT_PARTITIONS = 4
DEFAULT_TOPICS: tuple[str, ...] = (
    "iris.requests",
    "iris.predictions",
    "iris.requests.dlq",
    "iris.drift",
    "iris.shadow",
    "iris.feedback",
    "iris.feedback.dlq",
    "iris.performance",
)
# Group leader election waits this long after the first member joins an empty group (Kafka's
# group.initial.rebalance.delay.ms; the mock's default is 3000). 0 = a lone worker starts at once.
DEFAULT_REBALANCE_DELAY_MS = 0

__all__ = [
    "BrokerError",
    "EmbeddedBroker",
    "PortInUseError",
    "librdkafka_version",
    "probe_kafka",
    "run_broker",
]

_RD_KAFKA_PRODUCER = 0
_RD_KAFKA_CONF_OK = 0


# --------------------------------------------------------------------------- the broker


class EmbeddedBroker:
    """An in-memory, single-broker Kafka-protocol cluster listening on ``127.0.0.1:port``.

    ``port=0`` picks a free port (see :attr:`port` after :meth:`start`). Use as a context manager
    or call :meth:`start` / :meth:`stop`. Data lives only as long as the broker.
    """

    def __init__(
        self,
        port: int = DEFAULT_PORT,
        partitions: int = DEFAULT_PARTITIONS,
        topics: Sequence[str] = DEFAULT_TOPICS,
        *,
        rebalance_delay_ms: int = DEFAULT_REBALANCE_DELAY_MS,
        debug: str = "",
    ) -> None:
        if isinstance(topics, str):
            topics = (topics,)
        if not 0 <= port <= 65535:
            raise BadInputError(f"port {port} is out of range: use 1-65535 (or 0 for any free port)")
        if partitions < 1:
            raise BadInputError(f"partitions must be at least 1, not {partitions}")
        names = tuple(topics)
        for name in names:
            if not name or len(name) > 249 or not all(c.isalnum() or c in "._-" for c in name):
                raise BadInputError(f"topic name {name!r} is invalid: use 1-249 of [a-zA-Z0-9._-]")
        if len(set(names)) != len(names):
            raise BadInputError(f"topics contain duplicates: {', '.join(names)}")
        if rebalance_delay_ms < 0:
            raise BadInputError(f"rebalance_delay_ms must be >= 0, not {rebalance_delay_ms}")
        self._requested_port = port
        self._port = port
        self.partitions = partitions
        self.topics: tuple[str, ...] = names
        self.rebalance_delay_ms = rebalance_delay_ms
        self.debug = debug
        self._lib: ctypes.CDLL | None = None
        self._rk: int | None = None
        self._cluster: int | None = None
        self._lock = threading.Lock()

    # -- properties

    @property
    def port(self) -> int:
        return self._port

    @property
    def bootstrap_servers(self) -> str:
        return f"{HOST}:{self._port}"

    @property
    def running(self) -> bool:
        return self._cluster is not None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"EmbeddedBroker({self.bootstrap_servers}, partitions={self.partitions}, {state})"

    # -- lifecycle

    def start(self) -> EmbeddedBroker:
        with self._lock:
            if self._cluster is not None:
                return self
            if os.name != "posix":
                raise BrokerError(
                    "the embedded broker needs Linux or macOS: use docker compose for a real Kafka"
                )
            listener = bind_listener(self._requested_port)  # PortInUseError before anything else
            try:
                self._port = listener.getsockname()[1]
                self._start_cluster(listener)
            except BaseException:
                self._destroy()
                raise
            finally:
                listener.close()  # the mock's descriptor now holds the socket; drop our copy
        return self

    def _start_cluster(self, listener: socket.socket) -> None:
        lib = self._lib = load_librdkafka()
        errstr = ctypes.create_string_buffer(512)
        conf = lib.rd_kafka_conf_new()
        settings = [("client.id", "iris-embedded-broker"), ("log_level", "7" if self.debug else "4")]
        if self.debug:
            settings.append(("debug", self.debug))  # e.g. "mock" or "mock,protocol": logs to stderr
        for key, value in settings:
            if lib.rd_kafka_conf_set(conf, key.encode(), value.encode(), errstr, 512) != _RD_KAFKA_CONF_OK:
                lib.rd_kafka_conf_destroy(conf)
                raise BrokerError(f"librdkafka rejected {key}={value}: {errstr.value.decode()}")
        rk = lib.rd_kafka_new(_RD_KAFKA_PRODUCER, conf, errstr, 512)
        if not rk:
            lib.rd_kafka_conf_destroy(conf)
            raise BrokerError(f"cannot create the librdkafka handle: {errstr.value.decode()}")
        self._rk = rk
        cluster = lib.rd_kafka_mock_cluster_new(rk, 1)
        if not cluster:
            raise BrokerError("librdkafka could not create its mock cluster (see messages above)")
        self._cluster = cluster

        # Swap our fixed-port listener in under the mock's ephemeral one (see module docstring).
        mock_port = int(lib.rd_kafka_mock_cluster_bootstraps(cluster).decode().rsplit(":", 1)[1])
        mock_fd = find_listener_fd(mock_port)
        if mock_fd is None:
            raise BrokerError(f"cannot find the mock cluster's listener on port {mock_port}")
        os.dup2(listener.fileno(), mock_fd, inheritable=False)
        lib.rd_kafka_mock_broker_set_host_port(cluster, 1, HOST.encode(), self._port)  # metadata
        if hasattr(lib, "rd_kafka_mock_set_controller_id"):
            lib.rd_kafka_mock_set_controller_id(cluster, 1)
        lib.rd_kafka_mock_group_initial_rebalance_delay_ms(cluster, self.rebalance_delay_ms)
        # A no-op command through the mock's op queue wakes its poll() loop, so it re-polls the
        # descriptor (now our socket) right away rather than after its 1 s timer tick.
        lib.rd_kafka_mock_broker_set_rtt(cluster, 1, 0)
        for topic in self.topics:
            err = lib.rd_kafka_mock_topic_create(cluster, topic.encode(), self.partitions, 1)
            if err:
                reason = lib.rd_kafka_err2str(err).decode()
                raise BrokerError(f"cannot create topic {topic!r} on the embedded broker: {reason}")

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Block until the broker answers a Kafka ApiVersions request, else raise BrokerError."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.running:
                raise BrokerError("the embedded broker is not running")
            if probe_kafka(HOST, self._port, timeout=0.5):
                return
            if time.monotonic() >= deadline:
                raise BrokerError(f"the embedded broker on port {self._port} did not answer in {timeout:g} s")
            time.sleep(0.05)

    def stop(self) -> None:
        with self._lock:
            self._destroy()
            self._port = self._requested_port

    def _destroy(self) -> None:
        lib = self._lib
        if lib is None:
            return
        if self._cluster is not None:
            lib.rd_kafka_mock_cluster_destroy(self._cluster)  # joins the mock thread, closes sockets
            self._cluster = None
        if self._rk is not None:
            lib.rd_kafka_destroy(self._rk)
            self._rk = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# --------------------------------------------------------------------------- foreground command


def ready_line(broker: EmbeddedBroker) -> str:
    return (
        f"broker ready bootstrap={broker.bootstrap_servers} partitions={broker.partitions} "
        f"topics={','.join(broker.topics)}"
    )


def run_broker(
    port: int = DEFAULT_PORT,
    partitions: int = DEFAULT_PARTITIONS,
    topics: Sequence[str] = DEFAULT_TOPICS,
    *,
    rebalance_delay_ms: int = DEFAULT_REBALANCE_DELAY_MS,
    debug: str = "",
) -> int:
    """Run the embedded broker in the foreground until SIGINT or SIGTERM.

    Prints exactly one ``broker ready ...`` line on stdout once the broker answers Kafka
    requests. Returns 0 after a clean stop, 2 for bad input (port taken, bad partitions) and 1
    when the broker cannot run; errors are one sentence on stderr.
    """
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, _on_signal)
    try:
        broker = EmbeddedBroker(
            port=port,
            partitions=partitions,
            topics=topics,
            rebalance_delay_ms=rebalance_delay_ms,
            debug=debug,
        )
        broker.start()
        try:
            broker.wait_ready()
            print(ready_line(broker), flush=True)
            while not stop.wait(0.5):
                pass
        finally:
            broker.stop()
    except IrisError as exc:
        print(f"error: {exc.message}", file=sys.stderr, flush=True)
        return exc.exit_code
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m consumers.broker",
        description="Embedded Kafka-protocol broker (librdkafka mock cluster), in the foreground.",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="TCP port on 127.0.0.1 (default 9092)")
    parser.add_argument(
        "--partitions", type=int, default=DEFAULT_PARTITIONS, help="partitions per topic (default 4)"
    )
    parser.add_argument(
        "--topics",
        default=",".join(DEFAULT_TOPICS),
        help="comma-separated topics to create (default: the four iris topics)",
    )
    parser.add_argument(
        "--rebalance-delay-ms",
        type=int,
        default=DEFAULT_REBALANCE_DELAY_MS,
        help="group.initial.rebalance.delay.ms (default 0: a lone consumer is assigned at once)",
    )
    parser.add_argument("--debug", default="", help='librdkafka debug contexts to stderr, e.g. "mock"')
    args = parser.parse_args(argv)
    topics = tuple(t.strip() for t in args.topics.split(",") if t.strip())
    return run_broker(
        args.port,
        args.partitions,
        topics,
        rebalance_delay_ms=args.rebalance_delay_ms,
        debug=args.debug,
    )


if __name__ == "__main__":
    sys.exit(main())
