"""What ``POST /feedback`` publishes through: one record to ``iris.feedback``, keyed by the id.

The REST adapter does not import the stream's Kafka plumbing (adapters do not import each
other); the entry point (``iris-scorer serve``) builds this sink and hands it to the app. The
producer is started on the first label, not with the service, so a REST service whose broker is
down still scores; a label then fails with 503 and a sentence naming the broker.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka import AIOKafkaProducer

from consumers.kafka_config import build_kafka_config
from ml.errors import FeedbackUnavailable
from ml.settings import Settings

START_TIMEOUT_S = 10.0
SEND_TIMEOUT_S = 15.0


class KafkaFeedbackSink:
    def __init__(self, settings: Settings) -> None:
        self.kafka = build_kafka_config(settings)
        self.topic = settings.feedback_topic
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def _started(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                producer = AIOKafkaProducer(**self.kafka.producer_options(linger_ms=0))
                try:
                    await asyncio.wait_for(producer.start(), START_TIMEOUT_S)
                except Exception as exc:
                    with contextlib.suppress(Exception):
                        await producer.stop()
                    raise self._unavailable(exc) from None
                self._producer = producer
            return self._producer

    async def send(self, key: bytes, value: bytes) -> tuple[int, int]:
        """Publish one label; (partition, offset) once the broker acknowledged it."""
        producer = await self._started()
        try:
            meta = await asyncio.wait_for(producer.send_and_wait(self.topic, value, key=key), SEND_TIMEOUT_S)
        except Exception as exc:
            raise self._unavailable(exc) from None
        return meta.partition, meta.offset

    def _unavailable(self, exc: BaseException) -> FeedbackUnavailable:
        why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return FeedbackUnavailable(
            f"the label could not be published to {self.topic} at {self.kafka.bootstrap_servers} ({why})."
        )

    async def close(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()
