"""The stream handler: one batch of raw requests → one scoring call → predictions and DLQ records.

Thin on purpose: decoding and validation live in :mod:`ml.messages`, scoring in
:mod:`ml.predict`. The handler only routes: each request is either a valid
:class:`~ml.schema.Record` (scored; its prediction keyed by id) or a
:class:`~ml.messages.Rejected` reason (its original key, value and headers go to the dead-letter
topic with the reason). A request's own headers travel unchanged to its prediction or its
dead-letter record. Acknowledging is the subscriber's job, after :attr:`StreamHandler.sink`
returns (every produced record acknowledged by the broker).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from consumers.produce import Outgoing
from ml.messages import Rejected, decode_batch, encode_predictions
from ml.schema import Record, to_matrix

if TYPE_CHECKING:  # ml.predict imports scikit-learn and MLflow: not at this module's import
    from ml.predict import Scorer

__all__ = ["Outgoing", "RawMessage", "Sink", "StreamHandler", "StreamItem", "decode_requests", "dlq_record"]

SOURCE = "stream"

#: One decoded request: a valid record or the reason it cannot be scored.
StreamItem = Record | Rejected
Headers = list[tuple[str, bytes]]


class RawMessage(Protocol):
    """What the handler reads of a consumed record (aiokafka's ``ConsumerRecord``; ``headers``,
    a sequence of ``(name, bytes)`` pairs, is read when present)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


Sink = Callable[[Sequence[Outgoing]], Awaitable[None]]


def _own_headers(message: RawMessage) -> Headers:
    return list(getattr(message, "headers", None) or ())


def decode_requests(batch: Sequence[RawMessage], max_bytes: int) -> list[StreamItem]:
    """Each message's value decoded on its own (:func:`ml.messages.decode_batch`), in batch order."""
    decoded = decode_batch([m.value for m in batch], max_bytes)
    ordered: list[Any] = [None] * len(batch)
    for reason in decoded.bad:
        ordered[reason.idx] = reason
    for index, record in zip(decoded.good_idx, decoded.records, strict=True):
        ordered[index] = record
    return ordered


def dlq_record(topic: str, message: RawMessage, reason: Rejected) -> Outgoing:
    """The original key, value and headers, unchanged, then the reason and the source position.

    A tombstone (value ``None``) keeps its ``None`` value and gets a ``tombstone: 1`` header. A
    tombstone without a key cannot be produced as such (Kafka clients need a key or a value: the
    send would fail and the batch be retried forever), so its DLQ copy has the value ``b""``; the
    header tells it from a real empty value.
    """
    headers = _own_headers(message)
    headers += [
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

    async def handle(
        self, batch: Sequence[RawMessage], items: Sequence[StreamItem] | None = None
    ) -> tuple[int, int]:
        """Score the valid messages of ``batch`` in one call and wait until every output is acked.

        ``items`` are the batch's decoded requests (the subscriber's decoder), decoded here when
        not given. Returns (predictions, rejected). Raises if scoring or producing fails: nothing
        is then acknowledged and the batch will be consumed again.
        """
        if items is None:
            items = decode_requests(batch, self.max_message_bytes)
        bad = [item for item in items if type(item) is Rejected]
        outgoing = [dlq_record(self.dlq_topic, batch[r.idx], r) for r in bad]
        good = [index for index, item in enumerate(items) if type(item) is Record]
        if good:
            from ml.predict import prediction_records

            records: list[Record] = [items[i] for i in good]  # type: ignore[misc]
            matrix = to_matrix(records)
            scores = self.scorer.score(matrix, SOURCE)
            ids = [r.id for r in records]
            values = encode_predictions(prediction_records(ids, scores, SOURCE))
            topic = self.predictions_topic
            outgoing.extend(
                Outgoing(topic, i.encode(), v, _own_headers(batch[index]) or None)
                for index, i, v in zip(good, ids, values, strict=True)
                if i
            )
            if self.observe is not None:
                self.observe(matrix, scores.model)
        await self.sink(outgoing)
        self._count_rejected(bad)
        return len(good), len(bad)

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
