"""The sample publisher: distributions, shift, malformed kinds, and a real publish."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import datetime

import numpy as np
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from kafka_fixtures import REPO_ROOT, start_embedded_broker, stop_broker

from consumers.publish import BAD_KINDS, bad_message, sample_messages, sample_rows
from ml.data import load_raw
from ml.messages import decode_batch
from ml.schema import FEATURES, check_record


def test_rows_are_valid_requests_with_stable_ids() -> None:
    rows = sample_rows(300, seed=5)
    assert [r["id"] for r in rows[:3]] == ["r-5-0", "r-5-1", "r-5-2"]
    for row in rows:
        check_record(row, require_id=True)


def test_rows_follow_the_iris_distribution() -> None:
    rows = sample_rows(3000, seed=1)
    means = np.array([[r[f] for f in FEATURES] for r in rows]).mean(axis=0)
    expected = load_raw()[list(FEATURES)].mean().to_numpy()
    assert np.allclose(means, expected, atol=0.15)


def test_shift_moves_petal_features_by_standard_deviations() -> None:
    base = np.array([[r[f] for f in FEATURES] for r in sample_rows(3000, seed=2)]).mean(axis=0)
    shifted = np.array([[r[f] for f in FEATURES] for r in sample_rows(3000, seed=2, shift=1.0)]).mean(axis=0)
    stds = load_raw()[list(FEATURES)].std().to_numpy()
    delta = (shifted - base) / stds
    assert np.allclose(delta[:2], 0.0, atol=0.01)  # sepals untouched
    assert np.allclose(delta[2:], 1.0, atol=0.05)  # petals moved by one standard deviation


@pytest.mark.parametrize(("kind", "reason"), BAD_KINDS)
def test_each_malformed_kind_gets_its_dlq_reason(kind: str, reason: str) -> None:
    _, value = bad_message(kind, 0)
    (rejected,) = decode_batch([value], 1_000_000).bad
    assert rejected.code == reason


def test_bad_messages_are_interleaved_and_varied() -> None:
    messages = sample_messages(100, bad=16, seed=3)
    assert len(messages) == 116
    positions = [i for i, (key, _) in enumerate(messages) if key and key.startswith(b"bad-")]
    assert len(positions) == 16
    assert positions[0] > 0 and positions[-1] < 115  # spread, not bunched at one end
    decoded = decode_batch([value for _, value in messages], 1_000_000)
    assert len(decoded.records) == 100
    assert {b.code for b in decoded.bad} == {reason for _, reason in BAD_KINDS}


def test_with_a_rate_sent_at_is_when_each_message_is_due() -> None:
    messages = sample_messages(8, bad=2, seed=3, rate=4.0)  # one message every 250 ms
    stamps = {}
    for position, (_key, value) in enumerate(messages):
        try:
            body = orjson.loads(value)
        except orjson.JSONDecodeError:
            continue
        if isinstance(body, dict) and "sent_at" in body and not body["id"].startswith("bad-"):
            stamps[position] = datetime.fromisoformat(body["sent_at"].replace("Z", "+00:00"))
    assert len(stamps) == 8
    first = min(stamps)
    for position, moment in stamps.items():
        expected = (position - first) * 0.25
        assert abs((moment - stamps[first]).total_seconds() - expected) < 0.002, (position, moment)


def test_without_a_rate_all_rows_share_one_sent_at() -> None:
    assert len({row["sent_at"] for row in sample_rows(50, seed=4)}) == 1


@pytest.mark.slow
@pytest.mark.integration
def test_publish_command_sends_everything(tmp_path: object) -> None:
    proc, bootstrap = start_embedded_broker()
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "iris_scorer.cli",
                "publish",
                "--count",
                "500",
                "--bad",
                "7",
                "--seed",
                "4",
                "--rate",
                "0",
            ],
            cwd=REPO_ROOT,
            env={"IRIS_KAFKA_BOOTSTRAP_SERVERS": bootstrap, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert "published 507 messages (500 valid, 7 malformed" in result.stdout
        values = asyncio.run(_read_all(bootstrap, "iris.requests", 507))
        ids = {orjson.loads(v)["id"] for v in values if v.startswith(b'{"id":"r-')}
        assert ids == {f"r-4-{n}" for n in range(500)}
    finally:
        stop_broker(proc)


def test_publish_to_a_missing_broker_fails_with_one_sentence() -> None:
    from kafka_fixtures import free_port

    result = subprocess.run(
        [sys.executable, "-m", "iris_scorer.cli", "publish", "--count", "1"],
        cwd=REPO_ROOT,
        env={"IRIS_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert "IRIS_KAFKA_BOOTSTRAP_SERVERS" in result.stderr
    assert "Traceback" not in result.stderr


async def _read_all(bootstrap: str, topic: str, count: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(4)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        values: list[bytes] = []
        for _ in range(100):
            for records in (await consumer.getmany(timeout_ms=200)).values():
                values.extend(r.value for r in records)
            if len(values) >= count:
                break
        return values
    finally:
        await consumer.stop()
