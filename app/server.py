"""The REST service, composed in one place: routes, middleware, exception handlers, lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
from collections.abc import AsyncIterator, Callable, Iterator

import uvicorn
from mlflow.tracking import MlflowClient
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.docs import docs_asset, docs_page
from app.encoding import json_response
from app.errors import http_error, internal_error, iris_error
from app.middleware import HttpObserver
from app.openapi import openapi_document
from app.routes import Api, AppState, FeedbackSink
from ml import tracking
from ml.errors import IrisError
from ml.logs import configure_logging, log_event
from ml.metrics import Metrics
from ml.model import ModelHolder, load_model, mask_uri, parse_model_uri
from ml.reload import ModelWatcher, challenger_watcher
from ml.settings import Settings

log = logging.getLogger(__name__)

WatcherFactory = Callable[[MlflowClient, ModelHolder, Metrics], ModelWatcher]
Hook = Callable[[], None]


def _nothing() -> None:
    return None


def default_watcher(
    settings: Settings,
    client: MlflowClient,
    holder: ModelHolder,
    metrics: Metrics,
    *,
    settle_heap: Hook = _nothing,
) -> ModelWatcher:
    # The REST service never computes drift: skip downloading the reference data.
    loader = functools.partial(load_model, with_reference=False)
    return ModelWatcher(
        client,
        settings.model_uri,
        holder,
        metrics,
        poll_seconds=settings.model_poll_seconds,
        loader=loader,
        after_swap=settle_heap,
    )


def create_app(
    settings: Settings,
    *,
    holder: ModelHolder | None = None,
    metrics: Metrics | None = None,
    watcher_factory: WatcherFactory | None = None,
    settle_heap: Hook = _nothing,
    challenger: ModelHolder | None = None,
    feedback: FeedbackSink | None = None,
) -> Starlette:
    """The app. With ``holder`` (a loaded model) and no ``watcher_factory`` the registry is not
    used; ``challenger`` (tests) is a loaded challenger, else one is watched when shadow or
    canary asks for it."""
    watch = holder is None or watcher_factory is not None
    state = AppState.build(settings, holder or ModelHolder(), metrics or Metrics(), challenger)
    state.feedback = feedback
    api = Api(state)
    openapi = openapi_document(settings)

    async def openapi_json(request: Request) -> Response:
        return json_response(openapi)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        tasks: list[asyncio.Task[None]] = []
        if watch:
            client = tracking.client(settings.mlflow_tracking_uri)
            factory = watcher_factory or functools.partial(default_watcher, settings, settle_heap=settle_heap)
            state.watcher = factory(client, state.holder, state.metrics)
            tasks.append(asyncio.create_task(state.watcher.run(), name="model-watcher"))
            rival = (
                None
                if challenger is not None
                else challenger_watcher(
                    settings,
                    client,
                    state.experiment.challenger,
                    state.metrics,
                    loader=functools.partial(load_model, with_reference=False),
                    after_swap=settle_heap,
                )
            )
            if rival is not None:
                tasks.append(asyncio.create_task(rival.run(), name="challenger-watcher"))
        for serving in (state.holder, state.experiment.challenger):
            if not watch and serving.model is not None:
                state.metrics.set_model(serving.model.name, serving.model.version, serving.model.role)
        await state.batcher.start()
        await state.canary_batcher.start()
        log_event(
            log,
            "rest_started",
            model_uri=settings.model_uri,
            registry=mask_uri(settings.mlflow_tracking_uri) if watch else None,
            auth=settings.api_key is not None,
        )
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await state.batcher.stop()
            await state.canary_batcher.stop()
            close = getattr(feedback, "close", None)
            if close is not None:
                await close()
            log_event(log, "rest_stopped")

    app = Starlette(
        routes=[
            Route("/predict", api.protected(api.predict), methods=["POST"]),
            Route("/invocations", api.protected(api.invocations), methods=["POST"]),
            Route("/feedback", api.protected(api.feedback), methods=["POST"]),
            Route("/model", api.protected(api.model), methods=["GET"]),
            Route("/health", api.health, methods=["GET"]),
            Route("/ping", api.ping, methods=["GET"]),
            Route("/version", api.version, methods=["GET"]),
            Route("/ready", api.ready, methods=["GET"]),
            Route("/metrics", api.metrics, methods=["GET"]),
            Route("/openapi.json", openapi_json, methods=["GET"]),
            Route("/docs", docs_page, methods=["GET"]),
            Route("/docs/assets/{name}", docs_asset, methods=["GET"]),
            Route("/v2", api.v2_server, methods=["GET"]),
            Route("/v2/health/live", api.v2_live, methods=["GET"]),
            Route("/v2/health/ready", api.v2_ready, methods=["GET"]),
            Route("/v2/models/{name}", api.protected(api.v2_model), methods=["GET"]),
            Route("/v2/models/{name}/ready", api.v2_model_ready, methods=["GET"]),
            Route("/v2/models/{name}/infer", api.protected(api.v2_infer), methods=["POST"]),
            Route("/v2/models/{name}/versions/{version}", api.protected(api.v2_model), methods=["GET"]),
            Route("/v2/models/{name}/versions/{version}/ready", api.v2_model_ready, methods=["GET"]),
            Route(
                "/v2/models/{name}/versions/{version}/infer", api.protected(api.v2_infer), methods=["POST"]
            ),
        ],
        middleware=[Middleware(HttpObserver, metrics=state.metrics, access_log=settings.access_log)],
        exception_handlers={IrisError: iris_error, HTTPException: http_error, Exception: internal_error},
        lifespan=lifespan,
    )
    app.state.iris = state
    app.state.scorer = state.scorer
    return app


class _Server(uvicorn.Server):
    """uvicorn, with SIGTERM and SIGINT handled by :func:`serve` instead of uvicorn's own handlers."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _serve_until_signal(server: uvicorn.Server) -> int | None:
    """Serve; the first SIGTERM/SIGINT stops gracefully, a second one forces the exit.
    Returns the signal that stopped the server (None if it stopped by itself)."""
    loop = asyncio.get_running_loop()
    received: list[int] = []

    def stop(sig: int) -> None:
        received.append(sig)
        if server.should_exit:
            server.force_exit = True
        server.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop, sig)
    announce = asyncio.create_task(_announce(server))
    try:
        await server.serve()
    finally:
        announce.cancel()
    return received[0] if received else None


async def _announce(server: uvicorn.Server) -> None:
    """Log the address actually bound (``--port 0`` picks a free one) once the server is up."""
    while not server.started:  # noqa: ASYNC110 - uvicorn has no start-up event to wait on
        await asyncio.sleep(0.05)
    for listener in server.servers:
        for sock in listener.sockets:
            host, port = sock.getsockname()[:2]
            log_event(log, "rest_listening", address=f"http://{host}:{port}")


def serve(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    on_ready: Hook = _nothing,
    settle_heap: Hook = _nothing,
    feedback: FeedbackSink | None = None,
) -> None:
    """Run the service with uvicorn: one process, uvicorn's access log off (ours is structured).

    SIGTERM is an ordinary stop (graceful, exit 0); Ctrl-C stops gracefully too and is reported as
    an interrupt (exit 130). ``on_ready`` runs once the app is built, before serving;
    ``settle_heap`` after each model swap (the entry point's GC policy, :mod:`iris_scorer.process`).
    """
    configure_logging(settings.log_level)
    parse_model_uri(settings.model_uri)  # a malformed IRIS_MODEL_URI stops start-up with a sentence
    config = uvicorn.Config(
        create_app(settings, settle_heap=settle_heap, feedback=feedback),
        host=host,
        port=port,
        access_log=False,
        log_config=None,
        lifespan="on",
        server_header=False,
        timeout_graceful_shutdown=10,
    )
    server = _Server(config)
    on_ready()
    try:
        # on the loop uvicorn's `loop` setting picks ("auto": uvloop when installed), as uvicorn.run
        # would; a bare asyncio.run is the stdlib loop, about 25 µs more CPU per request
        with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
            stopped_by = runner.run(_serve_until_signal(server))
    except SystemExit:  # uvicorn exits 1 when it cannot bind or the lifespan fails
        stopped_by = None
    if not server.started:
        raise IrisError(f"the REST service could not start on {host}:{port}; see the log above.")
    if stopped_by == signal.SIGINT:
        raise KeyboardInterrupt
