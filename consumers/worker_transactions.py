"""Exactly-once delivery (``IRIS_DELIVERY=exactly_once``): each batch's outputs and consumed
offsets in Kafka transactions, one transactional producer per input partition.

Consume-transform-produce is exactly-once when a batch's predictions, its dead letters and its
next offset are committed together, and a worker that lost a partition (paused, cut off: a
zombie) can no longer commit for it. Kafka 2.5+ fences zombies with the consumer group's
metadata sent with the offsets (KIP-447); aiokafka sends offsets with the group id only, so this
uses the scheme the Kafka documentation gave before it: **one transactional id per input
partition**, whoever owns the partition. The producer of ``iris.requests`` partition 3 in group
``iris-scorer`` is ``iris-scorer.iris.requests.3`` on every worker; its new owner's
``init_transactions`` (the producer's start) bumps the epoch, so the previous owner's open
transaction is aborted and anything it still sends is refused (``ProducerFenced``).

- **Assignment** (:meth:`TransactionalOutputs.assigned`): the new partitions are paused, their
  producers started (this returns once the previous owner's last transaction is complete), the
  committed offsets read again and sought to, then the partitions are resumed: nothing is read
  from an offset a transaction was about to move.
- **Each batch** (:meth:`TransactionalOutputs.produce`): per input partition, begin → that
  partition's outputs → its next offset, sent to the transaction → commit. Partitions run
  concurrently; one that commits moves its start offset, so when another fails and FastStream
  rewinds the whole batch, the committed part is skipped (:meth:`TransactionalOutputs.unseen`),
  not scored twice. A failed transaction is aborted: read_committed readers never see it.
- **Revoke** (after the batch in flight ended): the partitions' producers are stopped.

The consumer does not commit offsets itself in this mode (``CommitThrottle`` records nothing),
and reads ``read_committed``. Outputs are meant to be read with ``isolation_level=read_committed``:
a read_uncommitted reader also sees the records of aborted transactions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import ProducerFenced

from consumers.kafka_config import KafkaConfig
from consumers.produce import Outgoing, produce_all
from ml.logs import log_event

log = logging.getLogger("consumers.worker")

ProducerFactory = Callable[..., Any]


class TransactionalOutputs:
    """The transactional producers of the partitions this worker owns, and their start offsets."""

    def __init__(
        self,
        kafka: KafkaConfig,
        group: str,
        consumer: Callable[[], Any],
        *,
        factory: ProducerFactory = AIOKafkaProducer,
        on_outcome: Callable[[str], None] | None = None,
    ) -> None:
        self.kafka, self.group, self.consumer, self.factory = kafka, group, consumer, factory
        self.on_outcome = on_outcome
        self.producers: dict[TopicPartition, Any] = {}
        #: per partition, the offset after the last committed transaction (records below it are done)
        self.start: dict[TopicPartition, int] = {}
        self._starting: dict[TopicPartition, asyncio.Task[Any]] = {}

    def transactional_id(self, tp: TopicPartition) -> str:
        """The input partition's transactional id, the same on every worker of the group."""
        return f"{self.group}.{tp.topic}.{tp.partition}"

    async def producer(self, tp: TopicPartition) -> Any:
        """The partition's started producer (started now, once, if it is not yet)."""
        producer = self.producers.get(tp)
        if producer is not None:
            return producer
        task = self._starting.get(tp)
        if task is None:
            task = self._starting[tp] = asyncio.ensure_future(self._start(tp))
        try:
            return await asyncio.shield(task)
        finally:
            if task.done():
                self._starting.pop(tp, None)

    async def _start(self, tp: TopicPartition) -> Any:
        producer = self.factory(**self.kafka.transactional_producer_options(self.transactional_id(tp)))
        try:
            await producer.start()  # init_transactions: fences the previous owner, ends its transaction
        except BaseException:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise
        self.producers[tp] = producer
        return producer

    # ------------------------------------------------------------------ the hot path

    def unseen(self, batch: Sequence[Any]) -> list[Any] | None:
        """The records of ``batch`` not committed yet, or None when that is all of them."""
        start = self.start
        if not start:
            return None
        kept = [r for r in batch if r.offset >= start.get(TopicPartition(r.topic, r.partition), -1)]
        return None if len(kept) == len(batch) else kept

    async def produce(
        self, batch: Sequence[Any], outgoing: Sequence[Outgoing], sources: Sequence[int]
    ) -> None:
        """Commit ``outgoing`` (each answering ``batch[sources[i]]``) with the batch's offsets, one
        transaction per input partition; raise the first failure once every partition is done."""
        nexts: dict[TopicPartition, int] = {}
        for record in batch:
            tp = TopicPartition(record.topic, record.partition)
            if record.offset + 1 > nexts.get(tp, -1):
                nexts[tp] = record.offset + 1
        records: dict[TopicPartition, list[Outgoing]] = {tp: [] for tp in nexts}
        for out, source in zip(outgoing, sources, strict=True):
            record = batch[source]
            records[TopicPartition(record.topic, record.partition)].append(out)
        results = await asyncio.gather(
            *(self._commit(tp, records[tp], offset) for tp, offset in nexts.items()), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _commit(self, tp: TopicPartition, records: list[Outgoing], next_offset: int) -> None:
        producer = await self.producer(tp)
        await producer.begin_transaction()
        try:
            await produce_all(producer, records, max_request_size=self.kafka.max_request_size)
            await producer.send_offsets_to_transaction({tp: next_offset}, self.group)
            await producer.commit_transaction()
        except ProducerFenced:
            # another worker started this partition's producer: it owns the partition now
            log_event(log, "transaction_fenced", logging.WARNING, partition=f"{tp.topic}[{tp.partition}]")
            self._outcome("fenced")
            await self._drop(tp)
            raise
        except BaseException:
            with contextlib.suppress(Exception):
                await producer.abort_transaction()
            self._outcome("aborted")
            raise
        self.start[tp] = next_offset
        self._outcome("committed")

    def _outcome(self, outcome: str) -> None:
        if self.on_outcome is not None:
            self.on_outcome(outcome)

    # ------------------------------------------------------------------ rebalances

    async def assigned(self, partitions: Iterable[TopicPartition]) -> None:
        """Fence the previous owners, then read from the offsets their last transactions left."""
        partitions = list(partitions)
        if not partitions:
            return
        consumer = self.consumer()
        if consumer is not None:
            consumer.pause(*partitions)
        try:
            await asyncio.gather(*(self.producer(tp) for tp in partitions))
            if consumer is None:
                return
            for tp in partitions:
                committed = await consumer.committed(tp)
                if committed is None:
                    self.start.pop(tp, None)  # no commit yet: the reset policy decides
                else:
                    self.start[tp] = committed
                    consumer.seek(tp, committed)
        finally:
            if consumer is not None:
                consumer.resume(*partitions)

    async def revoked(self, partitions: Iterable[TopicPartition]) -> None:
        """The partitions are handed over (their batch in flight ended): stop their producers."""
        await asyncio.gather(*(self._drop(tp) for tp in partitions))

    async def _drop(self, tp: TopicPartition) -> None:
        self.start.pop(tp, None)
        producer = self.producers.pop(tp, None)
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()

    async def close(self) -> None:
        await self.revoked(list(self.producers))
