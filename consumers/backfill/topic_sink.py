"""A backfill sink that publishes predictions to a Kafka topic (``--to-topic``).

Records have the ``iris.predictions`` shape with ``source="backfill"`` and the request id as key,
produced in bulk through :func:`consumers.produce.produce_all` on a private event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from consumers.backfill.topics import TopicError, construct_on_loop, kafka_config
from consumers.kafka_connect import explain_connect_failure
from ml.messages import encode_predictions
from ml.predict import Scores, prediction_records
from ml.settings import Settings


class TopicPublisher:
    """Publishes predictions (the ``iris.predictions`` shape, ``source="backfill"``, key = id)."""

    def __init__(self, settings: Settings, topic: str) -> None:
        from aiokafka import AIOKafkaProducer
        from aiokafka.errors import KafkaError

        kafka = kafka_config(settings)
        self.topic, self.max_request_size = topic, kafka.max_request_size
        self.loop = asyncio.new_event_loop()
        self.producer = self.loop.run_until_complete(
            construct_on_loop(AIOKafkaProducer, **kafka.producer_options(linger_ms=0))
        )
        try:
            self.loop.run_until_complete(self.producer.start())
        except KafkaError as exc:
            reason = self.loop.run_until_complete(explain_connect_failure(kafka, exc))
            self.close()
            raise TopicError(reason) from None

    def send(self, ids: Sequence[str], scores: Scores, scored_at: str) -> None:
        values = encode_predictions(prediction_records(ids, scores, "backfill", scored_at))
        self.loop.run_until_complete(self._send(ids, values))

    async def _send(self, ids: Sequence[str], values: Sequence[bytes]) -> None:
        from aiokafka.errors import KafkaError

        from consumers.produce import Outgoing, produce_all

        records = [Outgoing(self.topic, key.encode(), value) for key, value in zip(ids, values, strict=True)]
        try:
            await produce_all(self.producer, records, max_request_size=self.max_request_size)
        except KafkaError as exc:
            raise TopicError(f"publishing to {self.topic} failed: {type(exc).__name__}: {exc}.") from None

    def close(self) -> None:
        try:
            self.loop.run_until_complete(self.producer.stop())
        finally:
            self.loop.close()
