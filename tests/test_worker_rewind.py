# ruff: noqa: F811 - the fixtures are imported from test_worker_integration
"""A failed batch is rewound on a broker process (issue 14, point 22): consumed again from its
first offset on every partition it held, not just counted as a nack."""

from __future__ import annotations

import re
import sys
from collections import Counter as Tally
from pathlib import Path
from typing import Any

import pytest
from kafka_fixtures import REPO_ROOT
from stream_helpers import Placed, produce_records
from test_worker_integration import (
    SETTINGS,
    Collector,
    Worker,
    collectors,  # noqa: F401 - fixture
    offsets,
    own_broker,  # noqa: F401 - fixture
    prediction_ids,
    worker_env,
    workers,  # noqa: F401 - fixture
)

from consumers.publish import sample_messages

pytestmark = [pytest.mark.slow, pytest.mark.integration]

PER_PARTITION = 100


def failing_once(port: int) -> list[str]:
    return [sys.executable, str(REPO_ROOT / "tests" / "stream_worker.py"), "0", str(port), "1"]


def test_a_failed_batch_is_consumed_again_from_its_first_offsets_on_every_partition(
    registry: Any, own_broker: str, tmp_path: Path, workers: list[Worker], collectors: list[Collector]
) -> None:
    messages = sample_messages(4 * PER_PARTITION, seed=61)
    placed: list[Placed] = [(n % 4, key, value, [], None) for n, (key, value) in enumerate(messages)]
    positions = produce_records(own_broker, SETTINGS.requests_topic, placed)
    where = {(key or b"").decode(): pos for (key, _), pos in zip(messages, positions, strict=True)}
    collector = Collector(own_broker, (SETTINGS.predictions_topic,))
    collectors.append(collector)
    env = worker_env(
        registry, own_broker, tmp_path, IRIS_BATCH_MAX_RECORDS="10000", IRIS_BATCH_MAX_WAIT_MS="500"
    )
    worker = Worker(env, failing_once)
    workers.append(worker)
    worker.wait_ready()
    collector.wait_for(lambda: set(prediction_ids(collector)) >= set(where), "every request scored")
    collector.wait_for(lambda: (lambda c, e: c == e)(*offsets(own_broker)), "offsets committed to the end")
    failed = re.search(r"event=batch_failed.* size=(\d+)", worker.output())
    assert failed, worker.output()[-3000:]
    size = int(failed.group(1))
    seen = Tally(prediction_ids(collector))
    twice = [where[i] for i, n in seen.items() if n == 2]
    assert max(seen.values()) == 2 and len(twice) == size, "exactly the failed batch was produced twice"
    by_partition: dict[int, list[int]] = {}
    for partition, offset in twice:
        by_partition.setdefault(partition, []).append(offset)
    assert len(by_partition) >= 2, f"the failed batch held one partition only: {by_partition.keys()}"
    for partition, again in by_partition.items():
        # consumed again from the batch's first offset (0: a fresh topic), with no gap
        assert sorted(again) == list(range(len(again))), f"partition {partition} was not rewound to its start"
    assert worker.terminate() == 0
