"""The onnxruntime-backed model: an ONNX graph that predicts as the native model did.

:class:`OnnxModel` feeds the graph from the (guarded) input and gives each recorded output
(``predict``, ``predict_proba``...) the dtype and shape the native model gave it, so a
``Bundle`` is the same whichever runtime runs. :class:`OnnxRunner` is its flavor-shaped
adapter for ``Bundle``'s route (input guard -> model). Only onnxruntime and numpy are used.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from modelsafe.errors import FlavorNotInstalledError, MissingMethodError
from modelsafe.flavors._base import Flavor
from modelsafe.flavors.onnx_graph import GraphInput
from modelsafe.portable import HINT
from modelsafe.portable.feeds import feed

__all__ = ["OnnxModel", "OnnxRunner", "create_session", "onnxruntime_module"]


def onnxruntime_module() -> Any:
    """``onnxruntime``, or FlavorNotInstalledError saying how to install it."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise FlavorNotInstalledError(
            f"The portable ONNX member runs on onnxruntime, which is not installed here ({exc}), so the model "
            f"cannot run with runtime='onnx'. Install it with: {HINT} (or pip install onnxruntime).",
            flavor="onnx", hint=HINT, name="onnxruntime") from exc
    return onnxruntime


def create_session(graph: bytes | memoryview, external: Mapping[str, Any] | None = None) -> Any:
    """An onnxruntime session on the CPU for ``graph``; ``external`` maps external-data locations to their bytes.

    External data is handed over in memory, so the runtime never opens a file the graph names.
    """
    ort = onnxruntime_module()
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: converters leave harmless shape notes the runtime warns about
    if external:
        names = list(external)
        buffers = [external[n] for n in names]
        options.add_external_initializers_from_files_in_memory(names, buffers, [len(b) for b in buffers])
    return ort.InferenceSession(bytes(graph), sess_options=options, providers=["CPUExecutionProvider"])


class OnnxModel:
    """An ONNX graph run by onnxruntime, fed and read as the native model was.

    ``outputs`` maps each recorded output to ``{"graph": name in the graph, "dtype": the native
    dtype, "shape": the native shape, rows as None}``. ``classes_`` (the native model's class
    labels) is there when the native model had them.
    """

    def __init__(self, session: Any, inputs: Sequence[GraphInput], outputs: Mapping[str, Mapping[str, Any]],
                 classes: Sequence[Any] | None = None) -> None:
        self.session = session
        self.inputs = tuple(inputs)
        self.outputs = {name: dict(spec) for name, spec in outputs.items()}
        if classes is not None:
            self.classes_ = np.asarray(classes)

    def __repr__(self) -> str:
        return f"<modelsafe OnnxModel inputs={[i.name for i in self.inputs]} outputs={list(self.outputs)}>"

    def run(self, x: Any, names: Sequence[str] | None = None) -> dict[str, Any]:
        """The recorded outputs ``names`` (default: all) for input ``x``."""
        names = list(self.outputs) if names is None else list(names)
        values = self.session.run([self.outputs[n]["graph"] for n in names], feed(self.inputs, x))
        return {name: _as_recorded(value, self.outputs[name]) for name, value in zip(names, values)}

    def has(self, method: str) -> bool:
        return method in self.outputs

    def call(self, method: str, x: Any) -> Any:
        if method == "predict" and "predict" not in self.outputs:
            method = "transform"  # a transformer predicts its transform, as Flavor.predict has it
        if method not in self.outputs:
            raise MissingMethodError(
                f"The ONNX graph gives {', '.join(self.outputs)}, not {method}: the model it was converted from "
                f"recorded no {method} at save. Call one of those.", method=method, type_name="OnnxModel",
                available=list(self.outputs))
        return self.run(x, [method])[method]

    def predict(self, x: Any) -> Any:
        return self.call("predict", x)

    def predict_proba(self, x: Any) -> Any:
        return self.call("predict_proba", x)

    def transform(self, x: Any) -> Any:
        return self.call("transform", x)


def _as_recorded(value: Any, spec: Mapping[str, Any]) -> Any:
    """A graph output with the native output's shape and dtype (``[n, 1]`` -> ``[n]``, float32 -> float64...)."""
    array = np.asarray(value)
    shape = spec.get("shape") or []
    if shape and all(n is not None for n in shape[1:]):
        target = (array.shape[0] if array.ndim else 1, *shape[1:])
        if array.shape != target and array.size == int(np.prod(target)):
            array = array.reshape(target)
    dtype = np.dtype(spec.get("dtype", array.dtype))
    if array.dtype != dtype and not (array.dtype.kind == "O" and dtype.kind == "O"):
        array = array.astype(dtype)
    return array


class OnnxRunner(Flavor):
    """The flavor-shaped adapter that lets ``Bundle`` run an :class:`OnnxModel` (not in the flavor registry)."""

    name = "onnx"

    def predict(self, obj: Any, x: Any) -> Any:
        return obj.call("predict", x)

    def has_method(self, obj: Any, method: str) -> bool:
        return method == "predict" or obj.has(method)

    def call(self, obj: Any, method: str, x: Any) -> Any:
        return obj.call(method, x)

    def transform(self, obj: Any, x: Any) -> Any:
        return obj.call("transform", x)

    def outputs(self, obj: Any, x: Any) -> dict[str, Any]:
        return obj.run(x)

    def replay_context(self, obj: Any) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()
