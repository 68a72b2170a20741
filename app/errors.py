"""The one place HTTP errors are rendered: every failure becomes ``{"error": code, "detail": ...}``."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from app.encoding import json_response
from ml.errors import BadInputError, IrisError, Unauthorized
from ml.logs import log_event

log = logging.getLogger(__name__)

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


class UnsupportedMediaType(BadInputError):
    """A body whose ``Content-Type`` the endpoint does not read."""

    code = "unsupported_media_type"
    http_status = 415


class ShuttingDown(IrisError):
    code = "shutting_down"
    http_status = 503


async def iris_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, IrisError)
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
    if isinstance(exc, BadInputError):
        scorer = getattr(request.app.state, "scorer", None)
        if scorer is not None:
            scorer.record_errors("rest", exc.code)
    return json_response(exc.to_dict(), exc.http_status, headers)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return json_response({"error": code, "detail": exc.detail}, exc.status_code, exc.headers)


async def internal_error(request: Request, exc: Exception) -> Response:
    # The message may echo input; the log line carries the type and the route only.
    log_event(log, "unhandled_error", logging.ERROR, error=type(exc).__name__, path=request.url.path)
    return json_response({"error": "internal_error", "detail": "internal server error"}, 500)
