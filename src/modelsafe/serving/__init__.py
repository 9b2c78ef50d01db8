"""Serving artifacts over HTTP: ``modelsafe serve`` and :func:`create_app` (extra ``modelsafe[serve]``).

The app speaks MLflow's scoring protocol (``POST /invocations``, ``/ping``, ``/health``,
``/version``), the Open Inference Protocol v2 with the binary tensor data extension
(``/v2/...``, what KServe, Triton and Seldon MLServer clients speak), its own ``/v1/models``,
OpenAPI at ``/docs``, Prometheus ``/metrics`` and a model card page at ``/``. Every
artifact is loaded once at start-up with every check of :func:`modelsafe.load`, and every
request goes through the input guard.

Importing this package imports neither Starlette nor any framework: :func:`create_app`
loads them on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["create_app"]

if TYPE_CHECKING:
    from starlette.applications import Starlette

_HINT = "pip install 'modelsafe[serve]'"
_NEEDS = ("starlette", "uvicorn", "prometheus_client")


def create_app(artifacts: Any, **options: Any) -> "Starlette":
    """An ASGI app serving ``artifacts`` (see :func:`modelsafe.serving.app.create_app` for the options).

    Examples
    --------
    >>> import modelsafe as ms
    >>> app = ms.serving.create_app("/tmp/doc-model.msafe", max_batch_size=32, max_latency_ms=2)
    >>> sorted(m.name for m in app.state.service.models.values())
    ['doc-model']
    """
    require_serve_extra()
    from modelsafe.serving.app import create_app as build

    return build(artifacts, **options)


def require_serve_extra() -> None:
    """Raise FlavorNotInstalledError naming what is missing when the extra ``serve`` is not installed."""
    import importlib.util

    missing = [name for name in _NEEDS if importlib.util.find_spec(name) is None]
    if missing:
        from modelsafe.errors import FlavorNotInstalledError

        raise FlavorNotInstalledError(
            f"Serving needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed here: "
            f"the server cannot start without {'it' if len(missing) == 1 else 'them'}. Install them with: {_HINT}",
            flavor="serve", hint=_HINT, missing=missing)
