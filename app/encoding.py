"""Fast JSON in and out (orjson), and the bounded body reader used by every scoring endpoint."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from ml.errors import BadInputError, InvalidJson, PayloadTooLarge

JSON = "application/json"


class ClientGone(BadInputError):
    """The client hung up before sending its whole body; no one reads the answer."""

    code = "client_disconnected"
    http_status = 400


def json_response(content: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), status_code=status, headers=headers, media_type=JSON)


def media_type(request: Request) -> str:
    """The request's MIME type without parameters; a missing header counts as JSON."""
    value = request.headers.get("content-type")
    if not value:
        return JSON
    return value.partition(";")[0].strip().lower()


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing anything over ``limit`` bytes before and while it is read."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes is over the {limit}-byte limit.")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"request body is over the {limit}-byte limit.")
            chunks.append(chunk)
    except ClientDisconnect:
        raise ClientGone("the client disconnected while sending the body.") from None
    return b"".join(chunks)


def decode_json(body: bytes) -> Any:
    """Parse JSON; NaN/Infinity literals are not JSON and are refused here too."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidJson(
            f"request body is not valid JSON: {exc}.", detail=f"not valid JSON: {exc}"
        ) from None
