"""The REST floor: a bare Starlette app with one route that reads and orjson-decodes the body
and returns a constant, served by uvicorn the way ``iris-scorer serve`` is (one process, uvloop,
httptools, no access log). ``python -m bench.baselines.starlette_floor PORT``.

Anything ours spends above this is our own code: validation, scoring, metrics, logging.
"""

from __future__ import annotations

import sys

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

ANSWER = orjson.dumps(
    {"label": "setosa", "probabilities": {"setosa": 1.0, "versicolor": 0.0, "virginica": 0.0}}
)


async def predict(request: Request) -> Response:
    orjson.loads(await request.body())
    return Response(ANSWER, media_type="application/json")


async def ready(request: Request) -> Response:
    return Response(b"ok")


app = Starlette(routes=[Route("/predict", predict, methods=["POST"]), Route("/ready", ready)])

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="warning",
        access_log=False,
        server_header=False,
    )
