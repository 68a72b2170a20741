"""The stream handler in memory: FastStream's TestKafkaBroker delivers batches to the real subscriber
(its parser, decoder and ack policy); wire behaviour is in test_worker_integration.py."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
import pytest
from aiokafka import ConsumerRecord
from faststream.kafka import TestKafkaBroker
from faststream.kafka.message import KafkaAckableMessage
from faststream.middlewares import AckPolicy
from sklearn.linear_model import LogisticRegression

from consumers import worker_runtime
from consumers.handler import Outgoing, StreamHandler, StreamItem, decode_requests
from consumers.worker_broker import create_broker
from consumers.worker_contract import REQUEST_EXAMPLE
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


class Acks:
    """Counts FastStream's acks (commits) and nacks (rewinds) of delivered batches."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.acked = self.nacked = 0
        ack, nack = KafkaAckableMessage.ack, KafkaAckableMessage.nack

        async def counted_ack(message: KafkaAckableMessage) -> None:
            self.acked += 1
            await ack(message)

        async def counted_nack(message: KafkaAckableMessage) -> None:
            self.nacked += 1
            await nack(message)

        monkeypatch.setattr(KafkaAckableMessage, "ack", counted_ack)
        monkeypatch.setattr(KafkaAckableMessage, "nack", counted_nack)


def _route(handler: StreamHandler) -> Any:
    async def route(batch: Sequence[Any], items: Sequence[StreamItem]) -> None:
        await handler.handle(batch, items)

    return route


async def deliver(model: LoadedModel, sink: Capture, values: list[bytes]) -> Metrics:
    handler, metrics = make_handler(model, sink)
    endpoints = create_broker(SETTINGS, _route(handler))
    async with TestKafkaBroker(endpoints.broker) as test_broker:
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
        endpoints = create_broker(SETTINGS, _route(handler))
        async with TestKafkaBroker(endpoints.broker) as test_broker:
            await test_broker.publish(b"oops", topic=SETTINGS.requests_topic, key=b"k-1")

    asyncio.run(run())
    (dead,) = sink.to(SETTINGS.dlq_topic)
    assert dead.key == b"k-1" and dead.value == b"oops"


def record(
    offset: int, key: bytes | None, value: bytes | None, headers: Any = ()
) -> ConsumerRecord[Any, Any]:
    size = len(value or b"")
    return ConsumerRecord(SETTINGS.requests_topic, 0, offset, 0, 0, key, value, None, 0, size, list(headers))


def test_the_asyncapi_example_request_is_scored(tiny_model: LoadedModel) -> None:
    from test_worker_http import ASYNCAPI

    document = orjson.loads(ASYNCAPI.read_bytes())
    (subscribe,) = [m for name, m in document["components"]["messages"].items() if "iris.requests:" in name]
    schema = document["components"]["schemas"][subscribe["payload"]["$ref"].rsplit("/", 1)[1]]
    (example,) = schema["examples"]
    assert example == REQUEST_EXAMPLE
    sink = Capture()
    asyncio.run(deliver(tiny_model, sink, [orjson.dumps(example)]))
    (prediction,) = sink.to(SETTINGS.predictions_topic)
    assert prediction.key == example["id"].encode() and not sink.to(SETTINGS.dlq_topic)


def test_the_subscriber_commits_after_the_outputs_and_rewinds_on_failure(
    tiny_model: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoints = create_broker(SETTINGS, _route(make_handler(tiny_model, Capture())[0]))
    assert endpoints.subscriber.ack_policy is AckPolicy.NACK_ON_ERROR
    for fail in (False, True):
        acks = Acks(monkeypatch)
        sink = Capture(fail=fail)
        with pytest.raises(ConnectionError) if fail else contextlib.nullcontext():
            asyncio.run(deliver(tiny_model, sink, [request(1), request(2)]))  # in memory: re-raised
        assert (acks.acked, acks.nacked) == ((0, 1) if fail else (1, 0))


def test_odd_headers_and_a_keyless_tombstone_do_not_fail_their_batch(tiny_model: LoadedModel) -> None:
    """FastStream's batch parser decodes header values as UTF-8; ours keeps the batch and the bytes."""
    sink = Capture()
    handler, _ = make_handler(tiny_model, sink)
    odd = [("trace", b"\xff\xfe"), ("note", b"ok")]
    batch = (record(5, b"r-1", request(1), odd), record(6, b"x", b"{oops", odd), record(7, None, None))

    async def run() -> None:
        endpoints = create_broker(SETTINGS, _route(handler))
        async with TestKafkaBroker(endpoints.broker):
            await endpoints.subscriber.consume(batch)

    asyncio.run(run())
    (prediction,) = sink.to(SETTINGS.predictions_topic)
    assert prediction.headers == odd, "a request's headers travel unchanged to its prediction"
    bad, tombstone = sink.to(SETTINGS.dlq_topic)
    assert bad.value == b"{oops" and (bad.headers or [])[:2] == odd
    assert dict(bad.headers or [])["source_offset"] == b"6"
    assert dict(tombstone.headers or [])["tombstone"] == b"1" and tombstone.value == b""


def test_a_failed_batch_is_logged_and_raised_for_the_rewind(
    tiny_model: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker_runtime, "RETRY_AFTER_FAILURE_S", 0.0)
    runtime = worker_runtime.WorkerRuntime(SETTINGS)
    batch = [record(5, None, request(1))]
    items = decode_requests(batch, SETTINGS.max_message_bytes)
    with pytest.raises(RuntimeError, match="not connected"):
        asyncio.run(runtime.route(batch, items))  # no producer yet: the batch must come again
    runtime.handler = make_handler(tiny_model, Capture(fail=True))[0]
    with pytest.raises(ConnectionError):
        asyncio.run(runtime.route(batch, items))
    assert runtime.state.counts["batches"] == 0


def test_no_model_yet_fails_the_batch_before_producing() -> None:
    sink = Capture()
    handler = StreamHandler(
        Scorer(ModelHolder(), Metrics()),
        sink,
        predictions_topic="p",
        dlq_topic="d",
        max_message_bytes=SETTINGS.max_message_bytes,
    )
    with pytest.raises(Exception):  # noqa: B017 - whatever the scorer raises, nothing is produced
        asyncio.run(handler.handle([record(1, None, request(1))]))
    assert sink.calls == 0


def test_after_batch_runs_once_the_outputs_are_acknowledged(tiny_model: LoadedModel) -> None:
    sink = Capture()
    seen: list[int] = []

    async def after() -> None:
        seen.append(len(sink.sent))

    runtime = worker_runtime.WorkerRuntime(SETTINGS, after_batch=after)
    runtime.handler = make_handler(tiny_model, sink)[0]
    batch = [record(5, None, request(1))]
    asyncio.run(runtime.route(batch, decode_requests(batch, SETTINGS.max_message_bytes)))
    assert seen == [1]
    assert runtime.state.counts == {"predictions": 1, "rejected": 0, "batches": 1}


def test_the_broker_gets_every_bootstrap_address_and_an_idempotent_producer(tiny_model: LoadedModel) -> None:
    """FastStream takes a string as one address: a multi-broker bootstrap must reach it as a list
    (else the worker cannot connect to a cluster given as ``a:9092,b:9092``); the worker's
    producer is idempotent on Apache Kafka like every other producer of ours."""
    settings = load_settings(
        environ={"IRIS_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9101, 127.0.0.1:9102,127.0.0.1:9103"}
    )
    handler, _ = make_handler(tiny_model, Capture())
    options = create_broker(settings, _route(handler)).broker._connection_kwargs
    assert options["bootstrap_servers"] == ["127.0.0.1:9101", "127.0.0.1:9102", "127.0.0.1:9103"]
    assert options["enable_idempotence"] is True and options["acks"] == "all"
