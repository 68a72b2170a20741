# ruff: noqa: F811 - the fixtures are imported from test_worker_integration
"""KEDA's view of the worker group's lag (issue 15): its Kafka scaler's rules as pure functions,
then on a real Kafka the replica count the committed ScaledObject implies rises under a backlog
and returns to the minimum once one worker has drained it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import GroupCoordinatorNotAvailableError
from kafka_fixtures import REPO_ROOT
from stream_helpers import wait_until
from test_worker_integration import (
    Worker,
    private_topics,
    publish,
    worker_env,
    workers,  # noqa: F401 - fixture
)

from consumers.kafka_config import build_kafka_config
from consumers.keda_lag import KedaTrigger, desired_replicas, partition_lag, total_lag
from consumers.publish import sample_messages
from ml.settings import Settings


def scaled_object() -> dict[str, Any]:
    docs = yaml.safe_load_all((REPO_ROOT / "deploy" / "k8s" / "base" / "worker.yaml").read_text())
    return next(d for d in docs if d and d["kind"] == "ScaledObject")


# ------------------------------------------------------------------ the scaler's rules


def test_a_partition_without_a_committed_offset_counts_by_the_reset_policy() -> None:
    latest, earliest = (
        KedaTrigger(100, offset_reset_policy="latest"),
        KedaTrigger(100, offset_reset_policy="earliest"),
    )
    assert partition_lag(None, 5000, latest) == 1
    assert partition_lag(-1, 5000, earliest) == 5000
    no_invalid = KedaTrigger(100, offset_reset_policy="earliest", scale_to_zero_on_invalid_offset=True)
    assert partition_lag(None, 5000, no_invalid) == 0
    assert partition_lag(4000, 5000, latest) == 1000


def test_the_total_is_capped_at_the_partitions_unless_idle_consumers_are_allowed() -> None:
    committed = dict.fromkeys(range(4), 0)
    ends = dict.fromkeys(range(4), 10_000)
    assert total_lag(committed, ends, KedaTrigger(2000)) == 8000  # 4 partitions x 2000
    assert total_lag(committed, ends, KedaTrigger(2000, allow_idle_consumers=True)) == 40_000


def test_replicas_follow_the_lag_within_the_bounds() -> None:
    trigger = KedaTrigger(2000, activation_lag_threshold=10, min_replicas=1, max_replicas=4)
    assert desired_replicas(0, trigger) == 1
    assert desired_replicas(10, trigger) == 1
    assert desired_replicas(2001, trigger) == 2
    assert desired_replicas(8000, trigger) == 4
    assert desired_replicas(80_000, trigger) == 4
    assert desired_replicas(5, KedaTrigger(2000, activation_lag_threshold=10, min_replicas=0)) == 0


def test_the_committed_scaled_object_reads_as_expected() -> None:
    trigger = KedaTrigger.from_scaled_object(scaled_object())
    assert (
        trigger.offset_reset_policy == build_kafka_config(Settings()).consumer_options()["auto_offset_reset"]
    )
    assert trigger.allow_idle_consumers is False
    assert 1 <= trigger.min_replicas < trigger.max_replicas


# ------------------------------------------------------------------ on a real Kafka


async def _group_offsets(
    bootstrap: str, group: str, topic: str, partitions: int
) -> tuple[dict[int, int | None], dict[int, int]]:
    """(committed offset per partition, None where there is none; log-end offset per partition)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await consumer.start()
    await admin.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends = await consumer.end_offsets(tps)
        for attempt in range(30):  # a fresh cluster creates __consumer_offsets on first use
            try:
                found = await admin.list_consumer_group_offsets(group, partitions=tps)
                break
            except GroupCoordinatorNotAvailableError:
                if attempt == 29:
                    raise
                await asyncio.sleep(0.5)
        committed = {tp.partition: (found[tp].offset if tp in found else None) for tp in tps}
        return committed, {tp.partition: int(ends[tp]) for tp in tps}
    finally:
        await admin.close()
        await consumer.stop()


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.real_kafka
def test_keda_wants_more_replicas_under_a_backlog_and_the_minimum_once_it_drains(
    registry: Any, embedded_broker: str, tmp_path: Path, workers: list[Worker]
) -> None:
    trigger = KedaTrigger.from_scaled_object(scaled_object())
    partitions = trigger.max_replicas  # the manifest's bound: one worker per partition
    suffix, topics, extra = private_topics(embedded_broker, partitions)
    group = f"iris-keda-{suffix}"

    def replicas() -> tuple[int, int]:
        committed, ends = asyncio.run(_group_offsets(embedded_broker, group, topics["requests"], partitions))
        lag = total_lag(committed, ends, trigger)
        return lag, desired_replicas(lag, trigger)

    messages = sample_messages(5 * partitions * trigger.lag_threshold // 4, seed=23)
    publish(embedded_broker, messages, requests_topic=topics["requests"])
    # no worker has committed yet: under offsetResetPolicy earliest the whole log is lag
    lag, wanted = replicas()
    assert lag == partitions * trigger.lag_threshold, "capped at partitions x lagThreshold"
    assert wanted == trigger.max_replicas

    worker = Worker(worker_env(registry, embedded_broker, tmp_path, IRIS_CONSUMER_GROUP=group, **extra))
    workers.append(worker)
    worker.wait_ready()
    seen: list[int] = []

    def drained() -> bool:
        lag, wanted = replicas()
        seen.append(wanted)
        return lag == 0

    wait_until(drained, "the worker's committed offsets reach the log end", deadline_s=120)
    assert seen[-1] == trigger.min_replicas
    assert seen == sorted(seen, reverse=True), f"the wanted replicas only fall while it drains: {seen}"
    assert worker.terminate() == 0


# ------------------------------------------------------------------ KEDA's own scaler

KEDA_SCALER = REPO_ROOT / ".cache" / "keda" / "keda-kafka-lag"


def keda_says(metadata: dict[str, str]) -> dict[str, Any]:
    """What KEDA's own Kafka scaler (tools/keda-kafka-lag, built from KEDA's Go module) reports."""
    import json
    import subprocess

    shown = subprocess.run(
        [str(KEDA_SCALER), *(f"{k}={v}" for k, v in metadata.items())],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    return dict(json.loads(shown.stdout))


async def _commit(bootstrap: str, group: str, offsets: dict[TopicPartition, int]) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit(offsets)
    finally:
        await consumer.stop()


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.real_kafka
def test_kedas_own_kafka_scaler_agrees_with_our_reading_of_its_rules(embedded_broker: str) -> None:
    """KEDA's scaler, built from its Go module (``make keda-scaler``), run with the committed
    ScaledObject's trigger metadata against the test cluster: its lag metric and activity match
    :mod:`consumers.keda_lag` with no commits, partial commits and full commits, under both reset
    policies and with idle consumers allowed or not."""
    if not KEDA_SCALER.is_file():
        pytest.skip(
            f"KEDA's scaler is not built: run `make keda-scaler` (Go, ~2 GB of modules) for {KEDA_SCALER}"
        )
    manifest = scaled_object()
    (trigger_spec,) = (t for t in manifest["spec"]["triggers"] if t["type"] == "kafka")
    partitions = 4
    suffix, topics, _ = private_topics(embedded_broker, partitions)
    group = f"iris-keda-own-{suffix}"
    publish(embedded_broker, sample_messages(6000, seed=29), requests_topic=topics["requests"])
    tps = [TopicPartition(topics["requests"], p) for p in range(partitions)]
    readings: list[str] = []
    for stage in ("none", "partial", "all"):
        committed, ends = asyncio.run(_group_offsets(embedded_broker, group, topics["requests"], partitions))
        if stage == "partial":
            asyncio.run(_commit(embedded_broker, group, {tps[0]: ends[0], tps[1]: ends[1] // 2}))
        elif stage == "all":
            asyncio.run(_commit(embedded_broker, group, {tp: ends[tp.partition] for tp in tps}))
        committed, ends = asyncio.run(_group_offsets(embedded_broker, group, topics["requests"], partitions))
        for variant in (
            {},
            {"offsetResetPolicy": "latest"},
            {"allowIdleConsumers": "true"},
            {"lagThreshold": "500"},
        ):
            metadata = {
                **{k: str(v) for k, v in trigger_spec["metadata"].items()},
                "bootstrapServers": embedded_broker.split(",")[0],
                "consumerGroup": group,
                "topic": topics["requests"],
                **variant,
            }
            trigger = KedaTrigger.from_scaled_object(
                {"spec": {**manifest["spec"], "triggers": [{"type": "kafka", "metadata": metadata}]}}
            )
            ours = total_lag(committed, ends, trigger)
            keda = keda_says(metadata)
            assert keda["lag"] == ours, f"{stage} {variant}: KEDA {keda}, ours {ours} ({committed}, {ends})"
            assert keda["active"] == (ours > trigger.activation_lag_threshold), (stage, variant, keda)
            assert keda["target"] == trigger.lag_threshold
            readings.append(f"{stage}{variant or ''}: {keda['lag']}{' active' if keda['active'] else ''}")
    print(
        f"\nKEDA's own scaler and consumers/keda_lag.py agree on {len(readings)} readings: "
        + "; ".join(readings)
    )
