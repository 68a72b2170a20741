"""`iris-scorer promote --from-live` against a real registry and a real broker's iris.performance:
it promotes a challenger that is not worse on the same labelled ids (and `rollback` undoes it),
keeps the aliases for a worse one, and refuses with a sentence when there are too few labels."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
import pytest
from kafka_fixtures import _ensure_topics
from stream_helpers import produce_raw
from typer.testing import CliRunner

from iris_scorer.cli import app
from ml.register import current_alias_version, promote

pytestmark = pytest.mark.integration

GOOD = [[30, 0, 0], [0, 28, 2], [0, 2, 28]]
WORSE = [[30, 0, 0], [0, 20, 10], [0, 10, 20]]


def _window(champion: str, challenger: str, ours: list[list[int]], theirs: list[list[int]]) -> bytes:
    count = sum(map(sum, ours))
    return orjson.dumps(
        {
            "labelled": count,
            "models": [],
            "paired": [
                {
                    "champion_version": champion,
                    "challenger_version": challenger,
                    "count": count,
                    "champion": {"confusion": ours},
                    "challenger": {"confusion": theirs},
                }
            ],
        }
    )


@pytest.fixture
def live(fresh_registry: Any, embedded_broker: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    topic = f"iris.performance.{uuid.uuid4().hex[:8]}"
    asyncio.run(_ensure_topics(embedded_broker, (topic,), 2))
    rival = fresh_registry.train_version("random_forest")
    promote(fresh_registry.client, "iris-classifier", rival, "challenger")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", fresh_registry.tracking_uri)
    monkeypatch.setenv("IRIS_KAFKA_BOOTSTRAP_SERVERS", embedded_broker)
    monkeypatch.setenv("IRIS_PERFORMANCE_TOPIC", topic)
    return {"registry": fresh_registry, "topic": topic, "bootstrap": embedded_broker, "challenger": rival}


def _run(*args: str) -> Any:
    return CliRunner().invoke(app, ["promote", "--from-live", *args])


def test_a_challenger_not_worse_on_the_same_ids_is_promoted_and_rollback_undoes_it(live) -> None:
    champion = live["registry"].champion_version
    older = _window(champion, "99", GOOD, WORSE)  # another pair's evidence does not count
    produce_raw(
        live["bootstrap"],
        live["topic"],
        [(None, _window(champion, live["challenger"], WORSE, GOOD))] * 3 + [(None, older)],
    )
    result = _run("--min-labelled", "270")
    assert result.exit_code == 0, result.output
    assert (
        "on 270 labelled ids in 3 windows" in result.output
        and "it wins" in result.output
        and "iris-classifier@champion: v" in result.output
    )
    client = live["registry"].client
    assert current_alias_version(client, "iris-classifier", "champion") == live["challenger"]
    back = CliRunner().invoke(app, ["rollback"])
    assert back.exit_code == 0, back.output
    assert current_alias_version(client, "iris-classifier", "champion") == champion


def test_a_worse_challenger_leaves_the_aliases(live) -> None:
    champion = live["registry"].champion_version
    produce_raw(
        live["bootstrap"], live["topic"], [(None, _window(champion, live["challenger"], GOOD, WORSE))] * 2
    )
    result = _run("--min-labelled", "100", "--margin", "0.05")
    assert result.exit_code == 0, result.output
    assert "the challenger is worse" in result.output and "the aliases stay" in result.output
    assert current_alias_version(live["registry"].client, "iris-classifier", "champion") == champion


def test_a_tie_promotes(live) -> None:
    champion = live["registry"].champion_version
    produce_raw(live["bootstrap"], live["topic"], [(None, _window(champion, live["challenger"], GOOD, GOOD))])
    result = _run("--min-labelled", "60")
    assert result.exit_code == 0 and "ties" in result.output
    assert current_alias_version(live["registry"].client, "iris-classifier", "champion") == live["challenger"]


def test_too_few_labels_is_refused_with_a_sentence(live) -> None:
    champion = live["registry"].champion_version
    produce_raw(
        live["bootstrap"], live["topic"], [(None, _window(champion, live["challenger"], WORSE, GOOD))]
    )
    result = _run("--min-labelled", "500")
    assert result.exit_code == 2
    assert (
        "not enough live evidence: 90 labelled ids" in result.output and "--min-labelled 500" in result.output
    )
    assert current_alias_version(live["registry"].client, "iris-classifier", "champion") == champion


def test_without_a_challenger_it_says_how_to_set_one(fresh_registry, embedded_broker, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", fresh_registry.tracking_uri)
    monkeypatch.setenv("IRIS_KAFKA_BOOTSTRAP_SERVERS", embedded_broker)
    result = _run()
    assert result.exit_code == 2
    assert "has no @challenger" in result.output and "promote --alias challenger --version N" in result.output
    assert CliRunner().invoke(app, ["promote", "--from-live", "--version", "1"]).exit_code == 2


def test_windows_produced_as_the_worker_produces_them_are_all_read(live) -> None:
    """Keyless records in bulk (consumers.produce.produce_all): a reader whose partitions reset to
    "latest" after its seek to the beginning read none of these (found by the demo)."""
    from aiokafka import AIOKafkaProducer

    from consumers.produce import Outgoing, produce_all

    champion = live["registry"].champion_version
    window = _window(champion, live["challenger"], WORSE, GOOD)

    async def bulk() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=live["bootstrap"], linger_ms=0)
        await producer.start()
        try:
            await produce_all(producer, [Outgoing(live["topic"], None, window)] * 5, max_request_size=1 << 20)
        finally:
            await producer.stop()

    asyncio.run(bulk())
    result = _run("--min-labelled", "450")
    assert result.exit_code == 0, result.output
    assert "on 450 labelled ids in 5 windows" in result.output
