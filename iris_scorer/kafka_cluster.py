"""1..N real Kafka (KRaft) nodes as JVM processes on 127.0.0.1: :class:`KafkaCluster`.

Every node is a combined broker and controller (``process.roles=broker,controller``) with a
static ``controller.quorum.voters`` list, its own temporary log dir (formatted with
``kafka.tools.StorageTool``) and a generated ``server.properties``; ``kafka.Kafka`` runs it with
at most 512 MB of heap. Start-up is ready when every node accepts TCP and the cluster metadata
lists all of them; then the topics are created (replication ``min(nodes, 3)``). Node ids are
Kafka's ``node.id``: 1..N. Stop is SIGTERM, a wait, then SIGKILL; the log dirs are removed.
"""

from __future__ import annotations

import atexit
import shutil
import signal
import subprocess
import tempfile
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from consumers.broker import DEFAULT_PARTITIONS, DEFAULT_TOPICS
from iris_scorer import kafka_admin
from iris_scorer.kafka_jars import LOG4J2, KafkaLocalError, KafkaPortInUse, ensure_jars, java_executable
from iris_scorer.kafka_nodes import Node, accepts, free_port, new_cluster_id, port_is_free
from ml.errors import BadInputError

#: Lean flags: a small serial-GC heap (the issue allows at most ~512 MB per broker) and C1 only,
#: which starts a node in 2.4 s instead of 3.8 s here (3 nodes: 6.1 s instead of 9.0 s). A
#: benchmark of the broker itself may pass ``jvm_options`` without ``TieredStopAtLevel``.
JVM_OPTIONS: tuple[str, ...] = (
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:+ExitOnOutOfMemoryError",
)
TOOL_OPTIONS: tuple[str, ...] = ("-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")


_LIVE: weakref.WeakSet[KafkaCluster] = weakref.WeakSet()


@atexit.register
def _stop_leftovers() -> None:
    """No JVM outlives the Python process that started it (short of SIGKILL of that process)."""
    for cluster in list(_LIVE):
        cluster.stop(timeout=5)


class KafkaCluster:
    """A real Kafka cluster of ``nodes`` combined nodes, as a context manager.

    ``port`` (None: free ports) is node 1's PLAINTEXT port; node i gets ``port + i - 1``.
    ``listeners`` names extra listeners (a free port each per node; the security protocol is the
    name, e.g. ``SASL_SSL``); ``extra_properties`` go last into every ``server.properties`` and
    override the generated ones. :meth:`listener_bootstrap` gives such a listener's address.
    """

    def __init__(
        self,
        nodes: int = 1,
        port: int | None = None,
        *,
        partitions: int = DEFAULT_PARTITIONS,
        topics: Sequence[str] = DEFAULT_TOPICS,
        listeners: Sequence[str] = (),
        extra_properties: Mapping[str, str] | None = None,
        jvm_options: Sequence[str] = JVM_OPTIONS,
        ready_timeout_s: float = 90.0,
        lib: Path | None = None,
    ) -> None:
        if nodes < 1:
            raise BadInputError(f"a Kafka cluster needs at least 1 node, not {nodes}.")
        if partitions < 1:
            raise BadInputError(f"--partitions must be at least 1, not {partitions}.")
        self.size, self.requested_port, self.partitions = nodes, port, partitions
        self.topics, self.listeners = tuple(topics), tuple(listeners)
        self.extra_properties = dict(extra_properties or {})
        self.jvm_options, self.ready_timeout_s = tuple(jvm_options), ready_timeout_s
        self.replication = min(nodes, 3)
        self.cluster_id = new_cluster_id()
        self.home: Path | None = None
        self.nodes: dict[int, Node] = {}
        self.timings: dict[str, float] = {}
        self._lib, self._java, self._classpath = lib, "", ""

    @property
    def bootstrap(self) -> str:
        """Every node's PLAINTEXT address, comma-separated."""
        return ",".join(f"127.0.0.1:{n.port}" for n in self.nodes.values())

    def listener_bootstrap(self, name: str) -> str:
        return ",".join(f"127.0.0.1:{n.listener_ports[name]}" for n in self.nodes.values())

    def _live_bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{n.port}" for n in self.nodes.values() if n.running) or self.bootstrap

    def __enter__(self) -> KafkaCluster:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> KafkaCluster:
        started = time.monotonic()
        self._java = java_executable()
        self._classpath = str((self._lib or ensure_jars()) / "*")
        self.home = Path(tempfile.mkdtemp(prefix="iris-kafka-"))
        _LIVE.add(self)
        try:
            self._plan_nodes()
            for node in self.nodes.values():
                self._write_properties(node)
            formats = {
                n.node_id: self._java_process("kafka.tools.StorageTool", n) for n in self.nodes.values()
            }
            for node_id, fmt in formats.items():
                if fmt.wait(120) != 0:
                    tail = self._log_tail(self.nodes[node_id])
                    raise KafkaLocalError(f"formatting Kafka node {node_id}'s storage failed: {tail}")
            self.timings["format_s"] = time.monotonic() - started
            for node in self.nodes.values():
                node.proc = self._java_process("kafka.Kafka", node)
            self.wait_ready()
            self.timings["ready_s"] = time.monotonic() - started
            if self.topics:
                self.create_topics(self.topics, self.partitions)
            self.timings["topics_s"] = time.monotonic() - started
        except BaseException:
            self.stop()
            raise
        return self

    def _plan_nodes(self) -> None:
        assert self.home is not None
        taken: set[int] = set()

        def fresh() -> int:
            while (port := free_port()) in taken:
                pass
            taken.add(port)
            return port

        for node_id in range(1, self.size + 1):
            port = fresh() if self.requested_port is None else self.requested_port + node_id - 1
            if self.requested_port is not None and not port_is_free(port):
                raise KafkaPortInUse(
                    f"port {port} on 127.0.0.1 is taken, so Kafka node {node_id} cannot listen there; "
                    "stop what uses it or choose another port."
                )
            taken.add(port)
            node = Node(node_id, port, fresh(), self.home / f"node-{node_id}")
            node.listener_ports = {name: fresh() for name in self.listeners}
            (node.home / "data").mkdir(parents=True)
            self.nodes[node_id] = node

    def _write_properties(self, node: Node) -> None:
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes.values())
        extra = [f"{name}://127.0.0.1:{port}" for name, port in node.listener_ports.items()]
        plaintext = f"PLAINTEXT://127.0.0.1:{node.port}"
        protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT", *(f"{n}:{n}" for n in self.listeners)]
        rf = self.replication
        properties = {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "controller.quorum.voters": voters,
            "listeners": ",".join([plaintext, f"CONTROLLER://127.0.0.1:{node.controller_port}", *extra]),
            "advertised.listeners": ",".join([plaintext, *extra]),
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": ",".join(protocols),
            "log.dirs": str(node.home / "data"),
            "num.partitions": str(self.partitions),
            "default.replication.factor": str(rf),
            "offsets.topic.replication.factor": str(rf),
            "offsets.topic.num.partitions": "10",  # 50 by default: slower first group join
            "transaction.state.log.replication.factor": str(rf),
            "transaction.state.log.min.isr": str(min(rf, 2)),
            "transaction.state.log.num.partitions": "10",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
            "log.segment.bytes": str(64 * 1024 * 1024),
            **self.extra_properties,
        }
        node.properties.write_text("".join(f"{k}={v}\n" for k, v in properties.items()), encoding="utf-8")

    def _java_process(self, main_class: str, node: Node) -> subprocess.Popen[bytes]:
        if node.log is None or node.log.closed:
            node.log = (node.home / "node.log").open("ab")
        tool = main_class == "kafka.tools.StorageTool"
        argv = [self._java, *(TOOL_OPTIONS if tool else self.jvm_options)]
        argv += [f"-Dlog4j2.configurationFile={LOG4J2}", "-cp", self._classpath, main_class]
        argv += (
            ["format", "-t", self.cluster_id, "-c", str(node.properties)] if tool else [str(node.properties)]
        )
        return subprocess.Popen(
            argv, cwd=node.home, stdin=subprocess.DEVNULL, stdout=node.log, stderr=node.log
        )

    def wait_ready(self, timeout_s: float | None = None) -> None:
        """Every running node accepts TCP and the cluster metadata lists all of them."""
        deadline = time.monotonic() + (timeout_s or self.ready_timeout_s)
        running = [n for n in self.nodes.values() if n.running]
        for node in running:
            while not accepts(node.port):
                self.check_alive(node)
                if time.monotonic() > deadline:
                    tail = self._log_tail(node)
                    raise KafkaLocalError(
                        f"Kafka node {node.node_id} did not listen on {node.port} in time: {tail}"
                    )
                time.sleep(0.1)
        expected, seen = {n.node_id for n in running}, set()
        while time.monotonic() < deadline:
            for node in running:
                self.check_alive(node)
            try:
                if (seen := kafka_admin.broker_ids(self._live_bootstrap(), timeout_s=2)) == expected:
                    return
            except KafkaLocalError:
                pass
            time.sleep(0.2)
        raise KafkaLocalError(
            f"the Kafka metadata lists nodes {sorted(seen)}, not {sorted(expected)}, in time."
        )

    def check_alive(self, node: Node) -> None:
        """Raise a clear error if ``node`` was started and has exited."""
        if node.proc is None or node.proc.poll() is None:
            return
        tail = self._log_tail(node)
        if "Address already in use" in tail:
            raise KafkaPortInUse(
                f"port {node.port} or {node.controller_port} on 127.0.0.1 is taken, so Kafka node "
                f"{node.node_id} cannot listen there."
            )
        raise KafkaLocalError(f"Kafka node {node.node_id} exited with code {node.proc.returncode}: {tail}")

    @staticmethod
    def _log_tail(node: Node, lines: int = 5) -> str:
        path = node.home / "node.log"
        text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
        return " | ".join(line.strip() for line in text.splitlines()[-lines:]) or "no output"

    def kill(self, node_id: int, sig: int = signal.SIGKILL, timeout: float = 20.0) -> int | None:
        """Send ``sig`` to one node; for SIGKILL or SIGTERM wait for its exit (SIGKILL after ``timeout``)."""
        proc = self.nodes[node_id].proc
        if proc is None or proc.poll() is not None:
            return None if proc is None else proc.returncode
        proc.send_signal(sig)
        if sig not in (signal.SIGKILL, signal.SIGTERM):
            return None
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(10)

    def restart(self, node_id: int) -> None:
        """Stop one node (SIGTERM) if it runs and start it again on the same ports and log dir."""
        self.kill(node_id, signal.SIGTERM)
        self.nodes[node_id].proc = self._java_process("kafka.Kafka", self.nodes[node_id])
        self.wait_ready()

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM every node, wait up to ``timeout``, SIGKILL what is left, remove the log dirs."""
        live = [n.proc for n in self.nodes.values() if n.proc is not None and n.proc.poll() is None]
        for proc in live:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in live:
            try:
                proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        for node in self.nodes.values():
            if node.log is not None:
                node.log.close()
        if self.home is not None:
            shutil.rmtree(self.home, ignore_errors=True)
        _LIVE.discard(self)

    def create_topics(self, topics: Sequence[str], partitions: int, replication: int | None = None) -> None:
        """Create the missing ``topics`` (replication ``min(nodes, 3)`` unless given)."""
        rf = replication or self.replication
        kafka_admin.create_topics(self._live_bootstrap(), topics, partitions, rf, self.ready_timeout_s)

    def leader_of(self, topic: str, partition: int) -> int:
        """The node id that leads ``topic``/``partition`` now (-1 when none does)."""
        return kafka_admin.partition_leaders(self._live_bootstrap(), topic)[partition]
