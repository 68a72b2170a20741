"""REST with a challenger: canary requests (sticky by id, else by body) answered by it, shadow
comparisons recorded as metrics only, and both aliases hot-reloaded through the lifespan."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import warnings
from typing import Any

import numpy as np
import orjson
import pytest

from app.server import create_app
from ml.experiment import Experiment
from ml.metrics import Metrics
from ml.model import ModelHolder, load_model
from ml.schema import FEATURES

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

CHAMPION, CHALLENGER = "models:/iris-classifier@champion", "models:/iris-classifier@challenger"


@pytest.fixture(scope="module")
def models(duel: Any) -> tuple[Any, Any]:
    champion = load_model(duel.client, CHAMPION, with_reference=False)
    challenger = dataclasses.replace(
        load_model(duel.client, CHALLENGER, with_reference=False), role="challenger"
    )
    return champion, challenger


def _record(row: np.ndarray, **extra: Any) -> dict[str, Any]:
    return {**dict(zip(FEATURES, [float(x) for x in row], strict=True)), **extra}


def _rows(n: int) -> np.ndarray:
    rng = np.random.default_rng(11)
    return np.array([6.3, 2.8, 4.9, 1.6]) + rng.normal(0, [0.5, 0.3, 0.5, 0.3], size=(n, 4))


def test_canary_requests_are_answered_by_the_challenger_and_stay_there(duel, models) -> None:
    champion, challenger = models
    settings = duel.settings(canary_percent=25)
    app = create_app(settings, holder=ModelHolder(champion), challenger=ModelHolder(challenger))
    expected = Experiment(ModelHolder(champion), ModelHolder(challenger), canary_percent=25)
    rows = _rows(200)
    with TestClient(app) as client:
        seen: dict[str, str] = {}
        for attempt in range(2):  # the retry of every request lands on the same model
            for i, row in enumerate(rows):
                got = client.post("/predict", json=_record(row, id=f"q-{i}")).json()
                alias = "challenger" if expected.canary(f"q-{i}") else "champion"
                assert got["model_alias"] == alias
                version = challenger.version if alias == "challenger" else champion.version
                assert got["model_version"] == version
                if attempt:
                    assert seen[f"q-{i}"] == got["model_alias"]
                seen[f"q-{i}"] = got["model_alias"]
        assert 20 < sum(a == "challenger" for a in seen.values()) < 80
        # without an id, the body decides: the same bytes, the same model
        answers = {
            client.post("/invocations", json={"instances": [_record(rows[0])]}).json()["predictions"][0]
            for _ in range(5)
        }
        assert len(answers) == 1
        batch = client.post("/predict", json={"instances": [_record(r, id="b-1") for r in rows[:3]]}).json()
        assert batch["model_alias"] == ("challenger" if expected.canary("b-1") else "champion")
        assert {p["model_alias"] for p in batch["predictions"]} == {batch["model_alias"]}
        text = client.get("/metrics").text
    assert (
        f'iris_model_info{{alias="challenger",name="iris-classifier",version="{challenger.version}"}} 1.0'
        in text
    )


def test_shadow_records_agreement_as_metrics_and_answers_with_the_champion(duel, models) -> None:
    champion, challenger = models
    metrics = Metrics()
    settings = duel.settings(shadow=True)
    app = create_app(
        settings, holder=ModelHolder(champion), challenger=ModelHolder(challenger), metrics=metrics
    )
    rows = _rows(300)
    offline = champion.estimator.predict(rows) == challenger.estimator.predict(rows)
    assert 0 < offline.sum() < len(rows)
    with TestClient(app) as client:
        for i, row in enumerate(rows):
            got = client.post("/predict", json=_record(row, id=f"s-{i}")).json()
            assert (got["model_alias"], got["model_version"]) == ("champion", champion.version)
    labels = {"champion_version": champion.version, "challenger_version": challenger.version}
    value = metrics.registry.get_sample_value
    assert value("iris_shadow_agreement_ratio", labels) == pytest.approx(offline.mean(), abs=1e-6)
    assert value("iris_shadow_comparisons_total", {**labels, "agree": "true"}) == offline.sum()
    assert value("iris_shadow_comparisons_total", {**labels, "agree": "false"}) == (~offline).sum()
    assert (
        value(
            "iris_predictions_total",
            {"source": "rest", "model_version": challenger.version, "label": "virginica"},
        )
        is None
    )  # shadow answers are not predictions


def test_the_lifespan_watches_the_challenger_alias(duel) -> None:
    settings = duel.settings(shadow=True, model_poll_seconds=0.2)
    app = create_app(settings)
    with TestClient(app) as client:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if app.state.iris.experiment.challenger.ready and app.state.iris.holder.ready:
                break
            time.sleep(0.1)
        rival = app.state.iris.experiment.challenger.current
        assert rival.role == "challenger"
        assert rival.version == str(
            duel.client.get_model_version_by_alias("iris-classifier", "challenger").version
        )
        assert client.get("/ready").status_code == 200


@pytest.mark.integration
def test_post_feedback_publishes_the_label_to_the_feedback_topic(duel, models, embedded_broker) -> None:
    from consumers.feedback_sink import KafkaFeedbackSink

    champion, _ = models
    settings = duel.settings(kafka_bootstrap_servers=embedded_broker)
    app = create_app(settings, holder=ModelHolder(champion), feedback=KafkaFeedbackSink(settings))
    with TestClient(app) as client:
        label = {"id": "fb-1", "label": "virginica", "labelled_at": "2026-12-07T01:00:00Z"}
        got = client.post("/feedback", json=label)
        assert got.status_code == 202, got.text
        body = got.json()
        assert body["status"] == "accepted" and body["topic"] == settings.feedback_topic
        bad = client.post("/feedback", json={"id": "fb-2", "label": "rose"})
        assert bad.status_code == 422 and "label: 'rose' is not one of" in bad.text, bad.text
        assert (
            client.post("/feedback", content=b"{", headers={"content-type": "application/json"}).status_code
            == 400
        )
        assert client.post("/feedback", json={"label": "setosa"}).status_code == 422
    record = asyncio.run(
        _read_one(embedded_broker, settings.feedback_topic, body["partition"], body["offset"])
    )
    assert record.key == b"fb-1" and orjson.loads(record.value) == label


async def _read_one(bootstrap: str, topic: str, partition: int, offset: int) -> Any:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, offset)
        return await asyncio.wait_for(consumer.getone(tp), 30)
    finally:
        await consumer.stop()


def test_post_feedback_without_a_broker_is_a_503_naming_it(duel, models) -> None:
    from kafka_fixtures import free_port

    from consumers.feedback_sink import KafkaFeedbackSink

    champion, _ = models
    settings = duel.settings(kafka_bootstrap_servers=f"127.0.0.1:{free_port()}")
    sink = KafkaFeedbackSink(settings)
    app = create_app(settings, holder=ModelHolder(champion), feedback=sink)
    with TestClient(app) as client:
        got = client.post("/feedback", json={"id": "fb-1", "label": "setosa"})
        assert got.status_code == 503
        assert settings.kafka_bootstrap_servers in got.text and settings.feedback_topic in got.text
        assert client.post("/predict", json=_record(_rows(1)[0])).status_code == 200  # scoring goes on
