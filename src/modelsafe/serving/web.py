"""What every endpoint shares: reading a bounded body, JSON responses, and errors as JSON.

:func:`endpoint` wraps a handler so that no request ever sees a traceback: modelsafe's
errors become their status with the JSON error body of :mod:`.errors`, anything else a
short 500 whose traceback goes to the server log. It also notes, for the access log and
the metrics, which protocol and model the request was for and which error it got.
"""

from __future__ import annotations

import functools
import logging
import zlib
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from starlette.responses import Response

from modelsafe.errors import ModelsafeError
from modelsafe.serving.errors import (
    MalformedRequestError,
    RequestTooLargeError,
    UnsupportedMediaTypeError,
    as_protocol,
    error_body,
    status_of,
)
from modelsafe.serving.outputs import dumps

if TYPE_CHECKING:
    from starlette.requests import Request

__all__ = ["endpoint", "json_response", "error_response", "read_body", "note"]

log = logging.getLogger("modelsafe.serving")
Handler = Callable[["Request"], Awaitable[Response]]


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """``value`` (JSON types) as a compact JSON response."""
    return Response(dumps(value), status, headers=headers, media_type="application/json")


def error_response(request: "Request", exc: BaseException) -> Response:
    return json_response(error_body(exc, request.url.path), status_of(exc))


def note(request: "Request", **facts: Any) -> None:
    """Record facts about the request (``model``, ``rows``, ``error``...) for the access log and metrics."""
    request.scope.setdefault("state", {}).update(facts)


def endpoint(protocol: str) -> Callable[[Handler], Handler]:
    """Turn every error of ``handler`` into a JSON error response (see the module docstring)."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def run(request: "Request") -> Response:
            note(request, protocol=protocol)
            try:
                return await handler(request)
            except ModelsafeError as exc:
                note(request, error=type(exc).__name__)
                return error_response(request, exc)
            except Exception as exc:  # noqa: BLE001 - never a traceback in a response
                log.exception("%s %s failed", request.method, request.url.path)
                note(request, error="InternalError")
                return json_response(as_protocol({"type": "InternalError", "message": (
                    f"The server failed on this request ({type(exc).__name__}); the server log has the details. "
                    "This is a bug of the server, not of the request: please report it.")}, request.url.path), 500)

        return run

    return wrap


async def read_body(request: "Request", limit: int) -> bytes:
    """The request body, refused with 413 past ``limit`` bytes (after decompression, too)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(size, limit)
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("gzip", "deflate"):
        return _inflate(body, limit, encoding)
    if encoding != "identity":
        raise UnsupportedMediaTypeError(
            f"The body has Content-Encoding {encoding!r}, which this server does not read: it cannot see the data. "
            "Send it uncompressed, or compressed with gzip or deflate.", actual=encoding,
            expected=["identity", "gzip", "deflate"])
    return body


def _inflate(body: bytes, limit: int, encoding: str) -> bytes:
    inflater = zlib.decompressobj(wbits=47)  # gzip or zlib headers, detected
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise MalformedRequestError(
            f"The body says Content-Encoding {encoding} but does not decompress ({exc}): it is damaged or not "
            f"{encoding} data. Compress it with {encoding}, or send it uncompressed without the header.",
            expected=encoding, actual="undecodable") from None
    if len(data) > limit or inflater.unconsumed_tail:
        raise _too_large(len(data), limit, "decompressed ")
    return data


def _too_large(size: int, limit: int, what: str = "") -> RequestTooLargeError:
    return RequestTooLargeError(
        f"The {what}request body has {size} bytes (or more), over this server's limit of {limit} bytes: so large a "
        "body would hold the server's memory for every other caller. Send fewer rows per request, or start the "
        "server with a larger --max-body-mb.", limit=limit, actual=size, unit="bytes")
