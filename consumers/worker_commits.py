"""Offset commits at most once per ``IRIS_COMMIT_INTERVAL_MS``, only for acknowledged batches.

The subscriber's ack policy (``NACK_ON_ERROR``) commits after every batch whose outputs are
acknowledged; Azure Event Hubs throttles commits to 4 per second and partition. So the commit
FastStream's ack makes goes through :class:`CommitThrottle`:

- each acknowledged batch records, per partition, the offset after its last record
  (:meth:`CommitThrottle.acked`, called by the subscriber once ``route`` returned);
- FastStream's ``consumer.commit()`` then commits those offsets explicitly, if the last commit
  is at least the interval old (otherwise they wait for the next one);
- partitions being revoked wait for the batch in flight (fetched, not yet acknowledged or failed:
  :meth:`CommitThrottle.track` sees the fetch) to end, at most ``revoke_wait_s``, then get their
  acknowledged offsets committed before they are handed over (:class:`RevokeListener`); the
  consumer's ``stop`` commits everything acknowledged first: a stop or a rebalance never
  re-delivers what was done, and a clean scale-in scores nothing twice.

A failed batch is rewound by FastStream (``seek`` to its first offsets) and records nothing, so
what is committed is always below what is acknowledged. Explicit offsets (not the consumer's
positions) are committed: a revoke that comes while a batch is in flight commits only what was
acknowledged before it, or the batch itself once it ends (the revoke waits for it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from aiokafka import ConsumerRebalanceListener, TopicPartition

from ml.logs import log_event

if TYPE_CHECKING:
    from consumers.worker_transactions import TransactionalOutputs

log = logging.getLogger("consumers.worker")

Commit = Callable[[dict[TopicPartition, int]], Awaitable[None]]


#: How long a revoke waits for the batch in flight: a batch is scored and produced in
#: milliseconds, so this only bounds a batch stuck on an unreachable broker (its next owner
#: then re-reads it from the last commit).
REVOKE_WAIT_S = 10.0

Fetch = Callable[[Any], Awaitable[Any]]


class CommitThrottle:
    def __init__(
        self,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        revoke_wait_s: float = REVOKE_WAIT_S,
        record_acks: bool = True,
    ) -> None:
        self.interval_s, self.clock, self.revoke_wait_s = interval_s, clock, revoke_wait_s
        #: False in exactly-once mode: the offsets are committed in each batch's transactions
        self.record_acks = record_acks
        self.pending: dict[TopicPartition, int] = {}
        self.commit: Commit | None = None  # the consumer's own commit, once installed
        self._last: float | None = None
        self._later: asyncio.Task[None] | None = None
        self._idle: asyncio.Event | None = None  # set while no fetched batch is being handled

    def _event(self) -> asyncio.Event:
        if self._idle is None:  # made on the worker's loop, on first use
            self._idle = asyncio.Event()
            self._idle.set()
        return self._idle

    def track(self, fetch: Fetch) -> Fetch:
        """Wrap the subscriber's fetch of one batch: records returned are in flight until
        :meth:`done` (or the next fetch, whatever became of them)."""

        async def get_msg(consumer: Any) -> Any:
            self.done()
            records = await fetch(consumer)
            if records:
                self._event().clear()
            return records

        return get_msg

    def done(self) -> None:
        """The batch in flight has ended: acknowledged (after :meth:`acked`) or failed."""
        self._event().set()

    async def idle(self) -> bool:
        """Wait (at most ``revoke_wait_s``) until no batch is in flight; False if one still is."""
        event = self._event()
        if event.is_set():
            return True
        try:
            await asyncio.wait_for(event.wait(), self.revoke_wait_s)
        except TimeoutError:
            return False
        return True

    def acked(self, records: Sequence[Any]) -> None:
        """The outputs of ``records`` are acknowledged: their offsets may be committed."""
        if not self.record_acks:
            return
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            if record.offset + 1 > self.pending.get(tp, -1):
                self.pending[tp] = record.offset + 1

    async def maybe_commit(self) -> None:
        """FastStream's ack: commit if the interval has passed since the last commit."""
        now = self.clock()
        if self._last is not None and now - self._last < self.interval_s:
            # no batch may come after this one: commit it when the interval is up
            if self._later is None or self._later.done():
                self._later = asyncio.ensure_future(self._flush_after(self._last + self.interval_s - now))
            return
        await self.flush()

    async def _flush_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        while True:
            try:
                await self.flush()
            except Exception as exc:
                log_event(log, "commit_failed", logging.WARNING, error=f"{type(exc).__name__}: {exc}")
                return
            # acked while that commit was on the wire: no later batch may come to commit them
            if not self.pending or self.commit is None or self._last is None:
                return
            await asyncio.sleep(max(0.0, self._last + self.interval_s - self.clock()))

    async def flush(self, partitions: Iterable[TopicPartition] | None = None) -> None:
        """Commit the acknowledged offsets (of ``partitions``, or all) now."""
        chosen = set(partitions) if partitions is not None else set(self.pending)
        offsets = {tp: offset for tp, offset in self.pending.items() if tp in chosen}
        if not offsets or self.commit is None:
            return
        await self.commit(offsets)
        for tp, offset in offsets.items():
            if self.pending.get(tp) == offset:
                del self.pending[tp]
        self._last = self.clock()

    def install(self, consumer: Any) -> None:
        """Route ``consumer.commit()`` (FastStream's ack) through the throttle and commit what was
        acknowledged before ``consumer.stop()``."""
        commit, stop = consumer.commit, consumer.stop

        async def explicit(offsets: dict[TopicPartition, int]) -> None:
            await commit(offsets)

        async def throttled(offsets: dict[TopicPartition, int] | None = None) -> None:
            if offsets is not None:
                await commit(offsets)
            else:
                await self.maybe_commit()

        async def stop_after_commit() -> None:
            if self._later is not None:
                self._later.cancel()
            try:
                await self.flush()
            except Exception as exc:
                log_event(log, "commit_on_stop_failed", logging.WARNING, error=f"{type(exc).__name__}: {exc}")
            await stop()

        self.commit = explicit
        consumer.commit, consumer.stop = throttled, stop_after_commit


class RevokeListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Commit the acknowledged offsets of partitions before they are handed over; in exactly-once
    mode, stop their transactional producers then, and fence the previous owners of assigned
    partitions before reading them (:class:`~consumers.worker_transactions.TransactionalOutputs`)."""

    def __init__(
        self, throttle: CommitThrottle, transactions: TransactionalOutputs | None = None, feedback: Any = None
    ) -> None:
        #: ``feedback`` (:class:`consumers.feedback.FeedbackReader`) mirrors the assignment
        self.throttle, self.transactions, self.feedback = throttle, transactions, feedback

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        revoked = list(revoked)
        log_event(log, "partitions_revoked", partitions=_names(revoked))
        if not await self.throttle.idle():
            log_event(
                log, "revoke_batch_still_in_flight", logging.WARNING, wait_s=self.throttle.revoke_wait_s
            )
        try:
            await self.throttle.flush(revoked)
        except Exception as exc:  # the partitions are gone: their next owner re-reads from the last commit
            log_event(log, "commit_on_revoke_failed", logging.WARNING, error=f"{type(exc).__name__}: {exc}")
        for tp in revoked:
            self.throttle.pending.pop(tp, None)
        if self.transactions is not None:
            await self.transactions.revoked(revoked)
        if self.feedback is not None:
            await self.feedback.revoked(revoked)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        assigned = list(assigned)
        log_event(log, "partitions_assigned", partitions=_names(assigned))
        if self.feedback is not None:
            await self.feedback.assigned(assigned)
        if self.transactions is not None:
            try:
                await self.transactions.assigned(assigned)
            except Exception as exc:  # each batch starts a missing producer again
                log_event(
                    log, "transactions_not_ready", logging.WARNING, error=f"{type(exc).__name__}: {exc}"
                )


def _names(partitions: Iterable[TopicPartition]) -> str:
    """``iris.requests[0],iris.requests[2]`` (sorted), for the rebalance log lines."""
    return ",".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(partitions)) or "none"
