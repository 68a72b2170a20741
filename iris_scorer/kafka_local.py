"""``make kafka``: a real Apache Kafka (KRaft) from Maven Central jars, in the foreground.

``python -m iris_scorer.kafka_local [--partitions N]`` reads ``KAFKA_PORT`` (default 9092; node i
listens on ``KAFKA_PORT + i - 1``) and ``KAFKA_NODES`` (default 1), fetches the jars once
(:func:`ensure_jars`), starts the cluster (:class:`KafkaCluster`), creates the four iris topics and
prints one line::

    kafka ready bootstrap=127.0.0.1:9092 nodes=1 partitions=4 replication=1 topics=iris.requests,...

SIGINT (Ctrl-C) or SIGTERM stops every broker and exits 0, as ``iris-scorer broker`` does; a bad
variable or a taken port exits 2, a missing Java 17 / Maven or a broker that dies exits 1, each
with one sentence on stderr. This module is the library's front door too: tests import
:func:`ensure_jars` and :class:`KafkaCluster` from here.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Sequence
from types import FrameType

from consumers.broker import DEFAULT_PARTITIONS
from iris_scorer.kafka_cluster import KafkaCluster
from iris_scorer.kafka_jars import (
    KafkaLocalError,
    KafkaPortInUse,
    cached_lib,
    ensure_jars,
    java_executable,
    kafka_version,
    local_kafka_unavailable,
)
from iris_scorer.kafka_nodes import Node
from ml.errors import BadInputError, IrisError

__all__ = [
    "KafkaCluster",
    "KafkaLocalError",
    "KafkaPortInUse",
    "Node",
    "cached_lib",
    "ensure_jars",
    "java_executable",
    "kafka_version",
    "local_kafka_unavailable",
    "main",
]


def _env_int(name: str, default: int, low: int, high: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise BadInputError(f"{name} must be a whole number from {low} to {high}, not {raw!r}.")
    return int(raw)


class _Stop(BaseException):
    """SIGINT or SIGTERM arrived: stop the brokers."""


def _on_signal(signum: int, frame: FrameType | None) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)  # one is enough; the clean-up must not be cut short
    raise _Stop


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m iris_scorer.kafka_local",
        description="A real Apache Kafka (KRaft) from Maven Central jars, in the foreground "
        "(KAFKA_PORT, default 9092; KAFKA_NODES, default 1). Ctrl-C stops it.",
    )
    parser.add_argument(
        "--partitions", type=int, default=DEFAULT_PARTITIONS, help="partitions per topic (default 4)"
    )
    args = parser.parse_args(argv)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _on_signal)
    try:
        port = _env_int("KAFKA_PORT", 9092, 1, 65535)
        nodes = _env_int("KAFKA_NODES", 1, 1, 9)
        java_executable()
        if cached_lib() is None:
            print(f"kafka: fetching Apache Kafka {kafka_version()} from Maven Central", file=sys.stderr)
        with KafkaCluster(nodes, port, partitions=args.partitions) as cluster:
            print(
                f"kafka ready bootstrap={cluster.bootstrap} nodes={nodes} partitions={args.partitions} "
                f"replication={cluster.replication} topics={','.join(cluster.topics)}",
                flush=True,
            )
            while True:
                time.sleep(0.5)
                for node in cluster.nodes.values():
                    cluster.check_alive(node)
    except _Stop:
        print("kafka stopped", flush=True)
        return 0
    except KafkaPortInUse as exc:
        print(f"error: {exc.message} (KAFKA_PORT)", file=sys.stderr, flush=True)
        return exc.exit_code
    except IrisError as exc:
        print(f"error: {exc.message}", file=sys.stderr, flush=True)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
