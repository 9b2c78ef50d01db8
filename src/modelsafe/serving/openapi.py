"""The server's OpenAPI 3.1 description, its request bodies built from each model's recorded schema.

``/openapi.json`` is the document; ``/docs`` shows it as a plain page (no CDN: nothing
outside the server is reachable), every value escaped.
"""

from __future__ import annotations

import json
from html import escape
from typing import TYPE_CHECKING, Any

from modelsafe._version import __version__
from modelsafe.checks.dtypes import describe_dtype
from modelsafe.serving.tensors import DATATYPES

if TYPE_CHECKING:
    from modelsafe.serving.models import ServedModel

__all__ = ["openapi", "render_docs", "request_schema", "column_schema"]

_PARAMS = {"type": "object", "properties": {"method": {"type": "string", "enum": [
    "predict", "predict_proba", "decision_function", "transform"]}}, "additionalProperties": False}
_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["type", "message"],
    "properties": {"type": {"type": "string"}, "message": {"type": "string"}}, "additionalProperties": True}}}
_JSON_TYPES = {"int": "integer", "uint": "integer", "float": "number", "bool": "boolean", "complex": "array"}


def column_schema(column: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema of one value of a recorded column."""
    family = column.get("family") or describe_dtype(str(column.get("dtype"))).family
    if family == "category" and column.get("categories"):
        return {"enum": [*column["categories"], None]}
    if family in ("datetime", "timedelta"):
        return {"type": ["string", "null"]}
    if family in ("string",):
        return {"type": ["string", "null"]}
    kind = _JSON_TYPES.get(family)
    if kind is None:
        return {}
    missing = family == "float" or column.get("nullable")
    return {"type": [kind, "null"] if missing else kind}


def _nested(depth: int, leaf: dict[str, Any]) -> dict[str, Any]:
    schema = leaf
    for _ in range(depth):
        schema = {"type": "array", "items": schema}
    return schema


def _array_leaf(dtype: Any) -> dict[str, Any]:
    return column_schema({"dtype": str(dtype)}) if dtype else {}


def request_schema(model: "ServedModel") -> dict[str, Any]:
    """JSON Schema of ``POST /invocations`` bodies for ``model``: each payload format it takes."""
    spec = model.spec
    if spec.is_frame:
        names = [label if isinstance(label, (str, int)) else str(label) for label in spec.labels]
        values = [column_schema(c) for c in spec.columns]
        record = {"type": "object", "properties": {str(n): v for n, v in zip(names, values)},
                  "required": [str(n) for n in names]}
        formats = {
            "dataframe_split": {"type": "object", "required": ["columns", "data"], "properties": {
                "columns": {"type": "array", "items": {"enum": names}},
                "index": {"type": "array"},
                "data": {"type": "array", "items": {"type": "array", "prefixItems": values,
                                                    "minItems": len(values), "maxItems": len(values)}}}},
            "dataframe_records": {"type": "array", "items": record},
            "instances": {"type": "array", "items": record},
            "inputs": {"type": "object", "required": [str(n) for n in names], "properties": {
                str(n): {"type": "array", "items": v} for n, v in zip(names, values)}},
        }
    elif spec.kind == "texts":
        formats = {"instances": {"type": "array", "items": {"type": "string"}},
                   "inputs": {"type": "array", "items": {"type": "string"}}}
    elif spec.shape is not None:
        rows = _nested(len(spec.shape), _array_leaf(spec.dtype))
        formats = {"instances": rows, "inputs": rows}
    else:
        formats = {key: {} for key in ("dataframe_split", "dataframe_records", "instances", "inputs")}
    return {"title": f"{model.name} request", "oneOf": [
        {"type": "object", "required": [key], "properties": {key: schema, "params": _PARAMS},
         "additionalProperties": False} for key, schema in formats.items()]}


def _infer_schema(model: "ServedModel") -> dict[str, Any]:
    from modelsafe.serving.inference_v2 import input_tensors

    tensors = [{"type": "object", "required": ["name", "shape", "datatype"], "properties": {
        "name": {"const": t["name"]}, "datatype": {"enum": sorted(DATATYPES)},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "data": {"type": "array"}, "parameters": {"type": "object"}}} for t in input_tensors(model)]
    return {"title": f"{model.name} inference request", "type": "object", "required": ["inputs"], "properties": {
        "id": {"type": "string"}, "parameters": {"type": "object"},
        "inputs": {"type": "array", "items": {"oneOf": tensors} if tensors else {"type": "object"}},
        "outputs": {"type": "array", "items": {"type": "object", "required": ["name"]}}}}


def _get(summary: str, kind: str = "application/json") -> dict[str, Any]:
    return {"get": {"summary": summary, "responses": {"200": {"description": "OK", "content": {kind: {}}}}}}


def _post(summary: str, body: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    errors = {code: {"description": text, "content": {"application/json": {"schema": _ERROR}}} for code, text in (
        ("400", "malformed request"), ("401", "missing or wrong bearer token"), ("404", "no such model"),
        ("413", "body or rows over the limit"), ("422", "input does not fit the recorded schema (SchemaError)"),
        ("500", "the model raised"))}
    operation = {"summary": summary, "requestBody": {"required": True, "content": body},
                 "responses": {"200": {"description": "predictions"}, **errors}}
    return {"post": {**operation, **(extra or {})}}


def openapi(models: list["ServedModel"]) -> dict[str, Any]:
    """The OpenAPI document of a server holding ``models``."""
    several = len(models) > 1
    model_param = [{"name": "model", "in": "query", "required": several,
                    "schema": {"enum": [m.name for m in models]}}]
    paths: dict[str, Any] = {
        "/invocations": _post("MLflow scoring protocol: predictions for rows (JSON or CSV)", {
            "application/json": {"schema": {"oneOf": [request_schema(m) for m in models]}},
            "text/csv": {"schema": {"type": "string"}}}, {"parameters": model_param}),
    }
    for m in models:
        paths[f"/v2/models/{m.name}/infer"] = _post(f"Open Inference Protocol v2: infer with {m.name}",
                                                    {"application/json": {"schema": _infer_schema(m)}})
        paths[f"/v2/models/{m.name}"] = _get(f"v2 metadata of {m.name}: inputs and outputs")
        paths[f"/v1/models/{m.name}"] = _get(f"{m.name}: manifest summary, environment, verification, schema")
    for path, summary, kind in (
            ("/", "model card page", "text/html"), ("/ping", "liveness (MLflow)", "text/plain"),
            ("/health", "readiness (MLflow)", "text/plain"), ("/version", "modelsafe version", "text/plain"),
            ("/v2", "v2 server metadata", "application/json"), ("/v2/health/live", "v2 liveness", "application/json"),
            ("/v2/health/ready", "v2 readiness", "application/json"), ("/v1/models", "the models served",
                                                                      "application/json"),
            ("/metrics", "Prometheus metrics", "text/plain")):
        paths[path] = _get(summary, kind)
    return {"openapi": "3.1.0", "info": {"title": "modelsafe serve", "version": __version__,
                                         "description": "Models served by modelsafe: " +
                                                        ", ".join(m.name for m in models)},
            "paths": paths,
            "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}}}


def render_docs(document: dict[str, Any]) -> str:
    """The OpenAPI document as a readable page, every value escaped."""
    parts = []
    for path, operations in document["paths"].items():
        for verb, operation in operations.items():
            body = operation.get("requestBody", {}).get("content", {})
            schemas = "".join(f"<h4>{escape(kind)}</h4><pre>{escape(json.dumps(c.get('schema', {}), indent=1))}</pre>"
                              for kind, c in body.items())
            parts.append(f'<section class="operation"><h3><code>{escape(verb.upper())} {escape(path)}</code></h3>'
                         f"<p>{escape(operation.get('summary', ''))}</p>{schemas}</section>")
    info = document["info"]
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(info["title"])} API</title>'
            f'<link rel="stylesheet" href="/static/card.css"></head><body><header><h1>{escape(info["title"])} '
            f'{escape(info["version"])}</h1><p>{escape(info["description"])} &middot; '
            f'<a href="/openapi.json">openapi.json</a> &middot; <a href="/">models</a></p></header>'
            f'<main>{"".join(parts)}</main></body></html>')
