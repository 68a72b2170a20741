# ruff: noqa: F811 - the fixtures are imported from test_worker_integration
"""Broker failover on a 3-node real Kafka (issue 15).

Replication factor 3, ``min.insync.replicas=2``, producers with ``acks=all`` and idempotence (the
publisher's and the worker's, as on any Apache Kafka). The leader of some request partitions is
killed with SIGKILL while 40,000 requests arrive at 2,000/s. Counted on the topics: no request is
lost, none is written twice by a producer retry (the requests topic holds each id once), and the
worker's ``/ready`` stays 200 or recovers; the time it was not ready is reported.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka_fixtures import own_real_cluster
from stream_helpers import ready_status, wait_until
from test_worker_integration import (
    Collector,
    Worker,
    collectors,  # noqa: F401 - fixture
    publish,
    worker_env,
    workers,  # noqa: F401 - fixture
)

from consumers.publish import sample_messages

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.real_kafka]

COUNT, RATE = 40_000, 2000.0


def test_killing_a_partition_leader_loses_nothing_and_writes_nothing_twice(
    registry: Any, tmp_path: Path, workers: list[Worker], collectors: list[Collector]
) -> None:
    with own_real_cluster(3, partitions=6, extra_properties={"min.insync.replicas": "2"}) as cluster:
        env = worker_env(registry, cluster.bootstrap, tmp_path, IRIS_CONSUMER_GROUP="iris-failover")
        worker = Worker(env)
        workers.append(worker)
        worker.wait_ready()
        messages = sample_messages(COUNT, seed=41)
        expected = {key.decode() for key, _ in messages if key}
        collector = Collector(cluster.bootstrap, ("iris.requests", "iris.predictions"))
        collectors.append(collector)

        not_ready: list[float] = []
        watching = threading.Event()

        def watch() -> None:
            while not watching.is_set():
                if ready_status(worker.port)[0] != 200:
                    not_ready.append(time.monotonic())
                time.sleep(0.1)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        sender = threading.Thread(target=publish, args=(cluster.bootstrap, messages), kwargs={"rate": RATE})
        sender.start()
        wait_until(lambda: collector.count("iris.predictions") >= 8000, "scoring under way", deadline_s=60)
        victim = cluster.leader_of("iris.requests", 0)
        led = [p for p in range(6) if cluster.leader_of("iris.requests", p) == victim]
        killed_at = time.monotonic()
        cluster.kill(victim)  # SIGKILL: no controlled shutdown
        sender.join(180)
        assert not sender.is_alive()
        wait_until(
            lambda: len({r.key for r in collector.records["iris.predictions"]}) >= len(expected),
            "every request scored",
            deadline_s=180,
        )
        watching.set()
        watcher.join(5)
        requests = Counter(r.key.decode() for r in collector.records["iris.requests"])
        predictions = Counter(r.key.decode() for r in collector.records["iris.predictions"])
        recovered = (max(not_ready) - min(not_ready)) if not_ready else 0.0
        stamps = sorted(r.timestamp for r in collector.records["iris.predictions"])
        paused = max(b - a for a, b in itertools.pairwise(stamps)) / 1000
        print(
            f"\nfailover: killed node {victim} (leader of request partitions {led}) "
            f"{time.monotonic() - killed_at:.1f}s before the end; requests written={sum(requests.values())} "
            f"unique={len(requests)}; predictions={sum(predictions.values())} unique={len(predictions)}; "
            f"not ready for {recovered:.1f}s ({len(not_ready)} polls); longest pause between predictions {paused:.1f}s"
        )
        assert set(requests) == expected and set(predictions) >= expected, "nothing lost"
        assert [k for k, n in requests.items() if n > 1] == [], "no request written twice by a producer retry"
        twice = [k for k, n in predictions.items() if n > 1]
        assert twice == [], f"{len(twice)} predictions written twice"
        assert ready_status(worker.port)[0] == 200, "the worker is ready again"
        assert all(
            orjson.loads(r.value)["id"] == r.key.decode() for r in collector.records["iris.predictions"][:10]
        )
        assert worker.terminate(30) == 0
