"""HTTP metrics and the structured access log, as one pure ASGI middleware.

Labels use the route template (``/predict``), never the raw path, so cardinality stays bounded;
the label children are cached. The access log line has method, route, status and duration:
never headers (so never ``Authorization``), bodies or query strings. By default only requests
that failed (status >= 400) are logged; ``IRIS_ACCESS_LOG=all`` logs every one (README, "Access
log", weighs the two).
"""

from __future__ import annotations

import logging
from time import perf_counter
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ml.logs import log_event
from ml.metrics import Metrics

log = logging.getLogger("app.access")

UNMATCHED = "<unmatched>"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class HttpObserver:
    def __init__(self, app: ASGIApp, metrics: Metrics, access_log: str = "errors") -> None:
        self.app = app
        self.metrics = metrics
        #: status from which a request is logged: every request ("all"), 4xx/5xx ("errors"), none
        self._log_from = {"all": 0, "errors": 400, "off": 1000}[access_log]
        #: (route template, method, status) -> (request counter, duration histogram): the label
        #: children, looked up once per key (routes and methods are bounded sets)
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = perf_counter()
        status = 500

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            elapsed = perf_counter() - started
            method = scope["method"]
            key = (
                getattr(scope.get("route"), "path", None) or UNMATCHED,
                method if method in _METHODS else "OTHER",
                status,
            )
            children = self._children.get(key)
            if children is None:
                children = self._children[key] = self._label(*key)
            children[0].inc()
            children[1].observe(elapsed)
            if status >= self._log_from:
                self._log(scope, *key, elapsed)

    def _label(self, template: str, method: str, status: int) -> tuple[Any, Any]:
        counter = self.metrics.http_requests.labels(route=template, method=method, status=str(status))
        return counter, self.metrics.http_duration.labels(route=template)

    @staticmethod
    def _log(scope: Scope, template: str, method: str, status: int, elapsed: float) -> None:
        if log.isEnabledFor(logging.INFO):
            client = scope.get("client")
            log_event(
                log,
                "http_request",
                method=method,
                route=template,
                status=status,
                duration_ms=round(elapsed * 1000, 3),
                client=client[0] if client else None,
            )
