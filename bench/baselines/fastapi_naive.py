"""Baseline A: a FastAPI service written like the original Iris project.

Pydantic request model, a SYNC handler (runs in the thread pool), one ``predict_proba`` per
request on a one-row pandas DataFrame, model loaded with ``mlflow.sklearn.load_model``; uvicorn,
one worker. ``python -m bench.baselines.fastapi_naive PORT MODEL_URI``.
"""

from __future__ import annotations

import sys

import mlflow.sklearn
import pandas as pd
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


class IrisRequest(BaseModel):
    sepal_length: float
    sepal_width: float
    petal_length: float
    petal_width: float


def create_app(model_uri: str) -> FastAPI:
    app = FastAPI(title="iris naive")
    model = mlflow.sklearn.load_model(model_uri)
    classes = [str(c) for c in model.classes_]

    @app.post("/predict")
    def predict(request: IrisRequest) -> dict[str, object]:
        frame = pd.DataFrame([request.model_dump()], columns=FEATURES)
        proba = model.predict_proba(frame.to_numpy())[0]
        best = int(proba.argmax())
        return {"label": classes[best], "probabilities": dict(zip(classes, map(float, proba), strict=True))}

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


if __name__ == "__main__":
    uvicorn.run(
        create_app(sys.argv[2]), host="127.0.0.1", port=int(sys.argv[1]), workers=1, log_level="warning"
    )
