"""What a request can get wrong, as errors with an HTTP status, and the JSON body every error response has.

Every error response of the server has the body
``{"error": {"type": "SchemaError", "message": "...", ...facts}}``: the error's class
name, its three-part message, and the facts it carries as attributes (``column``,
``expected``, ``actual``...), exactly as the Python error has them. A request never gets
a traceback; an exception inside the model is a short 500 (:class:`PredictionError`)
and its traceback goes to the server log.

The hierarchy (all :class:`~modelsafe.errors.ModelsafeError`)::

    RequestError(ValueError)            400, and the base of the client errors below
    ├─ MalformedRequestError            400: not JSON or CSV, empty, an unknown payload format
    ├─ AuthenticationError              401: no or a wrong bearer token
    ├─ ModelNotFoundError               404: no model by that name (or none named with several)
    ├─ RequestTooLargeError             413: body or row limit exceeded
    └─ UnsupportedMediaTypeError        415: a content type the endpoint does not read
    ServiceUnavailableError             503: not ready (loading or draining)
    PredictionError                     500: the model raised while predicting
"""

from __future__ import annotations

from typing import Any

from modelsafe._reports import to_jsonable
from modelsafe.errors import MissingMethodError, ModelsafeError, SchemaError, UnknownKeywordError

__all__ = [
    "RequestError", "MalformedRequestError", "AuthenticationError", "ModelNotFoundError", "RequestTooLargeError",
    "UnsupportedMediaTypeError", "ServiceUnavailableError", "PredictionError", "status_of", "error_body", "as_protocol",
]


class RequestError(ModelsafeError, ValueError):
    """A request the server cannot act on; ``status`` is its HTTP status."""

    status = 400


class MalformedRequestError(RequestError):
    """The body is not what the endpoint reads: invalid JSON or CSV, empty, an unknown payload
    format, or a tensor whose data does not fill its shape. Attributes where they apply:
    ``expected``, ``actual``."""


class AuthenticationError(RequestError):
    """The server has a bearer token and the request did not send it (or sent another)."""

    status = 401


class ModelNotFoundError(RequestError):
    """No model is served by the name given, or several are and none was named.
    Attributes: ``model`` (the name given, or None), ``available``."""

    status = 404


class RequestTooLargeError(RequestError):
    """The body or its rows exceed the server's limits. Attributes: ``limit``, ``actual``, ``unit``."""

    status = 413


class UnsupportedMediaTypeError(RequestError):
    """The body's content type is one the endpoint does not read. Attributes: ``actual``, ``expected``."""

    status = 415


class ServiceUnavailableError(ModelsafeError):
    """The server is not ready: it is shutting down (draining in-flight requests)."""

    status = 503


class PredictionError(ModelsafeError):
    """The model raised while predicting. Attributes: ``model``, ``exception`` (its type name)."""

    status = 500


#: Status of modelsafe's own errors met while serving a request.
_STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (SchemaError, 422),  # well-formed, but does not fit the recorded schema
    (MissingMethodError, 400),
    (UnknownKeywordError, 400),
)


def status_of(exc: BaseException) -> int:
    """The HTTP status a request that raised ``exc`` gets."""
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        return status
    for kind, code in _STATUS:
        if isinstance(exc, kind):
            return code
    return 400 if isinstance(exc, ModelsafeError) else 500


def error_body(exc: BaseException, path: str = "") -> dict[str, Any]:
    """``{"error": {"type", "message", ...the error's facts}}``, JSON-able.

    Under ``/v2`` the Open Inference Protocol has its own error body, ``{"error": "<message>"}``,
    which its clients (tritonclient) read as text: there the error is that text, and the
    same object goes under ``"details"``.
    """
    facts = {k: v for k, v in vars(exc).items() if k != "message" and not k.startswith("_")}
    error: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)}
    for key, value in facts.items():
        error.setdefault(key, to_jsonable(value))
    return as_protocol(error, path)


def as_protocol(error: dict[str, Any], path: str) -> dict[str, Any]:
    """The error body for a request to ``path`` (see :func:`error_body`)."""
    if path == "/v2" or path.startswith("/v2/"):
        return {"error": f"{error['type']}: {error['message']}", "details": error}
    return {"error": error}
