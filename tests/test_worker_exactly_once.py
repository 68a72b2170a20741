# ruff: noqa: F811 - the fixtures are imported from test_worker_integration
"""Exactly-once delivery on a real Kafka (issue 15): the worker killed with SIGKILL three times.

50,000 valid requests and 200 malformed ones arrive at a steady rate; the worker is killed with
SIGKILL three times while it scores them and started again each time. A ``read_committed``
reader of the predictions and dead letters then counts each request's outputs. With
``IRIS_DELIVERY=exactly_once`` every request has exactly one output (0 lost, 0 duplicates) and
the committed offsets reach the end of the requests topic. The same run in ``at_least_once``
mode loses nothing either; its duplicates (the batches scored again after each kill) are printed
beside it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from stream_helpers import wait_until
from test_worker_groups import assignment
from test_worker_integration import (
    Collector,
    Worker,
    collectors,  # noqa: F401 - fixture
    offsets,
    private_topics,
    publish_in_background,
    worker_env,
    workers,  # noqa: F401 - fixture
)

from consumers.publish import sample_messages

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.real_kafka]

VALID, BAD, RATE, KILLS, PARTITIONS = 50_000, 200, 1250.0, 3, 4


def _identity(topic_role: str, record: Any) -> str:
    """What a record answers: a prediction its request id, a dead letter its source position."""
    if topic_role == "predictions":
        return str(record.key.decode())
    headers = dict(record.headers)
    return f"dlq:{headers['source_partition'].decode()}:{headers['source_offset'].decode()}"


@pytest.mark.parametrize("delivery", ["exactly_once", "at_least_once"])
def test_three_kill_9s_during_50k_messages(
    delivery: str,
    registry: Any,
    embedded_broker: str,
    tmp_path: Path,
    workers: list[Worker],
    collectors: list[Collector],
) -> None:
    _, topics, topic_env = private_topics(embedded_broker, PARTITIONS)
    group = f"iris-{delivery}-{topics['requests'].rsplit('.', 1)[1]}"
    env = worker_env(
        registry, embedded_broker, tmp_path, IRIS_DELIVERY=delivery, IRIS_CONSUMER_GROUP=group, **topic_env
    )
    messages = sample_messages(VALID, bad=BAD, seed=47)
    collector = Collector(
        embedded_broker, (topics["predictions"], topics["dlq"]), isolation_level="read_committed"
    )
    everything = Collector(embedded_broker, (topics["predictions"], topics["dlq"]))  # read_uncommitted
    collectors += [collector, everything]

    def answered() -> int:
        return collector.count(topics["predictions"]) + collector.count(topics["dlq"])

    worker = Worker(env)
    workers.append(worker)
    worker.wait_ready()
    sender = publish_in_background(embedded_broker, messages, RATE, requests_topic=topics["requests"])
    kills: list[int] = []
    for n in range(1, KILLS + 1):
        # a kill each ~quarter of the run, while requests keep arriving
        wait_until(
            lambda n=n: answered() >= n * (VALID + BAD) // (KILLS + 1),
            f"answers before kill {n}",
            deadline_s=180,
        )
        worker.proc.kill()
        worker.proc.wait(10)
        kills.append(answered())
        worker = Worker(env)
        workers.append(worker)
        worker.wait_ready()
    sender.join(180)
    assert not sender.is_alive(), "the publisher did not finish"
    expected = VALID + BAD
    wait_until(
        lambda: (
            len({_identity("predictions", r) for r in collector.records[topics["predictions"]]})
            + len({_identity("dlq", r) for r in collector.records[topics["dlq"]]})
            >= expected
        ),
        "every request answered",
        deadline_s=240,
    )
    committed, ends = offsets(embedded_broker, group, topics["requests"])
    seen = Counter(_identity("predictions", r) for r in collector.records[topics["predictions"]])
    seen.update(_identity("dlq", r) for r in collector.records[topics["dlq"]])
    duplicates = sum(n - 1 for n in seen.values())
    valid_ids = {key.decode() for key, _ in messages if key and key.startswith(b"r-")}
    print(
        f"\n{delivery}: {KILLS} kill -9s at {kills} answers; read_committed outputs="
        f"{sum(seen.values())} for {expected} requests ({len(seen)} distinct), duplicates={duplicates}; "
        f"committed {sum(committed.values())} of {sum(ends.values())} request offsets; a read_uncommitted "
        f"reader saw {everything.count(topics['predictions']) + everything.count(topics['dlq'])} records"
    )
    assert len(seen) == expected and valid_ids <= set(seen), "every request answered: 0 lost"
    if delivery == "exactly_once":
        assert duplicates == 0, f"{duplicates} outputs written twice under exactly_once"
        wait_until(
            lambda: offsets(embedded_broker, group, topics["requests"])[0] == ends, "offsets committed"
        )
    assert worker.terminate(30) == 0


def test_rebalances_under_exactly_once_score_nothing_twice(
    registry: Any, embedded_broker: str, tmp_path: Path, workers: list[Worker], collectors: list[Collector]
) -> None:
    """A second member joins (the first hands partitions over: its producers stop, the new owner's
    fence it), then the second is SIGKILLed (its partitions wait out the session timeout, then the
    first fences the dead member's producers and goes on from their last commits): a
    read_committed reader sees every request once."""
    _, topics, topic_env = private_topics(embedded_broker, PARTITIONS)
    group = f"iris-eos-group-{topics['requests'].rsplit('.', 1)[1]}"
    env = worker_env(
        registry,
        embedded_broker,
        tmp_path,
        IRIS_DELIVERY="exactly_once",
        IRIS_CONSUMER_GROUP=group,
        **topic_env,
    )
    messages = sample_messages(20_000, seed=48)
    collector = Collector(embedded_broker, (topics["predictions"],), isolation_level="read_committed")
    collectors.append(collector)
    first = Worker(env)
    workers.append(first)
    first.wait_ready()
    sender = publish_in_background(embedded_broker, messages, 800.0, requests_topic=topics["requests"])
    wait_until(
        lambda: collector.count(topics["predictions"]) >= 3000, "the first member scoring", deadline_s=60
    )
    second = Worker(env)
    workers.append(second)
    second.wait_ready()
    wait_until(lambda: bool(assignment(second)) and len(assignment(first) or ()) < PARTITIONS, "two members")
    wait_until(lambda: collector.count(topics["predictions"]) >= 9000, "both scoring", deadline_s=60)
    second.proc.kill()
    second.proc.wait(10)
    assert sender.is_alive(), "the rebalances happened while requests were still arriving"
    sender.join(120)
    expected = {key.decode() for key, _ in messages if key}
    wait_until(
        lambda: len({r.key for r in collector.records[topics["predictions"]]}) >= len(expected),
        "every request scored",
        deadline_s=120,
    )
    ids = Counter(r.key.decode() for r in collector.records[topics["predictions"]])
    duplicates = sum(n - 1 for n in ids.values())
    print(
        f"\nexactly_once with a join and a kill -9: sent={len(messages)} scored={len(ids)} duplicates={duplicates}"
    )
    assert set(ids) == expected and duplicates == 0
    assert first.terminate(30) == 0
