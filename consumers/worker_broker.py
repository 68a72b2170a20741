"""The stream worker's FastStream broker: one batch subscriber, its ack policy, its routes.

``iris.requests`` is consumed in batches by :func:`create_broker`'s subscriber, declared with
``AckPolicy.NACK_ON_ERROR`` (at-least-once): when the handler returns, every output of the batch
has been acknowledged by the broker and FastStream commits the batch's offsets; when it raises,
FastStream nacks the batch, which rewinds each of its partitions to the batch's first offset, so
it is consumed again. Nothing is committed in between (auto-commit is off for that policy).

Routing is declared next to the subscriber: valid requests → the predictions publisher, rejected
ones → the dead-letter publisher (original key, value and headers, plus the reason headers of
:func:`consumers.handler.dlq_record`). Decoding is per message and never fails a batch:

- the parser is FastStream's own, except that a batch with a header value that is not UTF-8
  (which FastStream's batch parser would refuse as a whole) is parsed from copies with readable
  headers, and the message keeps the original records (bytes and headers unchanged);
- the decoder turns each value into a :class:`~ml.schema.Record` or a
  :class:`~ml.messages.Rejected` reason (:func:`consumers.handler.decode_requests`): bad JSON,
  invalid fields, empty values and tombstones are reasons, not exceptions.

The handler's parameter is typed with those items; the documented payload is the request object
(:class:`consumers.worker_contract.StreamRequestModel`), one per Kafka message.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from aiokafka import ConsumerRecord
from faststream.kafka import KafkaBroker, KafkaMessage, Topic
from faststream.kafka.publisher.usecase import DefaultPublisher
from faststream.middlewares import AckPolicy
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512
from pydantic import SkipValidation, WithJsonSchema

from consumers.handler import StreamItem, decode_requests
from consumers.kafka_config import KafkaConfig, build_kafka_config
from consumers.worker_commits import CommitThrottle, RevokeListener
from consumers.worker_contract import (
    DriftMessageModel,
    PerformanceMessageModel,
    ShadowMessageModel,
    StreamRequestModel,
)
from consumers.worker_transactions import TransactionalOutputs
from ml.schema import PredictionModel
from ml.settings import Settings

GRACEFUL_TIMEOUT_S = 6.0

Batch = Sequence[ConsumerRecord[Any, Any]]
#: What the subscriber hands a batch to: the raw records and their decoded requests, in order.
BatchRoute = Callable[[Batch, Sequence[StreamItem]], Awaitable[None]]

#: The handler's batch: one decoded item per Kafka message, already validated by
#: :mod:`ml.messages` (so FastDepends does not validate again); each message is a request object.
StreamRequests = Annotated[
    list[StreamItem],
    SkipValidation,
    WithJsonSchema(StreamRequestModel.model_json_schema()),
]


@dataclass(frozen=True)
class WorkerBroker:
    """The broker and the endpoints the worker's runtime uses."""

    broker: KafkaBroker
    subscriber: Any
    predictions: DefaultPublisher
    dead_letters: DefaultPublisher
    drift: DefaultPublisher
    shadow: DefaultPublisher


def _security(kafka: KafkaConfig) -> BaseSecurity | None:
    if kafka.security_protocol == "PLAINTEXT":
        return None
    ssl_context = kafka.client_options().get("ssl_context")
    if kafka.sasl_mechanism is None:
        return BaseSecurity(ssl_context=ssl_context, use_ssl=True)
    password = kafka.sasl_password.get_secret_value() if kafka.sasl_password else ""
    sasl = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512}
    cls = sasl[kafka.sasl_mechanism]
    return cls(kafka.sasl_username or "", password, ssl_context=ssl_context, use_ssl=kafka.uses_ssl)


def _readable_headers(record: ConsumerRecord[Any, Any]) -> ConsumerRecord[Any, Any]:
    headers = [(name, value.decode("utf-8", "replace").encode()) for name, value in record.headers]
    return dataclasses.replace(record, headers=headers)


async def parse_batch(
    raw: tuple[ConsumerRecord[Any, Any], ...], original: Callable[[Any], Awaitable[KafkaMessage]]
) -> KafkaMessage:
    """FastStream's batch parser, tolerant of header values that are not UTF-8."""
    try:
        return await original(raw)
    except UnicodeDecodeError:
        message = await original(tuple(_readable_headers(r) for r in raw))
        message.raw_message = raw  # the DLQ copies the original bytes and headers
        return message


def create_broker(
    settings: Settings,
    route: BatchRoute,
    *,
    on_parse_error: Callable[[BaseException, Batch], None] | None = None,
    commits: CommitThrottle | None = None,
    transactions: TransactionalOutputs | None = None,
    feedback: Any = None,
) -> WorkerBroker:
    """The worker's broker, subscriber and publishers; nothing connects until ``start()``.
    ``on_parse_error`` is told of a batch FastStream's parser refuses (it is then retried);
    ``commits`` records each acknowledged batch and commits revoked partitions
    (:mod:`consumers.worker_commits`); ``transactions`` (exactly-once mode) is told of assigned
    and revoked partitions (:mod:`consumers.worker_transactions`)."""
    kafka = build_kafka_config(settings)
    producer = kafka.producer_options(linger_ms=0)
    broker = KafkaBroker(
        kafka.bootstrap_list,
        request_timeout_ms=kafka.request_timeout_ms,
        metadata_max_age_ms=kafka.metadata_max_age_ms,
        connections_max_idle_ms=kafka.connections_max_idle_ms,
        security=_security(kafka),
        acks=producer["acks"],
        enable_idempotence=producer["enable_idempotence"],
        max_request_size=producer["max_request_size"],
        max_batch_size=producer["max_batch_size"],
        allow_auto_create_topics=False,
        graceful_timeout=GRACEFUL_TIMEOUT_S,
        logger=logging.getLogger("consumers.faststream"),  # our structured format
        log_level=logging.DEBUG,  # FastStream logs every batch: keep that out of INFO
        description="Iris stream scorer: requests in, predictions and dead letters out.",
    )
    consumer = kafka.consumer_options()
    consumer.pop("enable_auto_commit")  # FastStream derives it from the ack policy (off here)

    async def guarded_parse(
        raw: tuple[ConsumerRecord[Any, Any], ...], original: Callable[[Any], Awaitable[KafkaMessage]]
    ) -> KafkaMessage:
        try:
            return await parse_batch(raw, original)
        except Exception as exc:
            if on_parse_error is not None:
                on_parse_error(exc, raw)
            raise

    def decode(message: KafkaMessage) -> list[StreamItem]:
        return decode_requests(message.raw_message, settings.max_message_bytes)

    subscriber = broker.subscriber(
        Topic(settings.requests_topic, declare=False),
        group_id=settings.consumer_group,
        batch=True,
        max_records=settings.batch_max_records,
        batch_timeout_ms=settings.batch_max_wait_ms,
        fetch_max_wait_ms=max(10, min(500, settings.batch_max_wait_ms)),
        ack_policy=AckPolicy.NACK_ON_ERROR,  # commit when every output is acked; else rewind
        listener=RevokeListener(commits, transactions, feedback) if commits is not None else None,
        parser=guarded_parse,
        decoder=decode,
        title=f"{settings.requests_topic}:score",
        description=(
            "Scoring requests, consumed in batches. Valid ones are scored and published to "
            f"{settings.predictions_topic}; bad ones go unchanged to {settings.dlq_topic}. "
            + (
                "Each partition's outputs and next offset are committed in one Kafka transaction "
                "(exactly-once: read the outputs with isolation_level=read_committed)."
                if settings.delivery == "exactly_once"
                else "Offsets are committed after both are acknowledged (at-least-once)."
            )
        ),
        **consumer,
    )
    predictions = broker.publisher(
        Topic(settings.predictions_topic, declare=False),
        schema=PredictionModel,
        title=f"{settings.predictions_topic}:publish",
        description="One prediction per valid request; key: the request id.",
    )
    dead_letters = broker.publisher(
        Topic(settings.dlq_topic, declare=False),
        schema=Annotated[bytes, WithJsonSchema({"description": "the request's value, unchanged"})],
        title=f"{settings.dlq_topic}:publish",
        description=(
            "Requests that could not be scored: the original key, value and headers unchanged, "
            "plus the headers error (empty, too_large, invalid_json, validation_error), "
            "error_detail, source_topic, source_partition, source_offset."
        ),
    )
    drift = broker.publisher(
        Topic(settings.drift_topic, declare=False),
        schema=DriftMessageModel,
        title=f"{settings.drift_topic}:publish",
        description="One drift summary per closed window of scored requests.",
    )
    shadow = broker.publisher(
        Topic(settings.shadow_topic, declare=False),
        schema=ShadowMessageModel,
        title=f"{settings.shadow_topic}:publish",
        description=(
            "IRIS_SHADOW=true: one comparison per valid request scored by both the champion and the "
            "challenger (the caller gets the champion's answer, or the challenger's for a canary "
            "request); key: the request id."
        ),
    )

    @subscriber  # type: ignore[untyped-decorator]
    async def score_requests(requests: StreamRequests, message: KafkaMessage) -> None:
        """Valid requests → predictions, rejected ones → dead letters; then the commit."""
        try:
            await route(message.raw_message, requests)
            if commits is not None:
                commits.acked(message.raw_message)
        finally:
            if commits is not None:
                commits.done()  # a revoke waiting for this batch may commit and hand over now

    broker.publisher(
        Topic(settings.feedback_dlq_topic, declare=False),
        schema=Annotated[bytes, WithJsonSchema({"description": "the label's value, unchanged"})],
        title=f"{settings.feedback_dlq_topic}:publish",
        description=(
            f"Labels read from {settings.feedback_topic} ({{id, label, labelled_at}}, key: the id, the "
            "partitions with the numbers of this worker's request partitions) that could not be "
            "joined: unchanged, with the same error headers as the requests' dead letters."
        ),
    )
    broker.publisher(
        Topic(settings.performance_topic, declare=False),
        schema=PerformanceMessageModel,
        title=f"{settings.performance_topic}:publish",
        description="One message per window of labelled predictions: per model version, live accuracy and F1.",
    )
    return WorkerBroker(broker, subscriber, predictions, dead_letters, drift, shadow)
