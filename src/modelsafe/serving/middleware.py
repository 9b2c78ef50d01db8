"""ASGI middleware of the server: the access log and metrics of every request, and bearer-token auth.

The access log is one JSON object per request on the ``modelsafe.serving.access`` logger
(time, client, method, path, status, duration, model, rows, error type). The token is
compared in constant time (:func:`hmac.compare_digest`); health probes stay open so that
an orchestrator can probe the server without it, and so do the model card's script and
style sheet (code, no model data). A browser that opens ``/`` without the token (it asks for
``text/html``) gets, with the 401, the page that asks for the token; every other client gets
the JSON error.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Mapping, MutableMapping

from modelsafe.serving.errors import AuthenticationError, error_body
from modelsafe.serving.metrics import Metrics
from modelsafe.serving.outputs import dumps

__all__ = ["Observed", "BearerAuth", "OPEN_PATHS", "PAGE_ASSETS"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

access_log = logging.getLogger("modelsafe.serving.access")
#: Paths served without the token: the liveness and readiness probes.
OPEN_PATHS = frozenset({"/ping", "/health", "/v2/health/live", "/v2/health/ready"})
#: Served without the token too: the page's script and style sheet (the same for every server).
PAGE_ASSETS = frozenset({"/static/card.js", "/static/card.css"})


class Observed:
    """Count, time and log every HTTP request (see the module docstring)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        state = scope.setdefault("state", {})
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            elapsed = time.perf_counter() - start
            model = state.get("model", "")
            self.metrics.observe(model, state.get("protocol", "other"), status, elapsed, state.get("error"))
            if access_log.isEnabledFor(logging.INFO):
                access_log.info(json.dumps(_entry(scope, state, status, elapsed), default=str))


def _entry(scope: Scope, state: dict[str, Any], status: int, elapsed: float) -> dict[str, Any]:
    client = scope.get("client")
    entry = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
             "client": f"{client[0]}:{client[1]}" if client else None, "method": scope.get("method"),
             "path": scope.get("path"), "status": status, "duration_ms": round(elapsed * 1000, 3)}
    for key in ("model", "rows", "batch_rows", "error"):
        if key in state:
            entry[key] = state[key]
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            entry["request_id"] = value.decode("latin-1")[:128]
    return entry


class BearerAuth:
    """Refuse every request but the health probes and the page's assets without ``Authorization: Bearer <token>``.

    ``page`` (HTML, with its ``page_headers``) is what a browser opening ``/`` without the token gets
    with the 401: the page that asks for the token (:func:`modelsafe.serving.card.render_locked`).
    """

    def __init__(self, app: ASGIApp, token: str, page: bytes = b"",
                 page_headers: Mapping[str, str] | None = None) -> None:
        if not token:
            raise ValueError("Invalid `token`: expected a non-empty string. Received: an empty token.")
        self.app, self.expected = app, token.encode("utf-8")
        self.page = page
        self.page_headers = [(k.lower().encode("latin-1"), v.encode("latin-1"))
                             for k, v in (page_headers or {}).items()]

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or scope["path"] in PAGE_ASSETS \
                or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})["error"] = "AuthenticationError"
        if self.page and scope["path"] == "/" and scope.get("method") in ("GET", "HEAD") and _wants_html(scope):
            await send({"type": "http.response.start", "status": 401, "headers": [
                (b"content-type", b"text/html; charset=utf-8"), (b"www-authenticate", b"Bearer"),
                (b"cache-control", b"no-store"), *self.page_headers]})
            await send({"type": "http.response.body", "body": self.page if scope.get("method") == "GET" else b""})
            return
        exc = AuthenticationError(
            "This server requires a bearer token and the request had none or another: it would otherwise serve "
            "anyone who can reach it. Send the header 'Authorization: Bearer <token>' with the token the server was "
            "started with (--token-file).")
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
        await send({"type": "http.response.body", "body": dumps(error_body(exc, scope["path"]))})

    def _allowed(self, scope: Scope) -> bool:
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, given = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self.expected)
        return False


def _wants_html(scope: Scope) -> bool:
    """The request is a browser's navigation (``Accept: text/html,...``), not an API client's."""
    for name, value in scope.get("headers", ()):
        if name == b"accept":
            return b"text/html" in value.lower()
    return False
