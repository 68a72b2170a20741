"""Fetch and decode failures the worker cannot get past are never silent.

FastStream's consume loop catches what ``AIOKafkaConsumer.getmany`` raises (an
``UnsupportedCodecError`` for a codec the process cannot decompress, a ``CorruptRecordException``
for a bad CRC, other ``KafkaError`` s), logs it in its own words and fetches again 15 s (5 s)
later; the partition is stuck behind that record batch and nothing else shows it.
:func:`guard_fetches` wraps the subscriber's fetch of one batch (a FastStream internal: the
hook and its version pin are in :mod:`consumers.compat`) so that each such failure also

- counts in ``iris_consumer_errors_total{reason}``;
- logs ``consumer_error`` naming the topic, partition and offset (the first offset of the batch
  it could not read, from aiokafka's record unpacking frame: :func:`consumers.compat.failed_position`);
- turns ``/ready`` 503 with the reason, until that partition is read past the offset (or the
  failure, when no partition is known, until the next batch is fetched).

The exception is re-raised: FastStream's own handling (log, pause, fetch again) is unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka.errors import ConsumerStoppedError, CorruptRecordException, KafkaError, UnsupportedCodecError

from consumers.compat import Fetch, failed_position, wrap_batch_fetch
from consumers.worker_http import WorkerState
from ml.logs import log_event

log = logging.getLogger("consumers.worker")

UNSUPPORTED_CODEC = "unsupported_codec"
CORRUPT_RECORD = "corrupt_record"
FETCH_ERROR = "fetch_error"
PARSE_ERROR = "parse_error"


def reason_of(exc: BaseException) -> str:
    if isinstance(exc, UnsupportedCodecError):
        return UNSUPPORTED_CODEC
    if isinstance(exc, CorruptRecordException):
        return CORRUPT_RECORD
    if isinstance(exc, KafkaError):
        return FETCH_ERROR
    return PARSE_ERROR


class ConsumerErrors:
    """Records failures for ``/ready`` (``state.consumer_errors``), the counter and the log."""

    def __init__(self, state: WorkerState) -> None:
        self.state = state
        self._where: dict[str, tuple[str | None, int | None, int | None]] = {}

    def record(
        self, exc: BaseException, topic: str | None, partition: int | None, offset: int | None
    ) -> None:
        reason = reason_of(exc)
        text, name = str(exc), type(exc).__name__
        detail = text if text.startswith(name) else f"{name}: {text}" if text else name
        self.state.metrics.consumer_errors.labels(reason=reason).inc()
        log_event(
            log,
            "consumer_error",
            logging.ERROR,
            reason=reason,
            topic=topic,
            partition=partition,
            offset=offset,
            error=detail,
        )
        key = f"{topic}[{partition}]" if partition is not None else (topic or "consumer")
        where = f" at offset {offset}" if offset is not None else ""
        self.state.consumer_errors[key] = f"{reason} in {key}{where} ({detail})"
        self._where[key] = (topic, partition, offset)

    def fetched(self, records: Sequence[Any]) -> None:
        """A batch arrived: clear the failures it proves are behind us."""
        if not self._where:
            return
        for key, (topic, partition, offset) in list(self._where.items()):
            if partition is None:
                passed = bool(records)
            else:
                passed = any(
                    r.topic == topic and r.partition == partition and (offset is None or r.offset >= offset)
                    for r in records
                )
            if passed:
                del self._where[key]
                self.state.consumer_errors.pop(key, None)


def guard_fetches(subscriber: Any, errors: Callable[[], ConsumerErrors]) -> None:
    """Wrap the subscriber's fetch of one batch with :class:`ConsumerErrors` (``errors()`` is
    called on the first fetch: the worker's state is built late). The hook is in
    :mod:`consumers.compat`."""

    def guarded(fetch: Fetch) -> Fetch:
        async def get_msg(consumer: Any) -> Any:
            try:
                records = await fetch(consumer)
            except ConsumerStoppedError:
                raise
            except Exception as exc:
                errors().record(exc, *failed_position(exc))
                raise
            errors().fetched(records or ())
            return records

        return get_msg

    wrap_batch_fetch(subscriber, guarded)
