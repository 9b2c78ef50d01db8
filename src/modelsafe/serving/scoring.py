"""MLflow's scoring protocol: ``POST /invocations``, ``GET /ping``, ``/health``, ``/version``.

The body is JSON with exactly one of

* ``dataframe_split``: ``{"columns": [...], "data": [[...], ...], "index": [...]}`` (pandas' split orientation);
* ``dataframe_records``: ``[{"column": value, ...}, ...]``;
* ``instances``: rows (TF Serving's row format): a list of values, of lists, or of ``{name: value}`` objects;
* ``inputs``: columns (TF Serving's columnar format): ``{name: values}``, or one array;

plus an optional ``params`` object (``{"method": "predict_proba"}``), or CSV with a header
row (``Content-Type: text/csv``). The response is ``{"predictions": ...}``, with
``"warnings": [...]`` when the input guard warned. With several models, the model comes
from ``?model=NAME`` or the ``X-Model`` header.
"""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING, Any

from modelsafe._version import __version__
from modelsafe.serving.errors import MalformedRequestError, ServiceUnavailableError, UnsupportedMediaTypeError
from modelsafe.serving.inputs import InputSpec, rows_in
from modelsafe.serving.outputs import jsonable
from modelsafe.serving.web import endpoint, json_response, note, read_body

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from modelsafe.serving.service import Service

__all__ = ["routes", "parse_json", "parse_csv", "FORMATS"]

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
#: Request parameters the server reads from ``params``.
PARAMS = ("method",)


def parse_json(body: bytes, spec: InputSpec) -> tuple[Any, dict[str, Any]]:
    """The model's input and the request's ``params`` from a JSON scoring request."""
    payload = load_json(body)
    if not isinstance(payload, dict):
        raise MalformedRequestError(
            f"The JSON body is a {type(payload).__name__}, not an object with one of the keys {list(FORMATS)}: the "
            "server cannot tell how the data is laid out. Wrap it, e.g. {\"dataframe_split\": {\"columns\": [...], "
            "\"data\": [[...]]}} or {\"instances\": [...]}.", expected=list(FORMATS), actual=type(payload).__name__)
    formats = [k for k in FORMATS if k in payload]
    unknown = sorted(set(payload) - set(FORMATS) - {"params"})
    if len(formats) != 1 or unknown:
        got = sorted(payload)
        raise MalformedRequestError(
            f"The JSON body has the keys {got} but must have exactly one of {list(FORMATS)} (and optionally "
            "'params'): the server reads the data from that key. Send e.g. {\"dataframe_records\": [{...}]}.",
            expected=list(FORMATS), actual=got)
    params = payload.get("params") or {}
    if not isinstance(params, dict) or sorted(set(params) - set(PARAMS)):
        raise MalformedRequestError(
            f"'params' must be an object with the keys {list(PARAMS)}; got {params!r}. This server reads only "
            "\"method\" (predict, predict_proba, decision_function or transform).",
            expected=list(PARAMS), actual=repr(params)[:120])
    key = formats[0]
    return _inputs(key, payload[key], spec), params


def _inputs(key: str, value: Any, spec: InputSpec) -> Any:
    if key == "dataframe_split":
        if not isinstance(value, dict) or "data" not in value:
            raise MalformedRequestError(
                "'dataframe_split' must be an object with 'data' (a list of rows) and 'columns' (their names), as "
                "pandas' DataFrame.to_dict(orient='split') gives.", expected="{columns, data}",
                actual=repr(value)[:120])
        return spec.from_split(value.get("columns"), _nonempty(value["data"], "dataframe_split.data"),
                               value.get("index"))
    if key == "dataframe_records":
        return spec.from_records(_nonempty(value, key))
    if key == "instances":
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            return spec.from_records(value)
        return spec.from_rows(_nonempty(value, key))
    if isinstance(value, dict):
        if not value or all(isinstance(v, list) and not v for v in value.values()):
            _nonempty([], key)  # no column, or columns without a value: no row to predict
        return spec.from_columns(value)
    return spec.from_rows(_nonempty(value, key))


def _nonempty(value: Any, key: str) -> Any:
    if not isinstance(value, list) or not value:
        raise MalformedRequestError(
            f"'{key}' must be a non-empty list (or, for 'inputs', an object of columns); got {repr(value)[:80]}. "
            "There is nothing to predict.", expected="a non-empty list", actual=repr(value)[:80])
    return value


def load_json(body: bytes) -> Any:
    if not body.strip():
        raise MalformedRequestError(
            "The request body is empty: there is nothing to predict. Send JSON (Content-Type: application/json) "
            "or CSV with a header row (Content-Type: text/csv).", expected="a JSON or CSV body", actual="empty")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        where = f" at line {exc.lineno}, column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise MalformedRequestError(
            f"The request body is not valid JSON{where} ({exc}): the server cannot read it. Check the client "
            "serialises it with a JSON encoder (NaN is not JSON: send null).", expected="JSON",
            actual=body[:60].decode("utf-8", errors="replace")) from None


def parse_csv(body: bytes, spec: InputSpec) -> Any:
    """A CSV body with a header row, as the model's input."""
    import pandas as pd

    if not body.strip():
        load_json(body)  # the same empty-body error
    try:
        frame = pd.read_csv(io.BytesIO(body))
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise MalformedRequestError(
            f"The CSV body cannot be read ({str(exc).strip().splitlines()[0][:200]}): the server cannot build rows "
            "from it. Send comma-separated values with a header row of column names.", expected="CSV",
            actual=body[:60].decode("utf-8", errors="replace")) from None
    if frame.empty and not len(frame):
        raise MalformedRequestError(
            "The CSV body has a header row but no rows of values: there is nothing to predict. Send at least one "
            "row after the header.", expected="a header and at least one row", actual=body[:60].decode(
                "utf-8", errors="replace"))
    if spec.is_frame:
        return spec.frame(frame)
    return spec.from_rows(frame.to_numpy().tolist())


def _media_type(request: "Request") -> str:
    return request.headers.get("content-type", "application/json").split(";")[0].strip().lower()


def routes(service: "Service") -> list[Any]:
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    @endpoint("mlflow")
    async def invocations(request: "Request") -> "Response":
        model = service.pick(request.query_params.get("model") or request.headers.get("x-model"))
        note(request, model=model.name)
        body = await read_body(request, service.limits.max_body_bytes)
        media = _media_type(request)
        if media in ("application/json", "application/*", "*/*", ""):
            (inputs, params), noted = await service.decode(len(body), lambda: parse_json(body, model.spec))
        elif media in ("text/csv", "application/csv"):
            inputs, noted = await service.decode(len(body), lambda: parse_csv(body, model.spec))
            params = {}
        else:
            raise UnsupportedMediaTypeError(
                f"The body has Content-Type {media!r}, which /invocations does not read: it cannot see the rows. "
                "Send application/json (dataframe_split, dataframe_records, instances or inputs) or text/csv.",
                actual=media, expected=["application/json", "text/csv"])
        method = service.check_method(model, params.get("method") or request.query_params.get("method") or "predict")
        outcome = await service.predict(model, method, inputs, noted)
        note(request, rows=rows_in(inputs), batch_rows=outcome.batch_rows)
        result: dict[str, Any] = {"predictions": jsonable(outcome.value)}
        if outcome.warnings:
            result["warnings"] = outcome.warnings
        return json_response(result)

    @endpoint("mlflow")
    async def health(request: "Request") -> "Response":
        if not service.ready:
            raise ServiceUnavailableError(
                "The server is shutting down: it finishes the requests it has and takes no new ones. Send the "
                "request to another instance.")
        return PlainTextResponse("\n")

    async def version(request: "Request") -> "Response":
        return PlainTextResponse(__version__)

    return [Route("/invocations", invocations, methods=["POST"]), Route("/ping", health, methods=["GET"]),
            Route("/health", health, methods=["GET"]), Route("/version", version, methods=["GET"])]
