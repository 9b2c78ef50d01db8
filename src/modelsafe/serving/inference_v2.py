"""The Open Inference Protocol v2 (KServe, Triton, Seldon MLServer), with the binary tensor data extension.

``GET /v2``, ``/v2/health/live``, ``/v2/health/ready``, ``/v2/models/NAME`` (metadata from
the recorded schema), ``/v2/models/NAME/ready`` and ``POST /v2/models/NAME/infer`` (also
under ``/versions/1``). A model saved with a DataFrame takes one input per column, as
MLServer's pandas codec does (or a single 2-D tensor of the columns in their recorded
order); a DataFrame output is one output per column. Any other output is one tensor named
for the method that made it (``predict``, ``predict_proba``...). Requesting an output named
for a method runs that method; ``parameters.method`` does too. Guard warnings come back in
the response's ``parameters.warnings``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from modelsafe._version import __version__
from modelsafe.serving.errors import MalformedRequestError, ModelNotFoundError, ServiceUnavailableError
from modelsafe.serving.inputs import rows_in
from modelsafe.serving.models import METHODS, ServedModel
from modelsafe.serving.outputs import dumps
from modelsafe.serving.scoring import load_json
from modelsafe.serving.tensors import Tensor, datatype_of, read_tensors, tensor_bytes, tensor_data
from modelsafe.serving.web import endpoint, json_response, note, read_body

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from modelsafe.serving.service import Service

__all__ = ["routes", "model_metadata", "input_tensors"]

VERSION = "1"
HEADER_LENGTH = "inference-header-content-length"


def input_tensors(model: ServedModel) -> list[dict[str, Any]]:
    """The inputs a model takes, as v2 metadata, from its recorded schema."""
    spec, schema = model.spec, model.manifest.schema or {}
    if spec.is_frame:
        return [{"name": str(label), "datatype": datatype_of(c.get("dtype")), "shape": [-1]}
                for label, c in zip(spec.labels, spec.columns)]
    if spec.kind == "texts":
        return [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    if spec.kind == "dict":
        return [{"name": k, "datatype": datatype_of(s.get("dtype")), "shape": _shape(s.get("shape"))}
                for k, s in (schema.get("inputs") or {}).items()]
    if spec.kind == "positional":
        return [{"name": f"input-{i}", "datatype": datatype_of(s.get("dtype")), "shape": _shape(s.get("shape"))}
                for i, s in enumerate(schema.get("inputs") or ())]
    if spec.dtype is not None:
        return [{"name": "input-0", "datatype": datatype_of(spec.dtype), "shape": _shape(spec.shape)}]
    return []


def _shape(shape: Any) -> list[int]:
    return [-1 if d is None else int(d) for d in (shape or [None])]


def model_metadata(model: ServedModel) -> dict[str, Any]:
    outputs = ((model.manifest.verification or {}).get("outputs")) or {}
    meta: dict[str, Any] = {
        "name": model.name, "versions": [VERSION], "platform": f"modelsafe-{model.manifest.flavor}",
        "inputs": input_tensors(model),
        "outputs": [{"name": name, "datatype": datatype_of(o.get("dtype")),
                     "shape": [-1, *(o.get("shape") or [0])[1:]]} for name, o in outputs.items()],
    }
    if model.spec.is_frame:
        meta["parameters"] = {"content_type": "pd"}
    return meta


def model_input(model: ServedModel, tensors: list[Tensor]) -> Any:
    """The model's input from the request's tensors (see the module docstring)."""
    spec = model.spec
    if spec.is_frame:
        known = {str(label) for label in spec.labels}
        if len(tensors) == 1 and tensors[0].array.ndim == 2 and tensors[0].name not in known:
            return spec.from_rows(_values(tensors[0].array).tolist())
        return spec.from_columns({t.name: _column(t) for t in tensors})
    if spec.kind == "texts":
        return spec.from_rows([v.decode("utf-8", errors="replace") if isinstance(v, bytes) else v
                               for v in tensors[0].array.ravel().tolist()])
    if spec.kind == "dict":
        return spec.from_columns({t.name: _values(t.array) for t in tensors})
    if spec.kind == "positional":
        return spec.from_rows([_values(t.array) for t in tensors])
    if len(tensors) != 1:
        raise MalformedRequestError(
            f"The request has {len(tensors)} inputs {[t.name for t in tensors]} but the model {model.name!r} takes "
            "one array: the server would not know which to give it. Send one input (GET /v2/models/NAME lists it).",
            expected=1, actual=len(tensors))
    return spec.array(_values(tensors[0].array))


def _values(array: np.ndarray) -> np.ndarray:
    """BYTES elements as text (what a model saved with strings was given)."""
    if array.dtype == object:
        return np.vectorize(lambda v: v.decode("utf-8", errors="replace") if isinstance(v, bytes) else v,
                            otypes=[object])(array) if array.size else array
    return array


def _column(tensor: Tensor) -> Any:
    array = tensor.array
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise MalformedRequestError(
            f"Input {tensor.name!r} has shape {tensor.shape}, but a column of a DataFrame input has shape [n] or "
            "[n, 1]: one value per row.", expected="[n] or [n, 1]", actual=tensor.shape)
    values = _values(array)
    return values.tolist() if values.dtype == object else values


def output_tensors(method: str, value: Any) -> list[tuple[str, np.ndarray]]:
    """A prediction as named arrays (a DataFrame's columns, a dict's keys, or one named for the method)."""
    if hasattr(value, "columns") and hasattr(value, "iloc"):
        return [(str(c), _array(value[c].to_numpy())) for c in value.columns]
    if isinstance(value, dict):
        return [(str(k), _array(v)) for k, v in value.items()]
    if isinstance(value, tuple):
        return [(f"{method}-{i}", _array(v)) for i, v in enumerate(value)]
    return [(method, _array(value))]


def _array(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    array = np.asarray(value.to_numpy() if hasattr(value, "to_numpy") else value)
    return array.astype(object) if array.dtype.kind in "USMmO" and array.dtype != object else array


def encode(model: ServedModel, request_id: Any, outputs: list[tuple[str, np.ndarray, bool]],
           warnings: list[str]) -> tuple[bytes, dict[str, str], str]:
    """The response body, its headers and content type (binary outputs after the JSON header)."""
    described, blobs = [], []
    for name, array, binary in outputs:
        entry: dict[str, Any] = {"name": name, "datatype": datatype_of(array.dtype), "shape": list(array.shape)}
        if binary:
            raw = tensor_bytes(array)
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = tensor_data(array)
        described.append(entry)
    response: dict[str, Any] = {"model_name": model.name, "model_version": VERSION, "outputs": described}
    if request_id is not None:
        response["id"] = request_id
    if warnings:
        response["parameters"] = {"warnings": warnings}
    header = dumps(response)
    if not blobs:
        return header, {}, "application/json"
    return header + b"".join(blobs), {"Inference-Header-Content-Length": str(len(header))}, "application/octet-stream"


def _parse(model: ServedModel, body: bytes, length: str | None) -> tuple[dict[str, Any], Any]:
    """The request's JSON header and the model's input built from its tensors."""
    header, binary = _split_body(body, length)
    if not isinstance(header, dict):
        raise MalformedRequestError("The inference request must be a JSON object with 'inputs'.",
                                    actual=type(header).__name__)
    return header, model_input(model, read_tensors(header.get("inputs"), binary))


def _split_body(body: bytes, raw: str | None) -> tuple[Any, memoryview]:
    if raw is None:
        return load_json(body), memoryview(b"")
    if not raw.strip().isdigit() or int(raw) > len(body):
        raise MalformedRequestError(
            f"Inference-Header-Content-Length is {raw!r} but the body has {len(body)} byte(s): the server cannot "
            "find where the JSON header ends. Send the JSON header's length in bytes.", actual=raw,
            expected=f"0..{len(body)}")
    length = int(raw)
    return load_json(body[:length]), memoryview(body)[length:]


def _methods(model: ServedModel, header: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """The methods to run and the outputs requested (``[]``: every output of the method)."""
    requested = header.get("outputs") or []
    if not isinstance(requested, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str)
                                                  for o in requested):
        raise MalformedRequestError("'outputs' must be a list of {\"name\": ...} objects.", actual=repr(requested)[:80])
    method = (header.get("parameters") or {}).get("method")
    named = [o["name"] for o in requested if o["name"] in METHODS]
    methods = [method] if method else (named or ["predict"])
    return list(dict.fromkeys(methods)), requested


def routes(service: "Service") -> list[Any]:
    from starlette.responses import Response
    from starlette.routing import Route

    def find(request: "Request") -> ServedModel:
        name = request.path_params["name"]
        version = request.path_params.get("version", VERSION)
        model = service.models.get(name)
        if model is None or version != VERSION:
            raise ModelNotFoundError(
                f"No model {name!r} (version {version}) is served here: the server holds {sorted(service.models)}, "
                f"each as version {VERSION}. Use one of those names (GET /v2/models/NAME).", model=name,
                available=sorted(service.models))
        note(request, model=name)
        return model

    @endpoint("v2")
    async def server(request: "Request") -> Response:
        return json_response({"name": "modelsafe", "version": __version__, "extensions": ["binary_tensor_data"]})

    @endpoint("v2")
    async def live(request: "Request") -> Response:
        return json_response({"live": True})

    @endpoint("v2")
    async def ready(request: "Request") -> Response:
        return json_response({"ready": service.ready}, 200 if service.ready else 503)

    @endpoint("v2")
    async def metadata(request: "Request") -> Response:
        return json_response(model_metadata(find(request)))

    @endpoint("v2")
    async def model_ready(request: "Request") -> Response:
        model = find(request)
        ok = service.ready and model.verification.ok
        return json_response({"name": model.name, "ready": ok}, 200 if ok else 503)

    @endpoint("v2")
    async def infer(request: "Request") -> Response:
        model = find(request)
        if service.draining:
            raise ServiceUnavailableError("The server is shutting down and takes no new requests.")
        body = await read_body(request, service.limits.max_body_bytes)
        length = request.headers.get(HEADER_LENGTH)
        (header, inputs), noted = await service.decode(len(body), lambda: _parse(model, body, length))
        methods, requested = _methods(model, header)
        produced: list[tuple[str, str, np.ndarray]] = []  # (method, output name, values)
        warnings: list[str] = []
        for method in methods:
            outcome = await service.predict(model, service.check_method(model, method), inputs, noted)
            produced += [(method, name, array) for name, array in output_tensors(method, outcome.value)]
            warnings += [w for w in outcome.warnings if w not in warnings]
        wanted = {o["name"]: o for o in requested}
        if wanted:
            produced = [p for p in produced if p[0] in wanted or p[1] in wanted]
            missing = sorted(set(wanted) - {p[0] for p in produced} - {p[1] for p in produced})
            if missing:
                raise MalformedRequestError(
                    f"The request asks for the output(s) {missing}, which the model {model.name!r} does not produce "
                    f"(its methods: {list(model.methods)}). Ask for those, or for no outputs to get every one.",
                    actual=missing, expected=list(model.methods))
        everything = bool((header.get("parameters") or {}).get("binary_data_output"))

        def binary(method: str, name: str) -> bool:
            asked = wanted.get(name) or wanted.get(method) or {}
            return bool((asked.get("parameters") or {}).get("binary_data", everything))

        note(request, rows=rows_in(inputs))
        body, headers, media = encode(model, header.get("id"),
                                      [(name, array, binary(m, name)) for m, name, array in produced], warnings)
        return Response(body, 200, headers=headers, media_type=media)

    paths = []
    for base in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        paths += [Route(base, metadata, methods=["GET"]), Route(base + "/ready", model_ready, methods=["GET"]),
                  Route(base + "/infer", infer, methods=["POST"])]
    return [Route("/v2", server, methods=["GET"]), Route("/v2/health/live", live, methods=["GET"]),
            Route("/v2/health/ready", ready, methods=["GET"]), *paths]

