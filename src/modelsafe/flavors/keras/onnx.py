"""Keras 3 models as ONNX graphs, with Keras' own ``model.export(path, format="onnx")`` (``save(..., portable="onnx")``).

On the TensorFlow backend Keras exports through its traced ``call`` function (tf2onnx's
``from_function``, which Keras patches for numpy 2: tf2onnx's own ``from_keras`` does not
read Keras 3 models). The graph keeps the model's input names and a dynamic batch
dimension; its inputs are matched to the model's inputs by position, its outputs to
``predict`` (``predict.0``, ``predict.1``... for several) by position.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from modelsafe.errors import UnsupportedModelError
from modelsafe.flavors.onnx_graph import GraphInput, OnnxGraph

__all__ = ["to_onnx"]

#: numpy names of the ONNX element types a Keras graph takes (TensorProto.DataType numbers).
_ELEMENT_TYPES = {1: "float32", 6: "int32", 7: "int64", 9: "bool", 10: "float16", 11: "float64"}


def to_onnx(obj: Any, schema: Mapping[str, Any] | None, sample: Any) -> OnnxGraph:
    import keras
    import onnx

    if not isinstance(obj, keras.Model):
        raise UnsupportedModelError(
            f"{type(obj).__module__}.{type(obj).__qualname__} is not a Keras 3 model (a SavedModel endpoint or a "
            "Keras 2 model): only Keras 3 models export to ONNX. Save it without portable=.",
            type_name=type(obj).__qualname__)
    if isinstance(sample, Mapping):
        raise UnsupportedModelError(
            "The Keras model takes a dict of inputs; modelsafe converts models taking one input or a list of inputs "
            "to ONNX. Save it without portable=.", type_name=type(obj).__qualname__)
    with tempfile.TemporaryDirectory(prefix="modelsafe-keras-onnx-") as folder, _quiet():
        path = Path(folder) / "model.onnx"
        obj.export(str(path), format="onnx", verbose=False)
        model = onnx.load_model(str(path))
    several = isinstance(sample, (list, tuple))
    inputs = tuple(_graph_input(value, i if several else None) for i, value in enumerate(model.graph.input))
    names = [o.name for o in model.graph.output]
    outputs = {"predict": names[0]} if len(names) == 1 else {f"predict.{i}": name for i, name in enumerate(names)}
    return OnnxGraph(model=model, inputs=inputs, outputs=outputs, converter=f"keras {keras.__version__} export")


def _graph_input(value: Any, position: int | None) -> GraphInput:
    tensor = value.type.tensor_type
    dims = tuple(None if i == 0 or not d.HasField("dim_value") else int(d.dim_value)
                 for i, d in enumerate(tensor.shape.dim))
    return GraphInput(value.name, _ELEMENT_TYPES.get(tensor.elem_type, "float32"), dims, position=position)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """tf2onnx logs every step at INFO; keep its errors only (and no deprecation notices)."""
    logger = logging.getLogger("tf2onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():  # numpy's notices about tf2onnx's aliases, nothing a user can act on
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        logger.setLevel(level)
