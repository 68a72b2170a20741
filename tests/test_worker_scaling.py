# ruff: noqa: F811 - the fixtures are imported from test_worker_integration
"""A worker group that KEDA scales out and in under a steady stream, on a real Kafka (issue 15).

KEDA scales the worker Deployment: new pods join the consumer group while traffic flows, and a
scale-in sends SIGTERM to the pods it removes. Here the same happens to worker processes on an
8-partition topic while 60,000 keyed requests arrive at a steady rate. Counted from the
predictions topic (never from timings): nothing is lost, each key's requests are scored in the
order they were sent, and duplicates stay within one batch per rebalance per worker; a revoke
waits for the batch in flight and commits it (``consumers.worker_commits``), so a clean scale-in
adds none.
"""

from __future__ import annotations

import itertools
import re
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
from stream_helpers import wait_until
from test_worker_groups import assignment, rebalance_events
from test_worker_integration import (
    SETTINGS,
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

PARTITIONS = 8
KEYS = 256
ID = re.compile(r"^(k\d+)-(\d+)$")


def keyed_messages(count: int, seed: int) -> list[tuple[bytes | None, bytes]]:
    """``count`` valid requests over :data:`KEYS` keys: key ``k<j>``, id ``k<j>-<n>`` with ``n``
    the request's place among its key's requests (so the predictions show each key's order)."""
    out: list[tuple[bytes | None, bytes]] = []
    for i, (_, value) in enumerate(sample_messages(count, seed=seed)):
        key = f"k{i % KEYS}"
        body = orjson.loads(value)
        body["id"] = f"{key}-{i // KEYS:05d}"
        out.append((key.encode(), orjson.dumps(body)))
    return out


def first_seen_out_of_order(records: list[Any]) -> list[str]:
    """Keys whose requests were first scored out of their order. A prediction's ``scored_at`` is
    its batch's scoring time (ms): along each key's requests it must not go back. (The records'
    own timestamps cannot tell: one batch is produced partition by partition of the output.)"""
    first: dict[str, dict[int, str]] = defaultdict(dict)
    for record in records:
        key, n = ID.match(record.key.decode()).groups()  # type: ignore[union-attr]
        at = orjson.loads(record.value)["scored_at"]
        seen = first[key]
        seen[int(n)] = min(seen.get(int(n), at), at)
    bad = []
    for key, seen in first.items():
        stamps = [seen[n] for n in sorted(seen)]
        if any(b < a for a, b in itertools.pairwise(stamps)):
            bad.append(key)
    return bad


def test_scale_out_1_to_4_and_in_to_1_under_60k_steady_messages(
    registry: Any, embedded_broker: str, tmp_path: Path, workers: list[Worker], collectors: list[Collector]
) -> None:
    suffix, topics, extra = private_topics(embedded_broker, PARTITIONS)
    group = f"iris-scale-{suffix}"
    env = worker_env(registry, embedded_broker, tmp_path, **extra, IRIS_CONSUMER_GROUP=group)
    messages = keyed_messages(60_000, seed=31)
    expected = {orjson.loads(v)["id"] for _, v in messages}
    collector = Collector(embedded_broker, (topics["predictions"],))
    collectors.append(collector)

    def scored() -> int:
        return len({r.key for r in collector.records[topics["predictions"]]})

    first = Worker(env)
    workers.append(first)
    first.wait_ready()
    started = time.monotonic()
    sender = publish_in_background(embedded_broker, messages, 800.0, requests_topic=topics["requests"])
    wait_until(lambda: scored() >= 4000, "the first worker scoring", deadline_s=60)

    # scale out 1 -> 4, as KEDA does when the lag passes the threshold: three pods at once
    added = [Worker(env) for _ in range(3)]
    workers.extend(added)
    everything = {f"{topics['requests']}[{p}]" for p in range(PARTITIONS)}

    def shared_by(members: list[Worker]) -> bool:
        owned = [assignment(w) for w in members]
        return (
            all(o for o in owned) and set().union(*owned) == everything and sum(map(len, owned)) == PARTITIONS
        )  # type: ignore[arg-type]

    wait_until(
        lambda: shared_by([first, *added]), "four members sharing the eight partitions", deadline_s=120
    )
    out_at = time.monotonic() - started
    scored_at_out = scored()
    wait_until(lambda: scored() >= scored_at_out + 4000, "the four members scoring", deadline_s=60)
    assert all(w.proc.poll() is None for w in added)

    # scale in 4 -> 1: SIGTERM to the three pods removed
    for worker in added:
        worker.proc.send_signal(15)
    codes = [worker.proc.wait(60) for worker in added]
    in_at = time.monotonic() - started
    assert codes == [0, 0, 0], "each removed worker drained and exited 0"
    wait_until(
        lambda: assignment(first) == everything, "the last member owning every partition", deadline_s=60
    )
    sent_before_in_finished = sender.is_alive()

    sender.join(180)
    assert not sender.is_alive()
    wait_until(lambda: scored() >= len(expected), "every request scored", deadline_s=180)
    records = list(collector.records[topics["predictions"]])
    ids = Counter(r.key.decode() for r in records)
    lost = expected - set(ids)
    duplicates = sum(n - 1 for n in ids.values())
    rebalances = {
        i: sum(1 for e, _ in rebalance_events(w) if e == "partitions_assigned") for i, w in enumerate(workers)
    }
    bound = sum(rebalances.values()) * SETTINGS.batch_max_records
    committed, ends = offsets(embedded_broker, group=group, topic=topics["requests"])
    print(
        f"\nscale 1->4->1: sent={len(messages)} scored={len(ids)} lost={len(lost)} duplicates={duplicates} "
        f"bound={bound} rebalances={rebalances} out_at={out_at:.1f}s in_at={in_at:.1f}s "
        f"still_sending_at_scale_in={sent_before_in_finished}"
    )
    assert not lost, f"{len(lost)} requests were never scored, e.g. {sorted(lost)[:5]}"
    assert first_seen_out_of_order(records) == [], "each key's requests were scored in order"
    assert duplicates <= bound, f"{duplicates} duplicates: more than one batch per rebalance per worker"
    wait_until(
        lambda: offsets(embedded_broker, group=group, topic=topics["requests"])[0] == ends,
        "the group's commits at the end of every partition",
        deadline_s=30,
    )
    assert committed.keys() == ends.keys()
    assert first.terminate() == 0


def test_a_clean_scale_in_scores_nothing_twice(
    registry: Any, embedded_broker: str, tmp_path: Path, workers: list[Worker], collectors: list[Collector]
) -> None:
    """Two members under a steady stream; SIGTERM one (KEDA's scale-in): the one left takes its
    partitions over from what the leaving member committed, and no request is scored twice."""
    suffix, topics, extra = private_topics(embedded_broker, PARTITIONS)
    env = worker_env(registry, embedded_broker, tmp_path, **extra, IRIS_CONSUMER_GROUP=f"iris-in-{suffix}")
    pair = [Worker(env), Worker(env)]
    workers.extend(pair)
    for worker in pair:
        worker.wait_ready()
    everything = {f"{topics['requests']}[{p}]" for p in range(PARTITIONS)}
    wait_until(
        lambda: (
            all(assignment(w) for w in pair)
            and set().union(*(assignment(w) or set() for w in pair)) == everything
        ),
        "two members sharing the partitions",
        deadline_s=60,
    )
    messages = keyed_messages(20_000, seed=32)
    collector = Collector(embedded_broker, (topics["predictions"],))
    collectors.append(collector)
    sender = publish_in_background(embedded_broker, messages, 800.0, requests_topic=topics["requests"])
    wait_until(lambda: len(collector.records[topics["predictions"]]) >= 6000, "both scoring", deadline_s=60)
    pair[1].proc.send_signal(15)
    assert pair[1].proc.wait(60) == 0
    wait_until(
        lambda: assignment(pair[0]) == everything, "the member left owning every partition", deadline_s=60
    )
    assert sender.is_alive(), "the scale-in happened while requests were still arriving"
    sender.join(120)
    expected = {orjson.loads(v)["id"] for _, v in messages}
    wait_until(
        lambda: len({r.key for r in collector.records[topics["predictions"]]}) >= len(expected),
        "every request scored",
        deadline_s=120,
    )
    committed_all = lambda: offsets(embedded_broker, group=f"iris-in-{suffix}", topic=topics["requests"])  # noqa: E731
    wait_until(
        lambda: committed_all()[0] == committed_all()[1],
        "commits at the end of every partition",
        deadline_s=30,
    )
    ids = Counter(r.key.decode() for r in collector.records[topics["predictions"]])
    duplicates = {k: n for k, n in ids.items() if n > 1}
    print(
        f"\nclean scale-in 2->1: sent={len(messages)} scored={len(ids)} duplicates={sum(n - 1 for n in duplicates.values())}"
    )
    assert set(ids) == expected
    assert duplicates == {}, f"{len(duplicates)} requests scored twice, e.g. {sorted(duplicates)[:5]}"
    assert pair[0].terminate() == 0
