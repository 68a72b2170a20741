"""The stream worker's HTTP side: ``/health``, ``/ready``, ``/metrics``, ``/drift/latest``.

Served by uvicorn in the worker's event loop on a socket bound before anything else starts (a
port in use fails the start with one sentence); the worker, not uvicorn, owns SIGTERM/SIGINT.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ml.errors import BadInputError
from ml.metrics import Metrics

if TYPE_CHECKING:  # ml.model imports MLflow
    from ml.model import ModelHolder


@dataclass
class WorkerState:
    holder: ModelHolder
    metrics: Metrics
    drift: Any = None
    #: the challenger (shadow, canary); empty while its alias does not exist
    challenger: ModelHolder | None = None
    connected: bool = False
    kafka_error: str | None = "not connected yet"
    stopping: bool = False
    #: Record batches the consumer cannot read (``consumers.worker_errors``): where → why.
    consumer_errors: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=lambda: {"predictions": 0, "rejected": 0, "batches": 0})


def create_http_app(state: WorkerState) -> Starlette:
    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def ready(_: Request) -> Response:
        reasons = []
        if not state.connected:
            reasons.append(f"broker not connected ({state.kafka_error})")
        if not state.holder.ready:
            reasons.append("no model loaded yet")
        if state.consumer_errors:
            reasons.append("consumer cannot read: " + "; ".join(state.consumer_errors.values()))
        if state.stopping:
            reasons.append("stopping")
        if reasons:
            return JSONResponse({"status": "not_ready", "detail": "; ".join(reasons)}, status_code=503)
        extra = {"challenger_version": state.challenger.version} if state.challenger is not None else {}
        return JSONResponse(
            {"status": "ready", "model_version": state.holder.version, **extra, **state.counts}
        )

    async def metrics(_: Request) -> Response:
        return Response(state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    async def drift_latest(_: Request) -> Response:
        latest = state.drift.latest if state.drift is not None else None
        if latest is None:
            return JSONResponse(
                {"error": "not_found", "detail": "no drift window has closed yet"}, status_code=404
            )
        return JSONResponse(latest)

    routes = [
        Route("/health", health),
        Route("/ready", ready),
        Route("/metrics", metrics),
        Route("/drift/latest", drift_latest),
    ]
    return Starlette(routes=routes)


def bind_http(host: str, port: int) -> socket.socket:
    """A listening socket, or :class:`BadInputError` naming the address."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise BadInputError(
            f"the worker's HTTP port {host}:{port} cannot be used ({exc.strerror})."
        ) from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


def http_server(app: Starlette) -> Any:
    """A uvicorn server for ``app`` that leaves the process's signals alone."""
    import uvicorn

    class QuietServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:  # the worker owns SIGTERM/SIGINT
            yield

    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
    return QuietServer(config)
