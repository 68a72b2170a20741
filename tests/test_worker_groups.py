# ruff: noqa: F811 - the fixtures are imported from test_worker_integration
"""Consumer groups on a real Kafka (issue 15): static membership (IRIS_KAFKA_GROUP_INSTANCE_ID).

A worker container restarted within the session timeout rejoins as the same static member: it
gets its own partitions back and the other members' assignments do not change (no rebalance).
The embedded mock cannot run groups of two members (SyncGroup error 42), so these tests are
marked ``real_kafka``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from stream_helpers import wait_until
from test_worker_integration import (
    Collector,
    Worker,
    collectors,  # noqa: F401 - fixture
    private_topics,
    publish_and_await_scores,
    worker_env,
    workers,  # noqa: F401 - fixture
)

from consumers.publish import sample_messages

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.real_kafka]

PARTITIONS = 4
EVENT = re.compile(r"\b(partitions_assigned|partitions_revoked)\b.*?\bpartitions=(\S+)")


def rebalance_events(worker: Worker) -> list[tuple[str, frozenset[str]]]:
    """The worker's ``partitions_assigned`` / ``partitions_revoked`` log lines, in order."""
    events = []
    for line in worker.output().splitlines():
        match = EVENT.search(line)
        if match:
            names = match.group(2)
            events.append((match.group(1), frozenset() if names == "none" else frozenset(names.split(","))))
    return events


def assignment(worker: Worker) -> frozenset[str] | None:
    """The partitions of the worker's last ``partitions_assigned`` (None before the first)."""
    assigned = [names for event, names in rebalance_events(worker) if event == "partitions_assigned"]
    return assigned[-1] if assigned else None


def test_a_static_member_restarted_within_the_session_timeout_keeps_its_partitions(
    registry: Any, embedded_broker: str, tmp_path: Path, workers: list[Worker], collectors: list[Collector]
) -> None:
    suffix, topics, extra = private_topics(embedded_broker, PARTITIONS)
    extra["IRIS_CONSUMER_GROUP"] = f"iris-static-{suffix}"
    # The scenario: a restart well within the session timeout (a worker starts in a few seconds).
    extra["IRIS_KAFKA_SESSION_TIMEOUT_MS"] = "30000"

    def start(instance: str) -> Worker:
        env = worker_env(registry, embedded_broker, tmp_path, **extra, IRIS_KAFKA_GROUP_INSTANCE_ID=instance)
        worker = Worker(env)
        workers.append(worker)
        worker.wait_ready()
        return worker

    first = start(f"worker-a-{suffix}")
    wait_until(lambda: assignment(first) is not None, "the first member assigned")
    second = start(f"worker-b-{suffix}")
    everything = {f"{topics['requests']}[{p}]" for p in range(PARTITIONS)}

    def settled() -> bool:
        a, b = assignment(first), assignment(second)
        return a is not None and b is not None and bool(a) and bool(b) and not a & b and a | b == everything

    wait_until(settled, "the two members sharing the four partitions", deadline_s=60)
    kept = assignment(second)
    seen_by_first = len(rebalance_events(first))

    second.proc.kill()  # kill -9: no LeaveGroup, no commit
    second.proc.wait(10)
    restarted = start(f"worker-b-{suffix}")
    wait_until(lambda: assignment(restarted) is not None, "the restarted member assigned", deadline_s=60)
    assert assignment(restarted) == kept, "the restarted static member got its own partitions back"

    publish_and_await_scores(embedded_broker, topics, sample_messages(2000, seed=77), collectors)
    assert rebalance_events(first)[seen_by_first:] == [], "the other member was not rebalanced"
    assert assignment(first) | assignment(restarted) == everything  # type: ignore[operator]
    assert first.terminate() == 0 and restarted.terminate() == 0
