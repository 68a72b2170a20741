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

#: Routes that speak MLflow's scoring protocol, whose errors have MLflow's shape.
MLFLOW_ROUTES = frozenset({"/invocations"})
#: MLflow's error codes (``mlflow.protos.databricks_pb2.ErrorCode`` names), by HTTP status.
_MLFLOW_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    413: "REQUEST_LIMIT_EXCEEDED",
    415: "BAD_REQUEST",
    503: "TEMPORARILY_UNAVAILABLE",
}


def mlflow_shape(exc: IrisError) -> tuple[dict[str, object], int]:
    """MLflow's ``{"error_code", "message"}`` body and status (400 for what we answer 422), with
    our own ``error`` code and field ``detail`` kept as extra keys."""
    status = 400 if exc.http_status == 422 else exc.http_status
    body = {"error_code": _MLFLOW_CODES.get(status, "INTERNAL_ERROR"), "message": _message(exc)}
    return body | exc.to_dict(), status


def _message(exc: IrisError, shown: int = 5) -> str:
    """The error as one sentence; field errors are spelled out (``0.petal_width: must be ...``)."""
    detail = exc.detail
    if not isinstance(detail, list) or not detail or not all(isinstance(d, dict) for d in detail):
        return exc.message
    parts = [
        f"{'.'.join(str(p) for p in d.get('loc', [])) or 'body'}: {d.get('msg')}" for d in detail[:shown]
    ]
    more = len(detail) - shown
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


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
    if request.url.path in MLFLOW_ROUTES:
        body, status = mlflow_shape(exc)
        return json_response(body, status, headers)
    if _is_oip(request):  # the Open Inference Protocol's {"error": "..."}, 400 for what we answer 422
        return json_response(
            {"error": _message(exc)}, 400 if exc.http_status == 422 else exc.http_status, headers
        )
    return json_response(exc.to_dict(), exc.http_status, headers)


def _is_oip(request: Request) -> bool:
    path = request.url.path
    return path == "/v2" or path.startswith("/v2/")


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    if _is_oip(request):
        return json_response({"error": f"{code}: {exc.detail}"}, exc.status_code, exc.headers)
    return json_response({"error": code, "detail": exc.detail}, exc.status_code, exc.headers)


async def internal_error(request: Request, exc: Exception) -> Response:
    # The message may echo input; the log line carries the type and the route only.
    log_event(log, "unhandled_error", logging.ERROR, error=type(exc).__name__, path=request.url.path)
    return json_response({"error": "internal_error", "detail": "internal server error"}, 500)
