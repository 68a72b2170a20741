"""Fast JSON in and out (orjson), and the bounded body reader used by every scoring endpoint."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Mapping
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


def header(request: Request, name: bytes) -> str | None:
    """The first value of the header ``name`` (lower case, as ASGI servers pass names), read off
    the raw ASGI headers: what ``request.headers.get`` answers, without building its mapping."""
    for key, value in request.scope["headers"]:
        if key == name:
            return value.decode("latin-1")  # type: ignore[no-any-return]
    return None


def media_type(request: Request) -> str:
    """The request's MIME type without parameters; a missing header counts as JSON."""
    value = header(request, b"content-type")
    if not value or value == JSON:  # absent, or what nearly every client sends
        return JSON
    return value.partition(";")[0].strip().lower()


def charset(request: Request) -> str:
    """The ``charset`` parameter of the request's ``Content-Type`` (lower case; utf-8 when absent)."""
    for part in (request.headers.get("content-type") or "").split(";")[1:]:
        name, _, value = part.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').lower()
    return "utf-8"


#: A body over the limit is still read (and dropped) up to this many bytes, so that a client that
#: sends it in one go (urllib, requests, MLflow's client) gets the 413 instead of a connection
#: reset; beyond it the connection is closed with the 413 sent.
DRAIN_MAX_BYTES = 64 * 1024 * 1024


async def _drain(stream: AsyncIterator[bytes], budget: int) -> None:
    """Read and drop the rest of ``stream``, at most ``budget`` bytes more."""
    with contextlib.suppress(ClientDisconnect):
        async for chunk in stream:
            budget -= len(chunk)
            if budget < 0:
                return


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing anything over ``limit`` bytes before and while it is read."""
    declared = header(request, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        if int(declared) <= DRAIN_MAX_BYTES:
            await _drain(request.stream(), DRAIN_MAX_BYTES)
        raise PayloadTooLarge(f"request body of {declared} bytes is over the {limit}-byte limit.")
    # The ASGI messages directly (Starlette's ``stream()`` is an async generator per request; a
    # one-record body is one message).
    receive = request.receive
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect
            raise ClientGone("the client disconnected while sending the body.")
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            if message.get("more_body", False):
                await _drain(request.stream(), DRAIN_MAX_BYTES - size)
            raise PayloadTooLarge(f"request body is over the {limit}-byte limit.")
        if not message.get("more_body", False):
            if not chunks:
                return chunk
            chunks.append(chunk)
            return b"".join(chunks)
        chunks.append(chunk)


def decode_json(body: bytes, *, nan_literals: bool = False) -> Any:
    """Parse JSON; NaN/Infinity literals are not JSON and are refused, unless ``nan_literals``
    (MLflow's client writes a pandas NaN as ``NaN``): they then parse as floats, and the schema
    refuses them naming the field."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if nan_literals:
            try:
                return json.loads(body)
            except ValueError:
                pass
        raise InvalidJson(
            f"request body is not valid JSON: {exc}.", detail=f"not valid JSON: {exc}"
        ) from None
