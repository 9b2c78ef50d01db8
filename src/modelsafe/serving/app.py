"""``create_app``: the ASGI application (Starlette) serving one or several artifacts."""

from __future__ import annotations

import contextlib
from importlib import resources
from typing import Any, AsyncIterator, Iterable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from modelsafe.serving import capture, inference_v2, scoring
from modelsafe.serving.card import CONTENT_SECURITY_POLICY, render_card, render_locked
from modelsafe.serving.errors import as_protocol
from modelsafe.serving.middleware import BearerAuth, Observed
from modelsafe.serving.models import ServedModel, load_model, name_artifacts
from modelsafe.serving.openapi import openapi, render_docs
from modelsafe.serving.service import Limits, Service
from modelsafe.serving.web import endpoint, json_response, note

__all__ = ["create_app", "load_models"]

_STATIC = {"card.js": "text/javascript", "card.css": "text/css"}
_PAGE_HEADERS = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Content-Type-Options": "nosniff"}


def load_models(artifacts: Any, **load_kwargs: Any) -> list[ServedModel]:
    """Load and verify every artifact (all of ``ms.load``'s checks); the first failure raises, and
    the models loaded before it are closed."""
    models: list[ServedModel] = []
    try:
        for name, path in name_artifacts(artifacts):
            try:
                models.append(load_model(name, path, **load_kwargs))
            except Exception as exc:
                exc.artifact = path  # type: ignore[attr-defined] - which one failed, for the command line
                raise
    except BaseException:
        for model in models:
            model.bundle.close()
        raise
    return models


def create_app(artifacts: Any, *, max_batch_size: int = 32, max_latency_ms: float = 0.0, token: str | None = None,
               env: str = "warn", trust_code: bool = False, trusted: Iterable[str] = (),
               max_body_bytes: int = 64 << 20, max_rows: int = 100_000, threads: int = 0,
               **load_kwargs: Any) -> Starlette:
    """An ASGI app serving ``artifacts`` over MLflow's scoring protocol and the Open Inference Protocol v2.

    Every artifact is loaded here, once, with all of ``ms.load``'s checks and its
    verification sample replayed; the first that fails raises its error, so a server that
    could not serve every model never starts.

    Parameters
    ----------
    artifacts
        A path (or fsspec URL), a list of them (``"NAME=PATH"`` names one; otherwise the
        name is the file stem), or a ``{name: path}`` mapping.
    max_batch_size
        Requests to one model that arrive while it is busy are predicted together, up to this many
        rows (1: batching off).
    max_latency_ms
        How long a request may wait for others to join its batch while the model is idle (0: not
        at all; requests that arrive while the model is busy are batched anyway).
    token
        When given, every request but the health probes (and the model card's script and style
        sheet) needs ``Authorization: Bearer <token>``; the card page asks a browser for it.
    env, trust_code, trusted, **load_kwargs
        As for :func:`modelsafe.load` (``verify`` is always on).
    max_body_bytes, max_rows
        Larger requests get 413.
    threads
        Threads predictions run on (0: ``min(4, CPUs + 1)``).

    Examples
    --------
    >>> import modelsafe as ms
    >>> app = ms.serving.create_app({"churn": "/tmp/doc-model.msafe"})
    >>> import uvicorn
    >>> uvicorn.run(app, host="127.0.0.1", port=8080)          # doctest: +SKIP
    """
    limits = Limits(max_batch_size=int(max_batch_size), max_latency_ms=float(max_latency_ms),
                    max_body_bytes=int(max_body_bytes), max_rows=int(max_rows), threads=int(threads))
    models = load_models(artifacts, env=env, trust_code=trust_code, trusted=tuple(trusted), **load_kwargs)
    capture.install()
    service = Service(models, limits)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await service.close()

    app = Starlette(routes=[*scoring.routes(service), *inference_v2.routes(service), *_own_routes(service)],
                    lifespan=lifespan, exception_handlers={404: _not_found, 405: _not_allowed})
    app.state.service = service
    if token is not None:
        app.add_middleware(BearerAuth, token=token, page=render_locked().encode("utf-8"),
                           page_headers=_PAGE_HEADERS)
    app.add_middleware(Observed, metrics=service.metrics)
    return app


async def _not_found(request: Request, exc: Exception) -> Response:
    path = request.url.path
    return json_response(as_protocol({"type": "NotFound", "path": path, "message": (
        f"Nothing is served at {path!r}: see /docs for the endpoints (/invocations, /v2/models/NAME/infer, "
        "/v1/models...).")}, path), 404)


async def _not_allowed(request: Request, exc: Exception) -> Response:
    path = request.url.path
    return json_response(as_protocol({"type": "MethodNotAllowed", "method": request.method, "message": (
        f"{request.method} is not allowed on {path!r}: see /docs for the method each endpoint takes.")}, path), 405)


def _own_routes(service: Service) -> list[Route]:
    document = openapi(list(service.models.values()))
    docs_page = render_docs(document)

    @endpoint("v1")
    async def models(request: Request) -> Response:
        return json_response({"models": [m.summary() for m in service.models.values()], "ready": service.ready})

    @endpoint("v1")
    async def model(request: Request) -> Response:
        found = service.pick(request.path_params["name"])
        note(request, model=found.name)
        return json_response(found.details())

    async def card(request: Request) -> Response:
        return HTMLResponse(render_card(service.models.values(), service.ready), headers=_PAGE_HEADERS)

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in _STATIC:
            return await _not_found(request, KeyError(name))
        body = resources.files("modelsafe.serving").joinpath("static", name).read_bytes()
        return Response(body, media_type=_STATIC[name], headers={"Cache-Control": "no-cache", **_PAGE_HEADERS})

    async def docs(request: Request) -> Response:
        return HTMLResponse(docs_page, headers=_PAGE_HEADERS)

    async def spec(request: Request) -> Response:
        return json_response(document)

    async def metrics(request: Request) -> Response:
        body, kind = service.metrics.render()
        return Response(body, media_type=kind)

    return [Route("/", card, methods=["GET"]), Route("/static/{name}", static, methods=["GET"]),
            Route("/docs", docs, methods=["GET"]), Route("/openapi.json", spec, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]), Route("/v1/models", models, methods=["GET"]),
            Route("/v1/models/{name}", model, methods=["GET"])]
