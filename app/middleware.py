"""HTTP metrics and the structured access log, as one pure ASGI middleware.

Labels use the route template (``/predict``), never the raw path, so cardinality stays bounded;
the label children are cached. The access log line has method, route, status and duration:
never headers (so never ``Authorization``), bodies or query strings. By default only requests
that failed (status >= 400) are logged; ``IRIS_ACCESS_LOG=all`` logs every one (README, "Access
log", weighs the two).
"""

from __future__ import annotations

import logging
import time
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
        self._requests: dict[tuple[str, str, int], Any] = {}
        self._durations: dict[str, Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            self._observe(scope, status, time.perf_counter() - started)

    def _observe(self, scope: Scope, status: int, elapsed: float) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None) or UNMATCHED
        method = scope["method"] if scope["method"] in _METHODS else "OTHER"
        key = (template, method, status)
        counter = self._requests.get(key)
        if counter is None:
            counter = self._requests[key] = self.metrics.http_requests.labels(
                route=template, method=method, status=str(status)
            )
        counter.inc()
        duration = self._durations.get(template)
        if duration is None:
            duration = self._durations[template] = self.metrics.http_duration.labels(route=template)
        duration.observe(elapsed)
        if status >= self._log_from and log.isEnabledFor(logging.INFO):
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
