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

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from consumers.produce import Outgoing, record_size
from ml.messages import Rejected, decode_batch, encode_predictions
from ml.schema import Record, to_matrix

if TYPE_CHECKING:  # ml.predict imports scikit-learn and MLflow: not at this module's import
    from ml.experiment import Agreement, Experiment, Outcome
    from ml.predict import Scorer

__all__ = [
    "Outgoing",
    "RawMessage",
    "Sink",
    "SourcedSink",
    "StreamHandler",
    "StreamItem",
    "decode_requests",
    "dlq_record",
]

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
#: A sink told which consumed record each output answers (its index in the batch): the
#: exactly-once sink commits each input partition's outputs with its offsets.
SourcedSink = Callable[[Sequence[Outgoing], Sequence[int]], Awaitable[None]]

#: Room kept free in every record below the producer's ``max_request_size``: the request's and
#: record batch's framing, which :func:`consumers.produce.record_size` only estimates.
RECORD_ROOM_BYTES = 4096
#: Of what is left for a cut copy, at most this share goes to the key, then to the own headers.
KEY_SHARE = HEADERS_SHARE = 4


def fit_record(
    topic: str,
    key: bytes | None,
    value: bytes | None,
    own: Headers,
    kept: Headers,
    max_bytes: int | None,
) -> Outgoing:
    """``Outgoing(topic, key, value, own + kept)``, cut to fit ``max_bytes`` when it does not.

    ``kept`` headers (a dead letter's reason and source position) are never cut. Otherwise, the
    key is cut to a quarter of the room left, then the own headers that do not fit in a quarter
    of what remains are dropped (in order), then the value is cut to what is left. A cut copy has
    the headers ``value_truncated`` (``true``/``false``) and ``original_size`` (the original
    value's bytes), plus ``key_truncated: true`` and ``headers_dropped: N`` when those apply.
    """
    small = max_bytes is None or 64 + len(key or b"") + len(value or b"") <= max_bytes - RECORD_ROOM_BYTES
    if small and not own and not kept:  # a prediction or comparison without headers: the common case
        return Outgoing(topic, key, value, None)
    whole = Outgoing(topic, key, value, own + kept or None)
    if max_bytes is None or record_size(whole) <= max_bytes - RECORD_ROOM_BYTES:
        return whole
    marks: Headers = []
    room = max_bytes - RECORD_ROOM_BYTES - record_size(Outgoing(topic, None, None, kept)) - 256
    if key is not None and len(key) > room // KEY_SHARE:
        key = key[: max(0, room // KEY_SHARE)]
        marks.append(("key_truncated", b"true"))
    room -= len(key or b"")
    headers: Headers = []
    header_room, dropped = room // HEADERS_SHARE, 0
    for name, header in own:
        size = 16 + len(name) + len(header)
        if size <= header_room:
            headers.append((name, header))
            header_room -= size
            room -= size
        else:
            dropped += 1
    if dropped:
        marks.append(("headers_dropped", str(dropped).encode()))
    original = len(value or b"")
    cut_value = value is not None and original > room
    if cut_value:
        value = value[: max(0, room)]  # type: ignore[index]
    marks += [
        ("value_truncated", b"true" if cut_value else b"false"),
        ("original_size", str(original).encode()),
    ]
    return Outgoing(topic, key, value, headers + kept + marks)


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


def dlq_record(topic: str, message: RawMessage, reason: Rejected, max_bytes: int | None = None) -> Outgoing:
    """The original key, value and headers, unchanged, then the reason and the source position.

    With ``max_bytes`` (the producer's ``max_request_size``) a copy that would not fit is cut
    (:func:`fit_record`): a dead letter can always be produced, so it never holds up its batch.

    A tombstone (value ``None``) keeps its ``None`` value and gets a ``tombstone: 1`` header. A
    tombstone without a key cannot be produced as such (Kafka clients need a key or a value: the
    send would fail and the batch be retried forever), so its DLQ copy has the value ``b""``; the
    header tells it from a real empty value.
    """
    own = _own_headers(message)
    headers: Headers = [
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
    return fit_record(topic, message.key, value, own, headers, max_bytes)


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
        max_record_bytes: int | None = None,
        experiment: Experiment | None = None,
        shadow_topic: str = "iris.shadow",
        agreement: Agreement | None = None,
        on_scored: Callable[[Sequence[str | None], Outcome], None] | None = None,
    ) -> None:
        from ml.experiment import Experiment
        from ml.model import ModelHolder

        self.scorer, self.sink, self.observe = scorer, sink, observe
        self.experiment = experiment or Experiment(scorer.holder, ModelHolder())
        self.shadow_topic, self.agreement, self.on_scored = shadow_topic, agreement, on_scored
        self.max_record_bytes = max_record_bytes
        self.predictions_topic, self.dlq_topic, self.max_message_bytes = (
            predictions_topic,
            dlq_topic,
            max_message_bytes,
        )
        self._dlq_counters: dict[str, Any] = {}

    async def handle(
        self,
        batch: Sequence[RawMessage],
        items: Sequence[StreamItem] | None = None,
        *,
        sink: SourcedSink | None = None,
    ) -> tuple[int, int]:
        """Score the valid messages of ``batch`` in one call and wait until every output is acked.

        ``items`` are the batch's decoded requests (the subscriber's decoder), decoded here when
        not given. The outputs go to ``sink`` when given (with the index in ``batch`` of the
        record each answers), else to :attr:`sink`. Returns (predictions, rejected). Raises if
        scoring or producing fails: nothing is then acknowledged and the batch will be consumed
        again.
        """
        if items is None:
            items = decode_requests(batch, self.max_message_bytes)
        bad = [item for item in items if type(item) is Rejected]
        limit = self.max_record_bytes
        outgoing = [dlq_record(self.dlq_topic, batch[r.idx], r, limit) for r in bad]
        good = [index for index, item in enumerate(items) if type(item) is Record]
        scored: Any = None
        ids: list[str | None] = []
        sources = [r.idx for r in bad]
        if good:
            from ml.experiment import outcome_records, score_batch, shadow_records

            records: list[Record] = [items[i] for i in good]  # type: ignore[misc]
            matrix = to_matrix(records)
            ids = [r.id for r in records]
            started = time.perf_counter()
            outcome = score_batch(self.experiment, matrix, ids)  # once per model per batch
            predictions = outcome_records(ids, outcome, SOURCE)
            compared = None
            if outcome.shadow is not None:  # the champion answered every row: reuse its probabilities
                answered = outcome.answers[0].rows is None
                same = [p["probabilities"] for p in predictions] if answered else None
                compared = shadow_records(ids, outcome.shadow, predictions[0]["scored_at"], same)
            scored = (matrix, outcome, time.perf_counter() - started, predictions, compared)
            values = encode_predictions(predictions)
            topic = self.predictions_topic
            keyed = [(index, i) for index, i in zip(good, ids, strict=True) if i]
            outgoing.extend(
                fit_record(topic, i.encode(), v, _own_headers(batch[index]), [], limit)
                for index, i, v in zip(good, ids, values, strict=True)
                if i
            )
            sources += [index for index, _ in keyed]
            if compared is not None:
                shadows = encode_predictions(compared)
                shadow = self.shadow_topic
                outgoing.extend(
                    fit_record(shadow, i.encode(), v, [], [], limit)
                    for i, v in zip(ids, shadows, strict=True)
                    if i
                )
                sources += [index for index, _ in keyed]
        if sink is None:
            await self.sink(outgoing)
        else:
            await sink(outgoing, sources)
        # Counted and observed once the outputs are acknowledged: a batch whose produce fails is
        # consumed and scored again, and must not count (or enter a drift window) twice.
        if scored is not None:
            matrix, outcome, elapsed, predictions, compared = scored
            self.scorer.observe(SOURCE, len(matrix), elapsed)  # ml.predict records them (one place)
            for answer in outcome.answers:
                self.scorer.count(SOURCE, answer.scores)
            if outcome.shadow is not None and self.agreement is not None:
                self.agreement.record(outcome.shadow)
            if self.observe is not None:
                self.observe(matrix, outcome.champion)
            if self.on_scored is not None:
                self.on_scored(ids, outcome)
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
