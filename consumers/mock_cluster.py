"""The low level of the embedded broker: librdkafka (from the confluent-kafka wheel) through
``ctypes``, and the sockets trick that gives the mock cluster a fixed port (see
:mod:`consumers.broker`).

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
import socket
import stat
import struct
from collections.abc import Iterator
from pathlib import Path

from ml.errors import BadInputError, IrisError

HOST = "127.0.0.1"
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


def load_librdkafka() -> ctypes.CDLL:
    """The librdkafka shipped in the confluent-kafka wheel (else a system one), with signatures.

    Each call returns a new handle (the dynamic loader maps the library once per process); the
    caller keeps it for as long as it needs it, so nothing is cached in this module."""
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
    return lib


def librdkafka_version() -> str:
    value: bytes = load_librdkafka().rd_kafka_version_str()
    return value.decode()


# --------------------------------------------------------------------------- sockets


def bind_listener(port: int) -> socket.socket:
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


def find_listener_fd(port: int) -> int | None:
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
