"""The worker's label join: ``iris.feedback`` read for the partitions this worker scores.

**Co-partitioning.** Feedback is keyed by the request id, like the request, and both topics have
the same partition count, so (with Kafka's default murmur2 partitioner, which the Java client,
aiokafka, kafka-python and ``iris-scorer publish`` use; librdkafka clients such as kcat need
``partitioner=murmur2_random``) a request and its label land in partitions with the same number.
The reader does not join a consumer group of its own to get partitions: it *mirrors* the request
subscriber's assignment. When the group gives this worker ``iris.requests[p]``, the reader
assigns itself ``iris.feedback[p]``; when ``p`` is revoked, it commits and lets go. So the label
of a request reaches the worker that scored it, with N workers as with one. Its offsets are
committed under the group ``<IRIS_CONSUMER_GROUP>.feedback`` (a group with no members: Kafka
accepts commits from assigned consumers there).

**State** (:class:`ml.feedback.JoinState`): id → which model gave which label, bounded by
``IRIS_JOIN_MAX_IDS`` and ``IRIS_JOIN_TTL_SECONDS``. It is filled by the handler as predictions
are acknowledged (:meth:`FeedbackReader.scored`).

**Restart.** Memory is lost on a restart or when a partition moves to another worker. Before the
reader reads ``iris.feedback[p]`` it rebuilds the state of partition ``p`` from
``iris.predictions[p]`` (and ``iris.shadow[p]`` in shadow mode): the records of the last TTL, at
most ``IRIS_JOIN_MAX_IDS`` of them, read up to the end offsets seen at that moment. Predictions
are keyed by id with the same partitioner, so they sit in the same partition number. Nothing
else has to be stored: ``iris.predictions`` already is the durable log of what was predicted.

Bad feedback goes to ``iris.feedback.dlq`` exactly as bad requests go to theirs; a label for an
id with no prediction kept is counted (``iris_feedback_unmatched_total``), not an error. Every
``IRIS_PERFORMANCE_WINDOW_SIZE`` labelled predictions close a window (:class:`ml.feedback.
LiveWindow`): a message on ``iris.performance`` and the ``iris_live_*`` gauges.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import TYPE_CHECKING, Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from consumers.handler import dlq_record
from consumers.kafka_config import KafkaConfig
from consumers.produce import Outgoing
from ml.feedback import Feedback, JoinState, LiveWindow, check_feedback
from ml.logs import log_event
from ml.messages import Rejected
from ml.metrics import Metrics
from ml.settings import Settings

if TYPE_CHECKING:
    from ml.experiment import Outcome

log = logging.getLogger("consumers.feedback")

Produce = Callable[[Sequence[Outgoing]], Awaitable[None]]
IDLE_POLL_S = 0.5
STOP_TIMEOUT_S = 3.0


class FeedbackReader:
    def __init__(self, settings: Settings, kafka: KafkaConfig, metrics: Metrics, produce: Produce) -> None:
        self.settings, self.kafka, self.metrics, self.produce = settings, kafka, metrics, produce
        self.join = JoinState(
            settings.join_max_ids, settings.join_ttl_seconds, settings.feedback_early_seconds
        )
        self.window = LiveWindow(settings.performance_window_size)
        self.wanted: set[int] = set()  # request partitions assigned to this worker
        self.reading: set[int] = set()
        self._changed = asyncio.Event()
        self.counts = {"matched": 0, "unmatched": 0, "rejected": 0, "duplicate": 0, "windows": 0}
        #: Evidently classification reports, one window at a time, in a child process of their own
        #: (started at the first closed window); a window closing while one is written gets none
        self._reports: ProcessPoolExecutor | None = None
        self._report: Future[list[str]] | None = None
        self._report_pid: Future[int] | None = None

    # ------------------------------------------------------------------ told by the worker

    def scored(self, ids: Sequence[str | None], outcome: Outcome) -> None:
        """One batch's acknowledged answers (and, in shadow, both models' labels): join candidates."""
        if outcome.shadow is not None:  # every id with both labels (a canary's answer is the challenger's)
            ours, theirs = outcome.shadow
            self.join.add_scored(
                ids,
                [
                    (("champion", ours.model.version), ours.labels.tolist()),
                    (("challenger", theirs.model.version), theirs.labels.tolist()),
                ],
            )
        else:
            for answer in outcome.answers:
                rows = ids if answer.rows is None else [ids[i] for i in answer.rows.tolist()]
                key = (answer.scores.model.role, answer.scores.model.version)
                self.join.add_scored(rows, [(key, answer.scores.labels.tolist())])
        self.metrics.join_size.set(len(self.join))

    async def assigned(self, partitions: Iterable[TopicPartition]) -> None:
        self.wanted |= {tp.partition for tp in partitions if tp.topic == self.settings.requests_topic}
        self._changed.set()

    async def revoked(self, partitions: Iterable[TopicPartition]) -> None:
        self.wanted -= {tp.partition for tp in partitions if tp.topic == self.settings.requests_topic}
        self._changed.set()

    # ------------------------------------------------------------------ the loop

    def _consumer(self, group: str | None) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_partition_fetch_bytes=self.kafka.max_partition_fetch_bytes,
            **self.kafka.client_options(),
        )

    async def run(self) -> None:
        """Follow the assignment and join feedback until cancelled (commits on the way out)."""
        consumer = self._consumer(f"{self.settings.consumer_group}.feedback")
        await consumer.start()
        interval_s, committed_at, uncommitted = self.settings.commit_interval_ms / 1000, 0.0, False
        try:
            while True:
                if self._changed.is_set():
                    self._changed.clear()
                    await self._follow(consumer)
                if not self.reading:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), IDLE_POLL_S)
                    continue
                batches = await consumer.getmany(timeout_ms=int(IDLE_POLL_S * 1000), max_records=1000)
                records = [r for rs in batches.values() for r in rs]
                if records:
                    await self.handle(records)
                    uncommitted = True
                else:
                    await self.settle()
                if uncommitted and time.monotonic() - committed_at >= interval_s:  # Event Hubs: 4/s
                    await consumer.commit()
                    uncommitted, committed_at = False, time.monotonic()
        finally:  # bounded: on a stop the broker may be going away too (the demo stops both at once)
            with contextlib.suppress(Exception):
                if self.reading:
                    await asyncio.wait_for(consumer.commit(), STOP_TIMEOUT_S)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.stop(), STOP_TIMEOUT_S)
            if self._reports is not None:  # a report being written is given up: the window is on the topic
                from consumers.drift_process import end_child

                self._reports.shutdown(wait=False, cancel_futures=True)
                end_child(self._report_pid, grace_s=0.5)
                self._reports = None

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        wanted, topic = set(self.wanted), self.settings.feedback_topic
        gone, new = self.reading - wanted, wanted - self.reading
        if gone:
            with contextlib.suppress(Exception):  # the next owner re-reads from the last commit
                tps = [TopicPartition(topic, p) for p in gone]
                await consumer.commit({tp: await consumer.position(tp) for tp in tps})
        if new:
            await self.rebuild(new)
        consumer.assign([TopicPartition(topic, p) for p in sorted(wanted)])
        self.reading = wanted
        log_event(
            log, "feedback_partitions", partitions=sorted(wanted), rebuilt=sorted(new), kept=len(self.join)
        )

    async def rebuild(self, partitions: Iterable[int]) -> None:
        """Fill the join state of ``partitions`` from ``iris.predictions`` (and ``iris.shadow``)."""
        started = time.monotonic()
        topics = [self.settings.predictions_topic] + (
            [self.settings.shadow_topic] if self.settings.shadow else []
        )
        wanted = [TopicPartition(t, p) for t in topics for p in sorted(partitions)]
        reader = self._consumer(None)
        await reader.start()
        read = 0
        try:
            reader.assign(wanted)
            ends = await reader.end_offsets(wanted)
            starts = await reader.beginning_offsets(wanted)
            since_ms = int((time.time() - self.settings.join_ttl_seconds) * 1000)
            by_time: dict[TopicPartition, Any] = {}
            with contextlib.suppress(Exception):  # a broker without timestamp lookups: count only
                by_time = await reader.offsets_for_times(dict.fromkeys(wanted, since_ms))
            todo = {}
            for tp in wanted:
                first = max(starts[tp], ends[tp] - self.settings.join_max_ids)
                found = by_time.get(tp)
                if found is not None:
                    first = max(first, found.offset)
                if first < ends[tp]:
                    reader.seek(tp, first)
                    todo[tp] = ends[tp]
            reader.pause(*[tp for tp in wanted if tp not in todo])
            while todo:
                batches = await reader.getmany(timeout_ms=1000, max_records=5000)
                for tp, records in batches.items():
                    end = ends[tp]
                    kept = [r for r in records if r.offset < end]
                    read += len(kept)
                    self._remember(tp.topic, kept)
                for tp in list(todo):
                    if await reader.position(tp) >= todo[tp]:
                        todo.pop(tp)
                        reader.pause(tp)
        finally:
            await reader.stop()
        self.metrics.join_size.set(len(self.join))
        log_event(
            log,
            "feedback_join_rebuilt",
            partitions=sorted(partitions),
            records=read,
            kept=len(self.join),
            seconds=round(time.monotonic() - started, 3),
        )

    def _remember(self, topic: str, records: Sequence[ConsumerRecord[Any, Any]]) -> None:
        horizon = time.time() - self.settings.join_ttl_seconds
        for record in records:
            at = record.timestamp / 1000
            if at < horizon or not record.value:
                continue
            try:
                value = orjson.loads(record.value)
                if topic == self.settings.shadow_topic:
                    self.join.add_shadow([value], at)
                else:
                    self.join.add_predictions([value], at)
            except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
                continue  # not ours to judge: the join only skips what it cannot read

    async def handle(self, records: Sequence[ConsumerRecord[Any, Any]]) -> None:
        """Join one batch of feedback; produce dead letters and closed windows, then count."""
        outgoing: list[Outgoing] = []
        counts = dict.fromkeys(("matched", "unmatched", "rejected", "duplicate"), 0)
        for index, record in enumerate(records):
            item = check_feedback(record.value, self.settings.max_message_bytes, index)
            if isinstance(item, Rejected):
                counts["rejected"] += 1
                limit = self.kafka.max_request_size
                outgoing.append(dlq_record(self.settings.feedback_dlq_topic, record, item, limit))
                continue
            outcome, closed = self._join(item)
            if outcome != "waiting":
                counts[outcome] += 1
            if closed is not None:
                outgoing.append(self._closed(closed))
        await self.settle(outgoing, counts)

    async def settle(
        self, outgoing: list[Outgoing] | None = None, counts: dict[str, int] | None = None
    ) -> None:
        """Join the labels that waited for their predictions, count the ones that waited too long,
        produce dead letters and closed windows, then count (also called when no label arrived)."""
        outgoing = [] if outgoing is None else outgoing
        counts = (
            dict.fromkeys(("matched", "unmatched", "rejected", "duplicate"), 0) if counts is None else counts
        )
        ready, self.join.ready = self.join.ready, []
        for truth, labels in ready:
            counts["matched"] += 1
            closed = self.window.add(truth, labels)
            if closed is not None:
                outgoing.append(self._closed(closed))
        counts["unmatched"] += self.join.expire_early()
        if outgoing:
            await self.produce(outgoing)
        for outcome, n in counts.items():
            if n:
                self.counts[outcome] += n
                self.metrics.feedback.labels(outcome=outcome).inc(n)
        if counts["unmatched"]:
            self.metrics.feedback_unmatched.inc(counts["unmatched"])

    def _closed(self, window: dict[str, Any]) -> Outgoing:
        self._publish_gauges(window)
        return Outgoing(self.settings.performance_topic, None, orjson.dumps(window))

    def _join(self, feedback: Feedback) -> tuple[str, dict[str, Any] | None]:
        labels = self.join.take(feedback.id)
        if labels is None:  # not scored yet, or long gone: it waits (IRIS_FEEDBACK_EARLY_SECONDS)
            self.join.wait(feedback.id, feedback.label)
            return "waiting", None
        if labels is False:
            return "duplicate", None
        assert isinstance(labels, dict)
        return "matched", self.window.add(feedback.label, labels)

    def _publish_gauges(self, message: dict[str, Any]) -> None:
        self.counts["windows"] += 1
        self.metrics.live_windows.inc()
        for model in message["models"]:
            labels = {"model_version": model["model_version"], "alias": model["alias"]}
            self.metrics.live_accuracy.labels(**labels).set(model["accuracy"])
            self.metrics.live_f1_macro.labels(**labels).set(model["f1_macro"])
        log_event(log, "performance_window", labelled=message["labelled"], models=message["models"])
        self._write_report(message)

    def _write_report(self, window: dict[str, Any]) -> None:
        from ml.drift_job import lower_priority
        from ml.performance_report import save_window_reports

        if self._report is not None and not self._report.done():
            log_event(log, "performance_report_skipped", reason="a report is still being written")
            return
        if self._reports is None:
            spawn = multiprocessing.get_context("spawn")
            self._reports = ProcessPoolExecutor(1, mp_context=spawn, initializer=lower_priority)
            self._report_pid = self._reports.submit(os.getpid)  # to end it at once on a stop
        reports = self.settings.reports_dir
        self._report = self._reports.submit(
            save_window_reports,
            window,
            reports / "performance",
            self.settings.reports_keep,
            reports / "workspace",
        )
        self._report.add_done_callback(_reported)


def _reported(future: Future[list[str]]) -> None:
    if future.cancelled():
        return
    error = future.exception()
    if error is not None:
        log_event(log, "performance_report_failed", logging.WARNING, error=repr(error))
    else:
        log_event(log, "performance_report", reports=future.result())
