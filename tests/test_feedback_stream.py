"""Shadow scoring and delayed labels through a real worker process and a real broker over TCP:
``iris.shadow`` agrees with the offline comparison, labels are joined before and after a restart
(the join state rebuilt from ``iris.predictions``), bad labels are dead-lettered, labels for
unknown ids are counted, and two workers in one group each join their own partitions' labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from stream_helpers import produce_raw
from test_worker_integration import Collector, Worker, offsets, worker_env
from test_worker_integration import collectors as collectors  # the fixtures, shared
from test_worker_integration import own_broker as own_broker
from test_worker_integration import workers as workers

from ml.data import load_raw
from ml.model import load_model
from ml.schema import FEATURES
from ml.settings import load_settings

pytestmark = [pytest.mark.slow, pytest.mark.integration]

SETTINGS = load_settings(environ={})
CHAMPION, CHALLENGER = "models:/iris-classifier@champion", "models:/iris-classifier@challenger"


def iris_requests(prefix: str, repeat: int, seed: int) -> tuple[list[tuple[bytes, bytes]], dict[str, str]]:
    """The 150 Iris rows ``repeat`` times with a little noise (some land near the class borders,
    where the two models disagree), and the true species of each id."""
    frame = load_raw()
    rng = np.random.default_rng(seed)
    messages, truth = [], {}
    for r in range(repeat):
        noisy = frame[list(FEATURES)].to_numpy() + rng.normal(0, 0.25, size=(len(frame), 4))
        for i, (row, species) in enumerate(zip(np.clip(noisy, 0.1, None), frame["species"], strict=True)):
            rid = f"{prefix}-{r}-{i}"
            messages.append(
                (rid.encode(), orjson.dumps({"id": rid, **dict(zip(FEATURES, row.tolist(), strict=True))}))
            )
            truth[rid] = species
    return messages, truth


def labels_for(ids: list[str], truth: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [
        (i.encode(), orjson.dumps({"id": i, "label": truth[i], "labelled_at": "2026-12-07T00:00:00Z"}))
        for i in ids
    ]


def metric(worker: Worker, name: str, **labels: str) -> float:
    """The sum of the worker's ``name`` series that carry ``labels`` (from its /metrics)."""
    text = httpx.get(f"http://127.0.0.1:{worker.port}/metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        series, _, _ = head.partition("{")
        if series == name and all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def wait_metric(worker: Worker, name: str, at_least: float, **labels: str) -> None:
    import time

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert worker.proc.poll() is None, worker.output()[-3000:]
        if metric(worker, name, **labels) >= at_least:
            return
        time.sleep(0.2)
    raise AssertionError(
        f"{name}{labels} < {at_least}: {metric(worker, name, **labels)}\n{worker.output()[-3000:]}"
    )


def test_shadow_and_labels_through_a_restart(
    duel: Any, own_broker: str, tmp_path: Path, workers: list[Worker], collectors: list[Collector]
) -> None:
    env = worker_env(
        duel,
        own_broker,
        tmp_path,
        IRIS_SHADOW="true",
        IRIS_PERFORMANCE_WINDOW_SIZE="100",
        IRIS_DRIFT_ENABLED="false",
        IRIS_FEEDBACK_EARLY_SECONDS="2",  # the label for an id never scored is unmatched after 2 s
        IRIS_CANARY_PERCENT="30",  # and a canary: 30 % of the answers are the challenger's
    )
    messages, truth = iris_requests("f", 4, seed=21)
    produce_raw(own_broker, SETTINGS.requests_topic, messages)
    topics = (
        SETTINGS.predictions_topic,
        SETTINGS.shadow_topic,
        SETTINGS.feedback_dlq_topic,
        SETTINGS.performance_topic,
    )
    collector = Collector(own_broker, topics)
    collectors.append(collector)
    worker = Worker(env)
    workers.append(worker)
    worker.wait_ready()
    collector.wait_for(lambda: collector.count(SETTINGS.shadow_topic) >= len(messages), "every shadow record")

    # iris.shadow: agree is the offline comparison of the same rows
    champion = load_model(duel.client, CHAMPION, with_reference=False)
    challenger = load_model(duel.client, CHALLENGER, with_reference=False)
    rows = {k.decode(): orjson.loads(v) for k, v in messages}
    ids = sorted(rows)
    matrix = np.array([[rows[i][f] for f in FEATURES] for i in ids])
    ours, theirs = champion.estimator.predict(matrix), challenger.estimator.predict(matrix)
    shadow = {r.key.decode(): orjson.loads(r.value) for r in collector.records[SETTINGS.shadow_topic]}
    assert [shadow[i]["agree"] for i in ids] == (ours == theirs).tolist()
    assert (ours != theirs).sum() > 0, "the two models disagree on some rows"
    assert {(s["champion_version"], s["challenger_version"]) for s in shadow.values()} == {
        (champion.version, challenger.version)
    }
    answers = {r.key.decode(): orjson.loads(r.value) for r in collector.records[SETTINGS.predictions_topic]}
    from ml.experiment import Experiment
    from ml.model import ModelHolder

    sticky = Experiment(ModelHolder(), ModelHolder(), canary_percent=30)
    for i in ids:  # each answer from the model the id's bucket names, with that model's label
        alias = "challenger" if sticky.canary(i) else "champion"
        assert answers[i]["model_alias"] == alias
        assert answers[i]["label"] == shadow[i][f"{alias}_label"]
    assert 0.2 < sum(a["model_alias"] == "challenger" for a in answers.values()) / len(ids) < 0.4
    wait_metric(worker, "iris_shadow_comparisons_total", len(messages))

    # labels for the first half, a bad one of each kind and one for an unknown id, before the restart
    first, second = ids[: len(ids) // 2], ids[len(ids) // 2 :]
    bad = [
        (b"x-1", b"{not json"),
        (b"x-2", b'{"id": "x-2", "label": "rose"}'),
        (b"x-3", b'{"label": "setosa"}'),
    ]
    produce_raw(
        own_broker,
        SETTINGS.feedback_topic,
        [*labels_for(first, truth), *bad, *labels_for(["nobody"], {"nobody": "setosa"})],
    )
    wait_metric(worker, "iris_feedback_total", len(first), outcome="matched")
    wait_metric(worker, "iris_feedback_unmatched_total", 1)
    collector.wait_for(
        lambda: collector.count(SETTINGS.feedback_dlq_topic) >= 3, "the bad labels dead-lettered"
    )
    dead = {r.key: dict(r.headers) for r in collector.records[SETTINGS.feedback_dlq_topic]}
    assert {k: h["error"] for k, h in dead.items()} == {
        b"x-1": b"invalid_json",
        b"x-2": b"validation_error",
        b"x-3": b"validation_error",
    }
    assert all(h["source_topic"] == SETTINGS.feedback_topic.encode() for h in dead.values())
    assert worker.terminate() == 0

    # labels for the second half while no worker runs; a new worker rebuilds the join and joins them
    produce_raw(own_broker, SETTINGS.feedback_topic, labels_for(second, truth))
    again = Worker(env)
    workers.append(again)
    again.wait_ready()
    wait_metric(again, "iris_feedback_total", len(second), outcome="matched")
    assert metric(again, "iris_feedback_total", outcome="unmatched") == 0
    assert metric(again, "iris_feedback_total", outcome="duplicate") == 0  # the first half was committed
    assert "feedback_join_rebuilt" in again.output()

    # iris.performance: per window, per model, the same numbers scikit-learn gives on those ids
    collector.wait_for(
        lambda: collector.count(SETTINGS.performance_topic) >= len(ids) // 100, "performance windows"
    )
    windows = [orjson.loads(r.value) for r in collector.records[SETTINGS.performance_topic]]
    assert sum(w["labelled"] for w in windows) == (len(ids) // 100) * 100
    assert all(w["labelled"] == 100 for w in windows)
    by_id = dict(zip(ids, zip(ours.tolist(), theirs.tolist(), strict=True), strict=True))
    paired = [p for w in windows for p in w["paired"]]
    assert {(p["champion_version"], p["challenger_version"]) for p in paired} == {
        (champion.version, challenger.version)
    }
    assert sum(p["count"] for p in paired) == sum(w["labelled"] for w in windows)
    for w in windows:
        models = {(m["alias"], m["model_version"]): m for m in w["models"]}
        assert set(models) == {("champion", champion.version), ("challenger", challenger.version)}
        assert sum(m["count"] for m in w["models"]) == 2 * w["labelled"]
        for m in w["models"]:
            assert 0.5 < m["accuracy"] <= 1 and 0.5 < m["f1_macro"] <= 1
            matrix_sum = np.array(m["confusion"])
            assert matrix_sum.shape == (3, 3) and matrix_sum.sum() == w["labelled"]
    assert len(by_id) == len(ids)
    wait_metric(again, "iris_live_performance_windows_total", 1)
    assert (
        0.5 < metric(again, "iris_live_accuracy", alias="challenger", model_version=challenger.version) <= 1
    )
    # each closed window's Evidently classification report, beside the drift reports
    reports = tmp_path / "reports" / "performance"
    collector.wait_for(lambda: len(list(reports.glob("*.html"))) >= 2, "performance reports (HTML)")
    assert {p.stem.rsplit("-", 2)[1] for p in reports.glob("*.json")} >= {"champion", "challenger"}
    committed, ends = offsets(own_broker, f"{SETTINGS.consumer_group}.feedback", SETTINGS.feedback_topic)
    assert committed == ends, "the feedback offsets moved on"
    assert again.terminate() == 0


# Two members in one group need a real Kafka (the embedded mock refuses a late follower's SyncGroup).
@pytest.mark.real_kafka
def test_two_workers_each_join_the_labels_of_their_own_partitions(
    duel: Any, embedded_broker: str, tmp_path: Path, workers: list[Worker], collectors: list[Collector]
) -> None:
    import asyncio
    import uuid

    from kafka_fixtures import _ensure_topics

    suffix = uuid.uuid4().hex[:8]
    names = ("requests", "predictions", "dlq", "drift", "shadow", "feedback", "feedback_dlq", "performance")
    topics = {name: f"iris.{name}.{suffix}" for name in names}
    asyncio.run(_ensure_topics(embedded_broker, tuple(topics.values()), 4))
    env = worker_env(
        duel,
        embedded_broker,
        tmp_path,
        IRIS_CONSUMER_GROUP=f"iris-fb-{suffix}",
        IRIS_DRIFT_ENABLED="false",
        IRIS_PERFORMANCE_WINDOW_SIZE="50",
        **{f"IRIS_{name.upper()}_TOPIC": topic for name, topic in topics.items()},
    )
    for _ in range(2):
        workers.append(Worker(env))
    for worker in workers:
        worker.wait_ready()
    messages, truth = iris_requests("g", 4, seed=33)
    produce_raw(embedded_broker, topics["requests"], messages)
    collector = Collector(embedded_broker, (topics["predictions"],))
    collectors.append(collector)
    collector.wait_for(lambda: collector.count(topics["predictions"]) >= len(messages), "every prediction")
    scored = [metric(w, "iris_predictions_total") for w in workers]
    assert all(n > 0 for n in scored), f"both workers scored part of the traffic: {scored}"
    ids = sorted(truth)
    produce_raw(embedded_broker, topics["feedback"], labels_for(ids, truth))
    deadline = __import__("time").monotonic() + 120
    while sum(metric(w, "iris_feedback_total", outcome="matched") for w in workers) < len(ids):
        assert __import__("time").monotonic() < deadline, [w.output()[-2000:] for w in workers]
        __import__("time").sleep(0.2)
    matched = [metric(w, "iris_feedback_total", outcome="matched") for w in workers]
    # each worker joined exactly the labels of the requests it scored itself
    assert matched == scored, (matched, scored)
    assert all(metric(w, "iris_feedback_total", outcome="unmatched") == 0 for w in workers)
    assert all(w.terminate() == 0 for w in workers)
