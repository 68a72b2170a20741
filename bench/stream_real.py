"""The stream scenario on a real Apache Kafka broker, and exactly-once against at-least-once.

One local KRaft broker (``iris_scorer.kafka_cluster``, the pinned jars of ``deploy/kafka``) runs
for the whole scenario; every run gets fresh topics (4 partitions) and a fresh consumer group on
it, is preloaded with the same requests, then drained by one system:

- ``ours``: the worker, ``IRIS_DELIVERY=at_least_once`` (the default);
- ``ours_exactly_once``: the worker, ``IRIS_DELIVERY=exactly_once`` (a transaction per input
  partition and batch);
- ``C_passthrough``: raw aiokafka byte copy (bench/baselines/passthrough.py), the ceiling.

Throughput is outputs / time from the first output to the last. An exactly-once output counts
when its transaction commits: the run ends when the group's committed offsets (committed with
the transactions) reach the preloaded count (the output topic's end offsets also hold the
transactions' commit markers, so they cannot count outputs).
"""

from __future__ import annotations

import uuid
from typing import Any

from bench.harness import (
    PYTHON,
    Goal,
    ScenarioResult,
    Skip,
    free_port,
    interleave,
)
from bench.registry import BenchRegistry
from bench.scenarios import (
    Mode,
    OutputCounter,
    drift_off_env,
    iris_scorer,
    preload,
    timed_drain,
    topic_counts,
)

SYSTEMS = ("ours", "ours_exactly_once", "C_passthrough")
PARTITIONS = 4
#: A real broker holds any amount (the mock keeps 5 MiB per partition): 5x the mock scenario's
#: count, so that a drain lasts seconds, not a third of one.
SCALE = 5


def committed_sum(bootstrap: str, group: str, topic: str) -> int:
    """The sum of ``group``'s committed offsets on ``topic`` (0 for a partition without one)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        meta = consumer.list_topics(topic, timeout=10)
        partitions = [TopicPartition(topic, p) for p in meta.topics[topic].partitions]
        return sum(max(tp.offset, 0) for tp in consumer.committed(partitions, timeout=10))
    finally:
        consumer.close()


def _command(name: str, registry: BenchRegistry, bootstrap: str, topics: dict[str, str], group: str) -> Any:
    env = (
        registry.env()
        | drift_off_env()
        | {
            "IRIS_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "IRIS_KAFKA_SESSION_TIMEOUT_MS": "6000",
            "IRIS_CONSUMER_GROUP": group,
            **{f"IRIS_{role.upper()}_TOPIC": topic for role, topic in topics.items()},
        }
    )
    if name == "C_passthrough":
        module = "bench.baselines.passthrough"
        return [PYTHON, "-m", module, bootstrap, topics["requests"], topics["predictions"], group], env
    delivery = "exactly_once" if name == "ours_exactly_once" else "at_least_once"
    return [iris_scorer(), "worker", "--http-port", str(free_port())], env | {"IRIS_DELIVERY": delivery}


def drain_once(name: str, mode: Mode, registry: BenchRegistry, cluster: Any) -> dict[str, float]:
    n, suffix = mode.stream_messages * SCALE, uuid.uuid4().hex[:8]
    topics = {role: f"{role}.{suffix}" for role in ("requests", "predictions", "dlq", "drift")}
    cluster.create_topics(list(topics.values()), PARTITIONS)
    bootstrap, group = cluster.bootstrap, f"bench-{name}-{suffix}"
    produce_s = preload(bootstrap, topics["requests"], n)
    high, _ = topic_counts(bootstrap, topics["requests"])
    if high != n:
        raise Skip(f"the broker holds {high} of {n} preloaded requests")
    cmd, env = _command(name, registry, bootstrap, topics, group)
    counter = OutputCounter(bootstrap, topics["predictions"])

    def committed() -> int:  # exactly-once: counted when its transactions commit
        return committed_sum(bootstrap, group, topics["requests"])

    done = committed if name == "ours_exactly_once" else None
    try:
        return timed_drain(name, cmd, env, counter, n, mode.stream_cap_s, produce_s, done)
    finally:
        counter.close()


def stream_real_kafka(mode: Mode, registry: BenchRegistry) -> ScenarioResult:
    n = mode.stream_messages * SCALE
    result = ScenarioResult(
        "stream_real_kafka",
        f"{n:,} valid requests preloaded (gzip) into fresh 4-partition topics of one local Apache Kafka "
        "broker (KRaft, JVM process; the same broker for every run); drift off for all. ours = the "
        "worker at-least-once (default), ours_exactly_once = IRIS_DELIVERY=exactly_once (counted when "
        "its transactions commit), C = raw aiokafka byte copy.",
        params={"messages": n, "repeats": mode.repeats, "cap_s": mode.stream_cap_s, "partitions": PARTITIONS},
    )
    result.columns = ["msgs_per_s", "drain_s", "cpu_s_per_100k", "peak_rss_mb", "first_output_s"]
    result.goals = [
        Goal("real Kafka throughput: ours/C >= 0.85", "msgs_per_s", ">=", 0.85, "ours", "C_passthrough"),
        Goal("exactly_once / at_least_once >= 0.5", "msgs_per_s", ">=", 0.5, "ours_exactly_once", "ours"),
    ]
    from iris_scorer.kafka_jars import local_kafka_unavailable

    reason = local_kafka_unavailable()
    if reason:
        for name in SYSTEMS:
            result.skip(name, f"no local real Kafka: {reason}")
        return result
    from iris_scorer.kafka_cluster import KafkaCluster

    dead: set[str] = set()
    with KafkaCluster(1, topics=()) as cluster:
        for _round, name in interleave(SYSTEMS, mode.repeats):
            if name in dead:
                continue
            try:
                sample = drain_once(name, mode, registry, cluster)
            except Skip as exc:
                dead.add(name)
                result.skip(name, str(exc))
                continue
            print(
                f"  stream_real_kafka {name}: " + ", ".join(f"{k}={v:.4g}" for k, v in sample.items()),
                flush=True,
            )
            if sample.get("partial"):
                result.notes.append(
                    f"{name} did not finish within {mode.stream_cap_s:.0f} s; rate is over what it drained"
                )
            result.add(name, sample)
    result.notes = sorted(set(result.notes))
    return result
