"""What a flavor's ``to_onnx`` gets and gives back: an ONNX graph bound to the model's recorded input.

``ms.save(..., portable="onnx")`` asks the model's flavor to convert it
(:meth:`modelsafe.flavors._base.Flavor.to_onnx`, each flavor's converter in its own folder);
:mod:`modelsafe.portable` then runs the graph with onnxruntime. The graph's inputs come from
the input schema recorded at save (:func:`graph_inputs`): column names, dtypes and a dynamic
batch dimension. Each :class:`GraphInput` says which part of the guarded input feeds it (a
DataFrame's columns by position, one of several positional inputs, a dict key), so the
portable runtime feeds the graph from what ``Bundle.predict`` receives, without the framework.

Nothing here imports onnx or a framework.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelsafe.errors import UnsupportedModelError

__all__ = ["GraphInput", "OnnxGraph", "graph_inputs", "onnx_dtype"]

#: Column families fed to a graph as numbers (as float, or as int64 for integer columns).
_NUMERIC = ("float", "int", "uint", "bool")


@dataclass(frozen=True)
class GraphInput:
    """One input of the ONNX graph, and the part of the model's input that feeds it.

    ``dtype`` is the numpy dtype name the values are fed as (``"str"`` for an ONNX string
    tensor); ``shape`` has ``None`` for each dynamic dimension (the batch first). ``columns``
    are the positions, in the recorded schema, of the DataFrame columns stacked into it;
    ``position`` picks one of several positional inputs and ``key`` one input of a dict.
    """

    name: str
    dtype: str
    shape: tuple[int | None, ...]
    columns: tuple[int, ...] = ()
    position: int | None = None
    key: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}
        if self.columns:
            out["columns"] = list(self.columns)
        if self.position is not None:
            out["position"] = self.position
        if self.key is not None:
            out["key"] = self.key
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GraphInput:
        return cls(name=str(data["name"]), dtype=str(data["dtype"]), shape=tuple(data["shape"]),
                   columns=tuple(int(c) for c in data.get("columns", ())), position=data.get("position"),
                   key=data.get("key"))


@dataclass
class OnnxGraph:
    """What a flavor's converter returns.

    ``model`` is the ``onnx.ModelProto``; ``outputs`` maps each output modelsafe records for
    verification (``predict``, ``predict_proba``, ``predict.0``...) to the graph output that
    gives it; ``converter`` names the tool and its version (``"skl2onnx 1.20.0"``).
    """

    model: Any
    inputs: tuple[GraphInput, ...]
    outputs: dict[str, str]
    converter: str
    classes: list[Any] | None = None


def onnx_dtype(family: str, float_dtype: str = "float32") -> str:
    """The dtype a column of ``family`` is fed to a graph as."""
    if family == "float":
        return float_dtype
    if family in ("int", "uint"):
        return "int64"
    if family == "bool":
        return "bool"
    return "str"


def graph_inputs(schema: Mapping[str, Any] | None, *, per_column: bool,
                 float_dtype: str = "float32") -> tuple[GraphInput, ...]:
    """The graph's inputs for a model whose input was recorded as ``schema`` (what skl2onnx and onnxmltools
    are given; the torch and Keras exporters trace the model and name their inputs themselves).

    A DataFrame becomes one input per column (``per_column``: what skl2onnx expects of a
    ColumnTransformer, and the only way for mixed dtypes) or one ``[batch, n]`` matrix of its
    columns in the recorded order (numbers only). An array keeps its feature shape with a
    dynamic batch; its numbers are fed as ``float_dtype`` (tree and linear converters take floats).
    """
    if not schema:
        raise UnsupportedModelError(
            "The model has no recorded input schema, so the ONNX graph's input signature cannot be written. "
            "Save it with sample= a few input rows.", type_name="")
    kind = schema.get("kind")
    if kind == "dataframe":
        return _frame_inputs(schema, per_column, float_dtype)
    if kind in ("ndarray", "tensor") and schema.get("shape") is not None and _kind_of(str(schema.get("dtype"))) in "fiub":
        return (GraphInput("X", float_dtype, tuple(None if i == 0 else int(n) for i, n in enumerate(schema["shape"]))),)
    raise UnsupportedModelError(
        f"The model's input was recorded as {kind!r} ({schema.get('dtype', 'no dtype')}), which modelsafe does not "
        "feed to a converted graph (it feeds arrays of numbers and DataFrames of numbers and text). Convert the "
        "input before the model, or save without portable=.", type_name=str(kind))


def _frame_inputs(schema: Mapping[str, Any], per_column: bool, float_dtype: str) -> tuple[GraphInput, ...]:
    columns = list(schema.get("columns", ()))
    if per_column:  # named as the columns: skl2onnx matches a ColumnTransformer's selections by name
        return tuple(GraphInput(str(c["name"]), onnx_dtype(c.get("family", "other"), float_dtype), (None, 1),
                                columns=(i,)) for i, c in enumerate(columns))
    text = [str(c["name"]) for c in columns if c.get("family") not in _NUMERIC]
    if text:
        raise UnsupportedModelError(
            f"Column(s) {', '.join(map(repr, text))} hold text or categories, which cannot be stacked into one "
            "numeric ONNX input. Encode them in the model (a ColumnTransformer with a OneHotEncoder) or as numbers "
            "before it.", type_name="DataFrame", columns=text)
    return (GraphInput("X", float_dtype, (None, len(columns)), columns=tuple(range(len(columns)))),)


def _kind_of(dtype: str) -> str:
    import numpy as np

    try:
        return np.dtype(dtype).kind
    except TypeError:
        return "O"

