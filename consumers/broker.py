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

Limits of the mock (librdkafka 2.x, ``rdkafka_mock*.c``), see the README:

- one broker; no CreateTopics/ListGroups APIs: topics are created here, at start;
- each partition keeps at most 5 MiB / 100 000 batches, older batches are dropped; there is no
  1 MB message limit (requests up to ~100 MB are accepted);
- ``ListOffsets`` by timestamp is not implemented: ``offsets_for_times`` answers "no offset", so a
  time-range backfill must scan and filter on record timestamps;
- Produce responses carry a fake LogAppendTime (1234): use the consumed record's timestamp;
- consumer groups: one member per group is reliable. With several members, a follower whose
  SyncGroup arrives after the leader's gets INVALID_REQUEST (42) (the mock answers a late
  SyncGroup in state "Up" with 42 where Kafka returns the assignment). Any rebalance after the
  first waits ``session.timeout.ms - 1 s`` of the last joiner: keep session timeouts small (3 s)
  and equal across members when testing restarts against this broker.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import importlib.util
import os
import signal
import socket
import stat
import struct
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from ml.errors import BadInputError, IrisError

HOST = "127.0.0.1"
DEFAULT_PORT = 9092
DEFAULT_PARTITIONS = 4
DEFAULT_TOPICS: tuple[str, ...] = ("iris.requests", "iris.predictions", "iris.requests.dlq", "iris.drift")
# Group leader election waits this long after the first member joins an empty group (Kafka's
# group.initial.rebalance.delay.ms; the mock's default is 3000). 0 = a lone worker starts at once.
DEFAULT_REBALANCE_DELAY_MS = 0

_RD_KAFKA_PRODUCER = 0
_RD_KAFKA_CONF_OK = 0
_API_VERSIONS_KEY = 18


class BrokerError(IrisError):
    """The embedded broker could not be started (library missing, mock cluster failure)."""

    code = "broker_error"


class PortInUseError(BadInputError):
    """The requested port is taken by another process."""

    code = "port_in_use"


# --------------------------------------------------------------------------- librdkafka binding


def _librdkafka_candidates() -> Iterator[Path]:
    spec = importlib.util.find_spec("confluent_kafka")
    if spec is not None and spec.origin:
        pkg = Path(spec.origin).parent
        patterns = ("librdkafka*.so*", "librdkafka*.dylib", "librdkafka*.dll", "rdkafka*.dll")
        for folder in (pkg.parent / "confluent_kafka.libs", pkg / ".dylibs", pkg):
            for pattern in patterns:
                yield from sorted(folder.glob(pattern))
    found = ctypes.util.find_library("rdkafka")
    if found:
        yield Path(found)


_lib: ctypes.CDLL | None = None


def load_librdkafka() -> ctypes.CDLL:
    """The librdkafka shipped in the confluent-kafka wheel (else a system one), with signatures."""
    global _lib
    if _lib is not None:
        return _lib
    for path in _librdkafka_candidates():
        try:
            lib = ctypes.CDLL(str(path))
        except OSError:
            continue
        if hasattr(lib, "rd_kafka_mock_cluster_new"):
            break
    else:
        raise BrokerError(
            "librdkafka with mock-cluster support was not found: install the confluent-kafka wheel"
        )
    vp, cp, i32 = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int32
    sigs: dict[str, tuple[list[type], type | None]] = {
        "rd_kafka_version_str": ([], cp),
        "rd_kafka_conf_new": ([], vp),
        "rd_kafka_conf_destroy": ([vp], None),
        "rd_kafka_conf_set": ([vp, cp, cp, cp, ctypes.c_size_t], ctypes.c_int),
        "rd_kafka_new": ([ctypes.c_int, vp, cp, ctypes.c_size_t], vp),
        "rd_kafka_destroy": ([vp], None),
        "rd_kafka_err2str": ([ctypes.c_int], cp),
        "rd_kafka_mock_cluster_new": ([vp, ctypes.c_int], vp),
        "rd_kafka_mock_cluster_destroy": ([vp], None),
        "rd_kafka_mock_cluster_bootstraps": ([vp], cp),
        "rd_kafka_mock_topic_create": ([vp, cp, ctypes.c_int, ctypes.c_int], ctypes.c_int),
        "rd_kafka_mock_broker_set_host_port": ([vp, i32, cp, ctypes.c_int], None),
        "rd_kafka_mock_broker_set_rtt": ([vp, i32, ctypes.c_int], ctypes.c_int),
        "rd_kafka_mock_set_controller_id": ([vp, i32], None),
        "rd_kafka_mock_group_initial_rebalance_delay_ms": ([vp, i32], None),
    }
    for name, (argtypes, restype) in sigs.items():
        func = getattr(lib, name, None)
        if func is None:
            if name == "rd_kafka_mock_set_controller_id":
                continue  # optional: only admin clients asking for the controller notice
            raise BrokerError(f"librdkafka at {path} lacks {name}: upgrade confluent-kafka")
        func.argtypes = argtypes
        func.restype = restype
    _lib = lib
    return lib


def librdkafka_version() -> str:
    value: bytes = load_librdkafka().rd_kafka_version_str()
    return value.decode()


# --------------------------------------------------------------------------- sockets


def _bind_listener(port: int) -> socket.socket:
    """Bind and listen on ``HOST:port``; the port-in-use check, done before any cluster exists."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # Same as Kafka and the mock: lets a restarted broker reuse a port in TIME_WAIT, while a
        # live listener on the port (ours or anyone's, 0.0.0.0 included) still fails the bind.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, port))
        sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)  # the mock accept()s after poll(); never block its thread
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUseError(
                f"port {port} is already in use: pass --port or stop the other broker"
            ) from None
        if exc.errno == errno.EACCES:
            raise PortInUseError(
                f"port {port} needs privileges to bind: pass --port with a port above 1023"
            ) from None
        raise BrokerError(f"cannot listen on {HOST}:{port}: {exc.strerror}") from None
    return sock


def _open_fds() -> list[int]:
    for folder in ("/proc/self/fd", "/dev/fd"):
        with contextlib.suppress(OSError):
            return sorted(int(name) for name in os.listdir(folder) if name.isdigit())
    return list(range(3, 4096))


def _find_listener_fd(port: int) -> int | None:
    """The descriptor of the socket listening on ``HOST:port`` in this process, if any."""
    for fd in _open_fds():
        try:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            probe = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue
        try:
            if (
                probe.family == socket.AF_INET
                and probe.getsockname() == (HOST, port)
                and probe.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
            ):
                return fd
        except OSError:
            pass
        finally:
            probe.close()
    return None


def probe_kafka(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when ``host:port`` answers a Kafka ApiVersions request (a real round trip)."""
    client_id = b"iris-probe"
    body = struct.pack(">hhih", _API_VERSIONS_KEY, 0, 7, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.settimeout(timeout)
            conn.sendall(struct.pack(">i", len(body)) + body)
            head = _recv_exact(conn, 10)
    except OSError:
        return False
    if head is None:
        return False
    correlation_id: int
    error_code: int
    _size, correlation_id, error_code = struct.unpack(">iih", head)
    return correlation_id == 7 and error_code == 0


def _recv_exact(conn: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


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
            listener = _bind_listener(self._requested_port)  # PortInUseError before anything else
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
        mock_fd = _find_listener_fd(mock_port)
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
