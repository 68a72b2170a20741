"""The stream handler: one batch of raw requests → one scoring call → predictions and DLQ records.

Thin on purpose: decoding and validation live in :mod:`ml.messages`, scoring in
:mod:`ml.predict`. The handler only routes bytes; acknowledging is the subscriber's job, after
:attr:`StreamHandler.sink` returns (every produced record acknowledged by the broker).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from consumers.produce import Outgoing

__all__ = ["Outgoing", "RawMessage", "Sink", "StreamHandler", "dlq_record"]
from ml.messages import Rejected, decode_batch, encode_predictions
from ml.predict import Scorer, prediction_records
from ml.schema import to_matrix

SOURCE = "stream"


class RawMessage(Protocol):
    """What the handler reads of a consumed record (aiokafka's ``ConsumerRecord``)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


Sink = Callable[[Sequence[Outgoing]], Awaitable[None]]


def dlq_record(topic: str, message: RawMessage, reason: Rejected) -> Outgoing:
    """The original key and value, unchanged, with the reason and the source position as headers.

    A tombstone (value ``None``) keeps its ``None`` value and gets a ``tombstone: 1`` header. A
    tombstone without a key cannot be produced as such (Kafka clients need a key or a value: the
    send would fail and the batch be retried forever), so its DLQ copy has the value ``b""``; the
    header tells it from a real empty value.
    """
    headers = [
        ("error", reason.code.encode()),
        ("error_detail", reason.detail.encode("utf-8", "replace")),
        ("source_topic", message.topic.encode()),
        ("source_partition", str(message.partition).encode()),
        ("source_offset", str(message.offset).encode()),
    ]
    value = message.value
    if value is None:
        headers.append(("tombstone", b"1"))
        if message.key is None:
            value = b""
    return Outgoing(topic, message.key, value, headers)


class StreamHandler:
    def __init__(
        self,
        scorer: Scorer,
        sink: Sink,
        *,
        predictions_topic: str,
        dlq_topic: str,
        max_message_bytes: int,
        observe: Callable[[Any, Any], None] | None = None,
    ) -> None:
        self.scorer, self.sink, self.observe = scorer, sink, observe
        self.predictions_topic, self.dlq_topic, self.max_message_bytes = (
            predictions_topic,
            dlq_topic,
            max_message_bytes,
        )
        self._dlq_counters: dict[str, Any] = {}

    async def handle(self, batch: Sequence[RawMessage]) -> tuple[int, int]:
        """Score the valid messages of ``batch`` in one call and wait until every output is acked.

        Returns (predictions, rejected). Raises if scoring or producing fails: nothing is then
        acknowledged and the batch will be consumed again.
        """
        records, _, bad = decode_batch([m.value for m in batch], self.max_message_bytes)
        outgoing = [dlq_record(self.dlq_topic, batch[r.idx], r) for r in bad]
        if records:
            matrix = to_matrix(records)
            scores = self.scorer.score(matrix, SOURCE)
            ids = [r.id for r in records]
            values = encode_predictions(prediction_records(ids, scores, SOURCE))
            topic = self.predictions_topic
            outgoing.extend(Outgoing(topic, i.encode(), v) for i, v in zip(ids, values, strict=True) if i)
            if self.observe is not None:
                self.observe(matrix, scores.model)
        await self.sink(outgoing)
        self._count_rejected(bad)
        return len(records), len(bad)

    def _count_rejected(self, bad: list[Rejected]) -> None:
        counts: dict[str, int] = {}
        for reason in bad:
            counts[reason.code] = counts.get(reason.code, 0) + 1
        for code, count in counts.items():
            counter = self._dlq_counters.get(code)
            if counter is None:
                counter = self._dlq_counters[code] = self.scorer.metrics.dlq_messages.labels(reason=code)
            counter.inc(count)
            self.scorer.record_errors(SOURCE, code, count)
