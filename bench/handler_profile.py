"""CPU per message of the stream handler alone (no broker): ``python -m bench.handler_profile``.

``StreamHandler.handle`` on 500-record batches of valid requests with a sink that does nothing, the
scoring by two NumPy logistic regressions (random weights), shadow off and on, the label join off
and on: what shadow costs the handler itself, apart from producing twice the records. Process CPU
time of 300 batches after 50 warm-up ones; the services' heap policy applied
(:func:`iris_scorer.process.keep_freed_memory`).
"""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson

from consumers.feedback import FeedbackReader
from consumers.handler import StreamHandler
from consumers.kafka_config import build_kafka_config
from iris_scorer import process
from ml.compiled import Linear
from ml.experiment import Agreement, Experiment
from ml.metrics import Metrics
from ml.model import LoadedModel, ModelHolder, ModelRef
from ml.predict import Scorer
from ml.settings import Settings

BATCH, WARM, TIMED = 500, 50, 300


def _model(version: str, role: str, rng: np.random.Generator) -> LoadedModel:
    form = Linear(rng.random((4, 3)), rng.random(3), binary=False)
    classes = np.array(["setosa", "versicolor", "virginica"])
    return LoadedModel(ModelRef("iris", version, None, None), "u", None, classes, compiled=form, role=role)


def _messages() -> list[Any]:
    row = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
    return [
        SimpleNamespace(
            topic="iris.requests",
            partition=0,
            offset=i,
            key=f"r-{i}".encode(),
            value=orjson.dumps({"id": f"r-{i}", **row}),
            headers=[],
        )
        for i in range(BATCH)
    ]


async def _nothing(outgoing: Any) -> None:
    return None


def per_message_us(shadow: bool, join: bool) -> float:
    rng = np.random.default_rng(0)
    champion, challenger = _model("1", "champion", rng), _model("2", "challenger", rng)
    metrics, settings = Metrics(), Settings()
    reader = FeedbackReader(settings, build_kafka_config(settings), metrics, _nothing) if join else None
    handler = StreamHandler(
        Scorer(ModelHolder(champion), metrics),
        _nothing,
        predictions_topic="p",
        dlq_topic="d",
        max_message_bytes=1_000_000,
        max_record_bytes=1_048_576,
        experiment=Experiment(ModelHolder(champion), ModelHolder(challenger), shadow=shadow),
        agreement=Agreement(metrics, 1000),
        on_scored=reader.scored if reader is not None else None,
    )
    batch = _messages()

    async def run() -> float:
        for _ in range(WARM):
            await handler.handle(batch)
        started = time.process_time()
        for _ in range(TIMED):
            await handler.handle(batch)
        return (time.process_time() - started) / TIMED / BATCH * 1e6

    return asyncio.run(run())


def main() -> None:
    process.keep_freed_memory()
    for shadow in (False, True):
        for join in (False, True):
            print(
                f"shadow={shadow!s:<5} join={join!s:<5} {per_message_us(shadow, join):.2f} µs CPU per message"
            )


if __name__ == "__main__":
    main()
