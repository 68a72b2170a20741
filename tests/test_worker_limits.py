# ruff: noqa: F811 - the tiny_model fixture is imported from test_worker_handler
"""The stream handler's outputs under size limits and failed produces (issue 14, points 2 and 4).

In memory: the handler with a sink that refuses what ``consumers.produce.produce_all`` refuses
(a record above the producer's ``max_request_size``) or fails a number of times.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from aiokafka.errors import MessageSizeTooLargeError
from test_worker_handler import SETTINGS, record, request, tiny_model  # noqa: F401 - fixture

from consumers.handler import Outgoing, StreamHandler, dlq_record
from consumers.produce import record_size
from ml.messages import Rejected
from ml.metrics import Metrics
from ml.model import LoadedModel, ModelHolder
from ml.predict import Scorer

LIMIT = 1_048_576  # the producer's max_request_size (the worker's default)
DLQ, PREDICTIONS = SETTINGS.dlq_topic, SETTINGS.predictions_topic


class Sink:
    """Fails the first ``failures`` calls, refuses records above ``LIMIT`` like produce_all."""

    def __init__(self, failures: int = 0) -> None:
        self.failures, self.calls, self.sent = failures, 0, []  # type: ignore[var-annotated]

    async def __call__(self, outgoing: Sequence[Outgoing]) -> None:
        self.calls += 1
        for o in outgoing:
            if record_size(o) > LIMIT:
                raise MessageSizeTooLargeError(f"{record_size(o)} bytes")
        if self.calls <= self.failures:
            raise ConnectionError("broker gone")
        self.sent.extend(outgoing)


def handler_for(
    model: LoadedModel, sink: Sink, observed: list[Any] | None = None
) -> tuple[StreamHandler, Metrics]:
    metrics = Metrics()
    handler = StreamHandler(
        Scorer(ModelHolder(model), metrics),
        sink,
        predictions_topic=PREDICTIONS,
        dlq_topic=DLQ,
        max_message_bytes=SETTINGS.max_message_bytes,
        max_record_bytes=LIMIT,
        observe=(lambda matrix, model: observed.append(len(matrix))) if observed is not None else None,
    )
    return handler, metrics


# --------------------------------------------------------------------------- point 2


def test_an_oversized_dead_letter_copy_is_cut_to_fit_and_says_so() -> None:
    value = b"v" * (3 * LIMIT)
    message = record(17, b"k" * (2 * LIMIT), value, [("trace", b"t" * (2 * LIMIT)), ("small", b"ok")])
    out = dlq_record(DLQ, message, Rejected(0, "too_large", "big"), max_bytes=LIMIT)
    headers = dict(out.headers or [])
    assert record_size(out) <= LIMIT
    assert headers["value_truncated"] == b"true"
    assert headers["original_size"] == str(len(value)).encode()
    assert (headers["source_partition"], headers["source_offset"]) == (b"0", b"17")
    assert headers["source_topic"] == SETTINGS.requests_topic.encode()
    assert headers["error"] == b"too_large"
    assert out.value and value.startswith(out.value)


def test_a_copy_that_fits_is_unchanged() -> None:
    message = record(3, b"k", b"x" * 1000, [("trace", b"t")])
    out = dlq_record(DLQ, message, Rejected(0, "invalid_json", "no"), max_bytes=LIMIT)
    headers = dict(out.headers or [])
    assert out.value == b"x" * 1000 and out.key == b"k" and headers["trace"] == b"t"
    assert "value_truncated" not in headers and "original_size" not in headers


def test_one_unproducible_output_never_blocks_the_rest_of_its_batch(tiny_model: LoadedModel) -> None:
    sink = Sink()
    handler, _ = handler_for(tiny_model, sink)
    batch = [
        record(0, b"r-0", request(0)),
        record(1, b"big", b"x" * (2 * LIMIT)),  # too large: its DLQ copy must still be producible
        record(2, b"k" * (2 * LIMIT), b"{bad"),  # a huge key
        record(3, b"r-3", request(3), [("h", b"h" * (2 * LIMIT))]),  # valid, huge headers
        record(4, b"r-4", request(4)),
    ]
    asyncio.run(handler.handle(batch))
    assert all(record_size(o) <= LIMIT for o in sink.sent)
    predicted = {o.key: dict(o.headers or []) for o in sink.sent if o.topic == PREDICTIONS}
    assert set(predicted) == {b"r-0", b"r-3", b"r-4"}
    # the valid request whose headers cannot travel: scored, the header dropped and said so
    assert predicted[b"r-3"]["headers_dropped"] == b"1" and "h" not in predicted[b"r-3"]
    dead = {dict(o.headers or [])["source_offset"]: o for o in sink.sent if o.topic == DLQ}
    assert set(dead) == {b"1", b"2"}
    assert dict(dead[b"1"].headers or [])["value_truncated"] == b"true"
    assert dict(dead[b"2"].headers or [])["key_truncated"] == b"true"


# --------------------------------------------------------------------------- point 4


def test_a_batch_retried_after_failed_produces_is_counted_and_observed_once(tiny_model: LoadedModel) -> None:
    sink = Sink(failures=3)
    observed: list[Any] = []
    handler, metrics = handler_for(tiny_model, sink, observed)
    batch = [record(i, f"r-{i}".encode(), request(i)) for i in range(100)]
    for _ in range(3):  # the subscriber's rewind hands the same batch over again
        with pytest.raises(ConnectionError):
            asyncio.run(handler.handle(batch))
    assert asyncio.run(handler.handle(batch)) == (100, 0)
    total = sum(
        s.value
        for m in metrics.registry.collect()
        if m.name == "iris_predictions"
        for s in m.samples
        if s.name == "iris_predictions_total"
    )
    assert total == 100, "predictions counted once, after the sink succeeded"
    assert observed == [100], "the drift windows see the batch once"
    assert len([o for o in sink.sent if o.topic == PREDICTIONS]) == 100
