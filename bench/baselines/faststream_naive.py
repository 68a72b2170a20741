"""Baseline D: a naive FastStream subscriber — one message at a time.

Each message: JSON decoded by FastStream into a dict, one ``predict_proba`` on a one-row DataFrame, one ``publish`` awaited.
``python -m bench.baselines.faststream_naive BOOTSTRAP IN_TOPIC OUT_TOPIC GROUP MODEL_URI``.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from typing import Any

import mlflow.sklearn
import pandas as pd
from faststream import FastStream
from faststream.kafka import KafkaBroker

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def build(bootstrap: str, source: str, target: str, group: str, model_uri: str) -> FastStream:
    model = mlflow.sklearn.load_model(model_uri)
    classes = [str(c) for c in model.classes_]
    broker = KafkaBroker(bootstrap)

    @broker.subscriber(source, group_id=group, auto_offset_reset="earliest", session_timeout_ms=6000)
    async def handle(request: dict[str, Any]) -> None:  # FastStream decodes the JSON body
        frame = pd.DataFrame([request], columns=FEATURES)
        proba = model.predict_proba(frame.to_numpy())[0]
        prediction = {
            "id": request["id"],
            "label": classes[int(proba.argmax())],
            "probabilities": dict(zip(classes, map(float, proba), strict=True)),
            "scored_at": datetime.now(UTC).isoformat(),
        }
        await broker.publish(prediction, target, key=request["id"].encode())

    return FastStream(broker)


if __name__ == "__main__":
    asyncio.run(build(*sys.argv[1:6]).run())
