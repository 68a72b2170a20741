"""One node of a local KRaft cluster (:class:`Node`) and the small facts its start-up needs: a
fresh cluster id, free and listening ports."""

from __future__ import annotations

import base64
import socket
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO


def new_cluster_id(random: Callable[[], uuid.UUID] = uuid.uuid4) -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64, never starting with "-".

    ``kafka-storage format -t -xJ3...`` reads a leading dash as an option, so, like Kafka's own
    ``Uuid.randomUuid``, draw again when the encoding starts with one.
    """
    while True:
        encoded = base64.urlsafe_b64encode(random().bytes).decode().rstrip("=")
        if not encoded.startswith("-"):
            return encoded


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int) -> bool:
    """Nothing listens on ``port``: connections of a stopped broker in TIME_WAIT do not count,
    as the JVM binds with SO_REUSEADDR (a broker restarted on its own port must pass)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@dataclass
class Node:
    node_id: int
    port: int
    controller_port: int
    home: Path
    listener_ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def properties(self) -> Path:
        return self.home / "server.properties"


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True
