"""The stream handler in memory: FastStream's TestKafkaBroker delivers batches to the real subscriber."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
import pytest
from faststream.kafka import TestKafkaBroker
from sklearn.linear_model import LogisticRegression

from consumers import worker
from consumers.handler import Outgoing, StreamHandler
from ml.data import load_raw
from ml.metrics import Metrics
from ml.model import LoadedModel, ModelHolder, ModelRef
from ml.predict import Scorer, score
from ml.schema import FEATURES
from ml.settings import load_settings

SETTINGS = load_settings(environ={})


@pytest.fixture(scope="module")
def tiny_model() -> LoadedModel:
    frame = load_raw()
    estimator = LogisticRegression(max_iter=500).fit(frame[list(FEATURES)].to_numpy(), frame["species"])
    return LoadedModel(
        ref=ModelRef(name="iris-classifier", version="7", alias="champion", run_id=None),
        uri="models:/iris-classifier@champion",
        estimator=estimator,
        classes=np.asarray([str(c) for c in estimator.classes_]),
    )


class Capture:
    """A sink that keeps what would be produced (or fails, to test the error path)."""

    def __init__(self, fail: bool = False) -> None:
        self.sent: list[Outgoing] = []
        self.calls = 0
        self.fail = fail

    async def __call__(self, outgoing: Sequence[Outgoing]) -> None:
        self.calls += 1
        if self.fail:
            raise ConnectionError("broker gone")
        self.sent.extend(outgoing)

    def to(self, topic: str) -> list[Outgoing]:
        return [o for o in self.sent if o.topic == topic]


def make_handler(model: LoadedModel, sink: Capture) -> tuple[StreamHandler, Metrics]:
    metrics = Metrics()
    handler = StreamHandler(
        Scorer(ModelHolder(model), metrics),
        sink,
        predictions_topic=SETTINGS.predictions_topic,
        dlq_topic=SETTINGS.dlq_topic,
        max_message_bytes=SETTINGS.max_message_bytes,
    )
    return handler, metrics


def request(n: int, **overrides: Any) -> bytes:
    body: dict[str, Any] = {
        "id": f"r-{n}",
        "sepal_length": 5.0 + (n % 7) * 0.3,
        "sepal_width": 3.0,
        "petal_length": 1.0 + (n % 5) * 1.2,
        "petal_width": 0.2 + (n % 5) * 0.5,
    }
    body.update(overrides)
    return orjson.dumps({k: v for k, v in body.items() if v is not ...})


BAD: list[tuple[bytes, str]] = [
    (b"{not json", "invalid_json"),  # broken syntax
    (b'{"id": "x", "sepal_length": NaN}', "invalid_json"),  # NaN literal is not JSON
    (b"\xff\xfe\x00", "invalid_json"),  # invalid UTF-8
    (request(1, petal_width=...), "validation_error"),  # missing field
    (request(2, sepal_length=-1.0), "validation_error"),  # negative value
    (request(3, sepal_width="3.0"), "validation_error"),  # string value
    (request(4, id=...), "validation_error"),  # id required on the stream
    (b"", "empty"),  # empty value
]


async def deliver(model: LoadedModel, sink: Capture, values: list[bytes]) -> Metrics:
    handler, metrics = make_handler(model, sink)

    async def on_batch(batch: Sequence[Any]) -> None:
        await handler.handle(batch)

    broker = worker.create_broker(SETTINGS, on_batch)
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish_batch(*values, topic=SETTINGS.requests_topic)
    return metrics


def test_valid_batch_is_scored_in_one_call_and_keyed_by_id(tiny_model: LoadedModel) -> None:
    sink = Capture()
    values = [request(n) for n in range(50)]
    metrics = asyncio.run(deliver(tiny_model, sink, values))
    predictions = sink.to(SETTINGS.predictions_topic)
    assert len(predictions) == 50 and not sink.to(SETTINGS.dlq_topic)
    assert sink.calls == 1  # one produce round per batch
    decoded = [orjson.loads(p.value or b"") for p in predictions]
    assert [p.key for p in predictions] == [f"r-{n}".encode() for n in range(50)]
    matrix = np.array([[orjson.loads(v)[f] for f in FEATURES] for v in values])
    assert [d["label"] for d in decoded] == score(tiny_model, matrix).labels.tolist()
    assert {d["model_version"] for d in decoded} == {"7"}
    assert {d["source"] for d in decoded} == {"stream"}
    assert metrics.batch_size.labels(source="stream")._sum.get() == 50


def test_invalid_batch_goes_to_the_dlq_with_bytes_and_reasons(tiny_model: LoadedModel) -> None:
    sink = Capture()
    metrics = asyncio.run(deliver(tiny_model, sink, [value for value, _ in BAD]))
    dead = sink.to(SETTINGS.dlq_topic)
    assert not sink.to(SETTINGS.predictions_topic)
    assert [d.value for d in dead] == [value for value, _ in BAD]
    for record, (_, reason) in zip(dead, BAD, strict=True):
        headers = dict(record.headers or [])
        assert headers["error"] == reason.encode()
        assert headers["error_detail"]
        assert headers["source_topic"] == SETTINGS.requests_topic.encode()
        assert int(headers["source_partition"]) >= 0 and int(headers["source_offset"]) >= 0
    assert metrics.dlq_messages.labels(reason="validation_error")._value.get() == 4
    assert metrics.dlq_messages.labels(reason="invalid_json")._value.get() == 3
    assert metrics.prediction_errors.labels(source="stream", reason="empty")._value.get() == 1


def test_mixed_batch_splits_valid_and_bad(tiny_model: LoadedModel) -> None:
    sink = Capture()
    values: list[bytes] = []
    for n in range(20):
        values.append(request(100 + n))
        values.append(BAD[n % len(BAD)][0])
    asyncio.run(deliver(tiny_model, sink, values))
    assert sorted(p.key or b"" for p in sink.to(SETTINGS.predictions_topic)) == sorted(
        f"r-{100 + n}".encode() for n in range(20)
    )
    assert len(sink.to(SETTINGS.dlq_topic)) == 20


def test_dlq_keeps_the_original_key(tiny_model: LoadedModel) -> None:
    sink = Capture()
    handler, _ = make_handler(tiny_model, sink)

    async def run() -> None:
        async def on_batch(batch: Sequence[Any]) -> None:
            await handler.handle(batch)

        broker = worker.create_broker(SETTINGS, on_batch)
        async with TestKafkaBroker(broker) as test_broker:
            await test_broker.publish(b"oops", topic=SETTINGS.requests_topic, key=b"k-1")

    asyncio.run(run())
    (dead,) = sink.to(SETTINGS.dlq_topic)
    assert dead.key == b"k-1" and dead.value == b"oops"


class FakeMessage:
    def __init__(self, batch: Sequence[Any]) -> None:
        self.raw_message = tuple(batch)
        self.acked = self.nacked = 0

    async def ack(self) -> None:
        self.acked += 1

    async def nack(self) -> None:
        self.nacked += 1


def test_a_failed_produce_rewinds_instead_of_committing(
    tiny_model: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker, "RETRY_AFTER_FAILURE_S", 0.0)
    from aiokafka import ConsumerRecord

    record = ConsumerRecord(SETTINGS.requests_topic, 0, 5, 0, 0, None, request(1), None, 0, 10, [])
    for fail in (True, False):
        sink = Capture(fail=fail)
        handler, _ = make_handler(tiny_model, sink)
        message = FakeMessage([record])
        asyncio.run(worker._process(_call(handler), message))  # type: ignore[arg-type]
        assert (message.acked, message.nacked) == ((0, 1) if fail else (1, 0))


def _call(handler: StreamHandler) -> Any:
    async def on_batch(batch: Sequence[Any]) -> None:
        await handler.handle(batch)

    return on_batch


def test_no_model_yet_rewinds_the_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker, "RETRY_AFTER_FAILURE_S", 0.0)
    from aiokafka import ConsumerRecord

    sink = Capture()
    handler = StreamHandler(
        Scorer(ModelHolder(), Metrics()),
        sink,
        predictions_topic="p",
        dlq_topic="d",
        max_message_bytes=SETTINGS.max_message_bytes,
    )
    message = FakeMessage([ConsumerRecord("t", 0, 1, 0, 0, None, request(1), None, 0, 10, [])])
    asyncio.run(worker._process(_call(handler), message))  # type: ignore[arg-type]
    assert (message.acked, message.nacked) == (0, 1)
    assert sink.calls == 0
