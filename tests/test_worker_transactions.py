"""Exactly-once mode's transactions, against a recording producer (the real-Kafka proof is
tests/test_worker_exactly_once.py): one transactional id per input partition, each partition's
outputs with its next offset in one transaction, a rewound batch's committed part skipped, a
failed partition aborted, a fenced one dropped, previous owners fenced before offsets are read."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaTimeoutError, ProducerFenced

from consumers.kafka_config import build_kafka_config
from consumers.produce import Outgoing
from consumers.worker_transactions import TransactionalOutputs
from ml.settings import Settings

KAFKA = build_kafka_config(Settings(delivery="exactly_once"))


class Rec:
    def __init__(self, partition: int, offset: int) -> None:
        self.topic, self.partition, self.offset = "iris.requests", partition, offset


class FakeProducer:
    """Records a transactional producer's calls; ``fail`` raises in the named step."""

    made: list[FakeProducer] = []

    def __init__(self, **options: Any) -> None:
        self.options, self.calls, self.fail = options, [], {}
        self.sent: list[Outgoing] = []
        FakeProducer.made.append(self)

    async def start(self) -> None:
        self.calls.append("start")

    async def stop(self) -> None:
        self.calls.append("stop")

    async def begin_transaction(self) -> None:
        self.calls.append("begin")

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1}

    def create_batch(self) -> Any:
        producer = self

        class Batch:
            def append(self, **record: Any) -> int:
                producer.sent.append(Outgoing("?", record["key"], record["value"]))
                return 1

        return Batch()

    async def send_batch(self, batch: Any, topic: str, partition: int) -> Any:
        if "send" in self.fail:
            raise self.fail["send"]
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    async def send_offsets_to_transaction(self, offsets: dict[TopicPartition, int], group: str) -> None:
        self.calls.append(("offsets", dict(offsets), group))

    async def commit_transaction(self) -> None:
        if "commit" in self.fail:
            raise self.fail["commit"]
        self.calls.append("commit")

    async def abort_transaction(self) -> None:
        self.calls.append("abort")


class FakeConsumer:
    def __init__(self, committed: dict[TopicPartition, int | None]) -> None:
        self._committed, self.log = committed, []

    def pause(self, *tps: TopicPartition) -> None:
        self.log.append(("pause", sorted(tp.partition for tp in tps)))

    def resume(self, *tps: TopicPartition) -> None:
        self.log.append(("resume", sorted(tp.partition for tp in tps)))

    async def committed(self, tp: TopicPartition) -> int | None:
        self.log.append(("committed", tp.partition, len(FakeProducer.made)))
        return self._committed[tp]

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.log.append(("seek", tp.partition, offset))


@pytest.fixture(autouse=True)
def _fresh() -> None:
    FakeProducer.made.clear()


def outputs(consumer: Any = None) -> tuple[TransactionalOutputs, list[str]]:
    outcomes: list[str] = []
    return (
        TransactionalOutputs(
            KAFKA, "iris-scorer", lambda: consumer, factory=FakeProducer, on_outcome=outcomes.append
        ),
        outcomes,
    )


def by_id(tx: TransactionalOutputs) -> dict[str, FakeProducer]:
    return {p.options["transactional_id"]: p for p in FakeProducer.made if p in tx.producers.values()}


def test_each_input_partition_commits_its_outputs_with_its_next_offset() -> None:
    tx, outcomes = outputs()
    batch = [Rec(0, 10), Rec(1, 3), Rec(0, 11), Rec(1, 4), Rec(1, 5)]
    out = [Outgoing("iris.predictions", f"r{i}".encode(), b"{}") for i in range(4)]  # Rec(1,5): no output
    asyncio.run(tx.produce(batch, out, [0, 1, 2, 3]))
    producers = by_id(tx)
    assert set(producers) == {"iris-scorer.iris.requests.0", "iris-scorer.iris.requests.1"}
    p0, p1 = producers["iris-scorer.iris.requests.0"], producers["iris-scorer.iris.requests.1"]
    assert [o.key for o in p0.sent] == [b"r0", b"r2"] and [o.key for o in p1.sent] == [b"r1", b"r3"]
    assert p0.calls == [
        "start",
        "begin",
        ("offsets", {TopicPartition("iris.requests", 0): 12}, "iris-scorer"),
        "commit",
    ]
    assert p1.calls[2] == ("offsets", {TopicPartition("iris.requests", 1): 6}, "iris-scorer")
    assert p0.options["enable_idempotence"] and p0.options["acks"] == "all"
    assert outcomes == ["committed", "committed"]
    assert tx.start == {TopicPartition("iris.requests", 0): 12, TopicPartition("iris.requests", 1): 6}


def test_a_partition_with_no_outputs_still_moves_its_offset() -> None:
    tx, _ = outputs()
    asyncio.run(tx.produce([Rec(2, 7)], [], []))
    (producer,) = FakeProducer.made
    assert producer.calls[1:] == [
        "begin",
        ("offsets", {TopicPartition("iris.requests", 2): 8}, "iris-scorer"),
        "commit",
    ]


def test_a_failed_partition_is_aborted_and_the_rewound_batch_skips_what_committed() -> None:
    tx, outcomes = outputs()
    batch = [Rec(0, 0), Rec(1, 0), Rec(0, 1), Rec(1, 1)]
    out = [Outgoing("iris.predictions", f"r{i}".encode(), b"{}") for i in range(4)]

    async def run() -> None:
        await tx.producer(TopicPartition("iris.requests", 0))
        (await tx.producer(TopicPartition("iris.requests", 1))).fail["send"] = KafkaTimeoutError()
        with pytest.raises(KafkaTimeoutError):
            await tx.produce(batch, out, [0, 1, 2, 3])

    asyncio.run(run())
    p0, p1 = FakeProducer.made
    assert p0.calls[-1] == "commit" and p1.calls[-1] == "abort"
    assert sorted(outcomes) == ["aborted", "committed"]
    # FastStream rewinds both partitions to the batch's first offsets: partition 0 is done
    again = tx.unseen(batch)
    assert again is not None and [(r.partition, r.offset) for r in again] == [(1, 0), (1, 1)]
    assert tx.unseen([Rec(0, 2), Rec(1, 0)]) is None


def test_a_fenced_partition_is_dropped_not_aborted() -> None:
    tx, outcomes = outputs()

    async def run() -> None:
        producer = await tx.producer(TopicPartition("iris.requests", 0))
        producer.fail["commit"] = ProducerFenced()
        with pytest.raises(ProducerFenced):
            await tx.produce([Rec(0, 5)], [], [])

    asyncio.run(run())
    (producer,) = FakeProducer.made
    assert producer.calls[-1] == "stop" and "abort" not in producer.calls
    assert outcomes == ["fenced"] and tx.producers == {}


def test_an_assignment_fences_first_then_seeks_to_the_committed_offsets() -> None:
    tp0, tp1 = TopicPartition("iris.requests", 0), TopicPartition("iris.requests", 1)
    consumer = FakeConsumer({tp0: 40, tp1: None})
    tx, _ = outputs(consumer)
    asyncio.run(tx.assigned([tp0, tp1]))
    assert consumer.log[0] == ("pause", [0, 1]) and consumer.log[-1] == ("resume", [0, 1])
    # both producers were started (the previous owners fenced) before any offset was read
    assert [e for e in consumer.log if e[0] == "committed"] == [("committed", 0, 2), ("committed", 1, 2)]
    assert ("seek", 0, 40) in consumer.log and not any(e[0] == "seek" and e[1] == 1 for e in consumer.log)
    assert tx.start == {tp0: 40}
    asyncio.run(tx.revoked([tp0]))
    assert list(tx.producers) == [tp1] and FakeProducer.made[0].calls[-1] == "stop" and tx.start == {}
