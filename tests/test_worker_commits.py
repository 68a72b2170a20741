# ruff: noqa: F811 - the fixtures are imported from test_worker_integration
"""Offset commits at most once per IRIS_COMMIT_INTERVAL_MS (issue 14, point 6).

Commits are counted through a wrapper on aiokafka's ``AIOKafkaConsumer.commit`` (what reaches
the broker), never by how fast anything ran.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter as Tally
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from kafka_fixtures import free_port
from stream_helpers import Placed, produce_records
from test_worker_integration import (
    SETTINGS,
    Collector,
    Worker,
    collectors,  # noqa: F401 - fixture
    offsets,
    own_broker,  # noqa: F401 - fixture
    prediction_ids,
    publish,
    worker_env,
    workers,  # noqa: F401 - fixture
)

from consumers.publish import sample_messages
from consumers.worker import serve_worker
from consumers.worker_commits import CommitThrottle, RevokeListener

TP0, TP1 = TopicPartition("iris.requests", 0), TopicPartition("iris.requests", 1)


def _records(partition: int, *offsets: int) -> list[Any]:
    return [SimpleNamespace(topic="iris.requests", partition=partition, offset=o) for o in offsets]


def test_the_throttle_commits_acked_offsets_once_per_interval_and_on_revoke() -> None:
    now = [100.0]
    throttle = CommitThrottle(1.0, clock=lambda: now[0])
    commits: list[dict[TopicPartition, int]] = []

    async def commit(offsets: dict[TopicPartition, int]) -> None:
        commits.append(dict(offsets))

    throttle.commit = commit

    async def run() -> None:
        throttle.acked(_records(0, 0, 1, 2))
        await throttle.maybe_commit()  # the first: at once
        for step in range(1, 50):  # 49 batches in 0.49 s: none committed
            now[0] += 0.01
            throttle.acked(_records(step % 2, 10 * step))
            await throttle.maybe_commit()
        assert len(commits) == 1
        await RevokeListener(throttle).on_partitions_revoked([TP1])  # revoke: TP1's acked offset
        assert commits[-1] == {TP1: 10 * 49 + 1}
        now[0] += 1.0
        await throttle.maybe_commit()
        assert commits[-1] == {TP0: 10 * 48 + 1}
        await throttle.maybe_commit()  # nothing new: no commit
        assert len(commits) == 3

    asyncio.run(run())
    assert commits[0] == {TP0: 3}


def test_a_batch_acked_while_the_deferred_commit_is_on_the_wire_is_committed_too() -> None:
    """CI failure of stop 25: the last batch was acked while the deferred commit of the one
    before was awaiting the broker. That commit did not carry it, and no later commit was
    scheduled, so the committed offset stayed one batch behind for good on an idle topic."""
    now = [100.0]
    throttle = CommitThrottle(1.0, clock=lambda: now[0])
    commits: list[dict[TopicPartition, int]] = []
    on_the_wire, release = asyncio.Event(), asyncio.Event()

    async def commit(offsets: dict[TopicPartition, int]) -> None:
        commits.append(dict(offsets))
        if len(commits) == 2:  # the deferred commit: slow broker
            on_the_wire.set()
            await release.wait()

    throttle.commit = commit

    async def run() -> None:
        throttle.acked(_records(0, 0))
        await throttle.maybe_commit()  # at once
        now[0] += 0.1
        throttle.acked(_records(0, 1))
        await throttle.maybe_commit()  # deferred by 0.9 s of the fake clock (real sleep)
        await asyncio.wait_for(on_the_wire.wait(), 5)
        throttle.acked(_records(0, 2))  # the last batch, acked during the deferred commit
        await throttle.maybe_commit()
        now[0] += 2.0
        release.set()
        for _ in range(100):  # the topic is idle from here: nothing else calls the throttle
            if commits[-1] == {TP0: 3}:
                break
            await asyncio.sleep(0.05)
        assert commits[-1] == {TP0: 3}, commits

    asyncio.run(run())


def test_a_revoke_waits_for_the_batch_in_flight_and_commits_it_before_the_handover() -> None:
    """Issue 15: the in-flight batch is produced and committed before its partitions are handed
    over, so its next owner does not score it again (a clean scale-in has no duplicates)."""
    throttle = CommitThrottle(60.0)
    commits: list[dict[TopicPartition, int]] = []

    async def commit(offsets: dict[TopicPartition, int]) -> None:
        commits.append(dict(offsets))

    throttle.commit = commit

    async def fetch(consumer: Any) -> Any:
        return _records(1, 7, 8, 9)

    async def run() -> None:
        get_msg = throttle.track(fetch)
        batch = await get_msg(None)  # fetched: in flight from here
        revoke = asyncio.ensure_future(RevokeListener(throttle).on_partitions_revoked([TP0, TP1]))
        await asyncio.sleep(0.05)
        assert not revoke.done(), "the revoke waits while the batch is being scored"
        throttle.acked(batch)  # its outputs are acknowledged
        throttle.done()
        await asyncio.wait_for(revoke, 5)
        assert commits == [{TP1: 10}], "the in-flight batch is committed by the revoke"
        # nothing in flight: a revoke does not wait
        await asyncio.wait_for(RevokeListener(throttle).on_partitions_revoked([TP0]), 1)

    asyncio.run(run())


def test_a_revoke_does_not_wait_for_ever_for_a_batch_that_never_ends() -> None:
    throttle = CommitThrottle(60.0, revoke_wait_s=0.2)

    async def fetch(consumer: Any) -> Any:
        return _records(0, 1)

    async def run() -> None:
        await throttle.track(fetch)(None)
        await asyncio.wait_for(RevokeListener(throttle).on_partitions_revoked([TP0]), 2)

    asyncio.run(run())


@pytest.mark.slow
@pytest.mark.integration
def test_many_small_batches_commit_at_most_once_per_interval(
    registry: Any, own_broker: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[float] = []
    commit = AIOKafkaConsumer.commit

    async def counted(self: AIOKafkaConsumer, offsets: Any = None) -> None:
        if self._group_id == "iris-scorer":  # the requests' group (not the label reader's)
            calls.append(time.monotonic())
        await commit(self, offsets)

    monkeypatch.setattr(AIOKafkaConsumer, "commit", counted)
    interval_ms = 2000
    settings = registry.settings(
        kafka_bootstrap_servers=own_broker,
        drift_enabled=False,
        batch_max_records=10,  # 1,000 messages: 100 batches or more
        commit_interval_ms=interval_ms,
    )
    batches = {"n": 0}
    result: dict[str, Any] = {}

    async def after_batch() -> None:
        batches["n"] += 1

    def drive(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
        try:
            publish(own_broker, sample_messages(1000, seed=71))
            deadline = time.monotonic() + 120
            while batches["n"] < 100:
                assert time.monotonic() < deadline, "100 batches"
                time.sleep(0.05)
        except BaseException as exc:
            result["error"] = exc
        finally:
            loop.call_soon_threadsafe(stop.set)

    async def main() -> None:
        stop = asyncio.Event()
        driver = threading.Thread(target=drive, args=(asyncio.get_running_loop(), stop), daemon=True)
        driver.start()
        started = time.monotonic()
        await serve_worker(
            settings, http_host="127.0.0.1", http_port=free_port(), stop=stop, after_batch=after_batch
        )
        result["elapsed"] = time.monotonic() - started
        await asyncio.to_thread(driver.join, 30)

    asyncio.run(main())
    assert "error" not in result, result["error"]
    revokes = 1  # the stop leaves the group
    bound = result["elapsed"] / (interval_ms / 1000) + revokes + 1
    assert batches["n"] >= 100
    assert len(calls) <= bound, (
        f"{len(calls)} commits for {batches['n']} batches in {result['elapsed']:.1f} s"
    )
    committed, ends = offsets(own_broker)
    assert committed == ends, "the stop committed the last batch"


@pytest.mark.slow
@pytest.mark.integration
def test_sigterm_commits_the_last_batch_and_a_restart_redelivers_nothing(
    registry: Any, own_broker: str, tmp_path: Path, workers: list[Worker], collectors: list[Collector]
) -> None:
    env = worker_env(registry, own_broker, tmp_path, IRIS_COMMIT_INTERVAL_MS="600000")
    collector = Collector(own_broker, (SETTINGS.predictions_topic,))
    collectors.append(collector)
    worker = Worker(env)
    workers.append(worker)
    worker.wait_ready()
    first = sample_messages(300, seed=72)
    for n in range(3):  # three bursts: the later ones are acked long before the interval is up
        publish(own_broker, first[100 * n : 100 * (n + 1)])
        collector.wait_for(lambda n=n: collector.count(SETTINGS.predictions_topic) >= 100 * (n + 1), "burst")  # type: ignore[misc]
    assert worker.terminate() == 0
    committed, ends = offsets(own_broker)
    assert committed == ends, "SIGTERM committed every acknowledged batch"
    again = Worker(env)
    workers.append(again)
    again.wait_ready()
    rows = sample_messages(8, seed=73)
    tail: list[Placed] = [
        (n % 4, f"tail-{n}".encode(), v.replace(b'"id":"', b'"id":"tail-', 1), [], None)
        for n, (_, v) in enumerate(rows)
    ]
    produce_records(own_broker, SETTINGS.requests_topic, tail)
    collector.wait_for(
        lambda: sum(1 for i in prediction_ids(collector) if i.startswith("tail-")) >= 8,
        "the restarted worker read every partition past its committed offset",
    )
    seen = Tally(prediction_ids(collector))
    assert [i for i, n in seen.items() if n > 1] == [], "nothing re-delivered after the restart"
    assert again.terminate() == 0
