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
from dataclasses import dataclass, field
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
    notes: list[str] = field(default_factory=list)


def onnx_dtype(family: str, float_dtype: str = "float32") -> str:
    """The dtype a column of ``family`` is fed to a graph as."""
    if family == "float":
        return float_dtype
    if family in ("int", "uint"):
        return "int64"
    if family == "bool":
        return "bool"
    return "str"


def graph_inputs(schema: Mapping[str, Any] | None, *, per_column: bool, float_dtype: str = "float32",
                 numbers_as_float: bool = True) -> tuple[GraphInput, ...]:
    """The graph's inputs for a model whose input was recorded as ``schema``.

    A DataFrame becomes one input per column (``per_column``: what skl2onnx expects of a
    ColumnTransformer, and the only way for mixed dtypes) or one ``[batch, n]`` matrix of its
    columns in the recorded order (numbers only). Arrays keep their feature shape with a
    dynamic batch; positional and keyword inputs give one input each. ``numbers_as_float``
    feeds integer arrays as floats (tree and linear converters take float tensors).
    """
    if not schema:
        raise UnsupportedModelError(
            "The model has no recorded input schema, so the ONNX graph's input signature cannot be written. "
            "Save it with sample= a few input rows.", type_name="")
    kind = schema.get("kind")
    if kind == "dataframe":
        return _frame_inputs(schema, per_column, float_dtype)
    if kind in ("ndarray", "tensor"):
        return (_array_input("X", schema, float_dtype, numbers_as_float),)
    if kind == "positional":
        return tuple(_array_input(f"input_{i}", sub, float_dtype, numbers_as_float, position=i)
                     for i, sub in enumerate(schema.get("inputs", ())))
    if kind == "dict" and "keys" in schema:
        return tuple(_array_input(str(k), schema["inputs"][k], float_dtype, numbers_as_float, key=str(k))
                     for k in schema["keys"])
    raise UnsupportedModelError(
        f"The model's input was recorded as {kind!r}, which no ONNX converter takes (ONNX graphs take tensors: "
        "arrays, DataFrames of numbers and strings). Convert the input to arrays before the model, or save "
        "without portable=.", type_name=str(kind))


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


def _array_input(name: str, schema: Mapping[str, Any], float_dtype: str, numbers_as_float: bool, *,
                 position: int | None = None, key: str | None = None) -> GraphInput:
    if schema.get("kind") not in ("ndarray", "tensor") or schema.get("shape") is None:
        raise UnsupportedModelError(
            f"Input {name!r} was recorded as {schema.get('kind')!r} without a shape, which an ONNX graph cannot "
            "take. Pass arrays or tensors.", type_name=str(schema.get("kind")))
    dtype = str(schema.get("dtype", "float32"))
    kind = _kind_of(dtype)
    if kind == "f" or (numbers_as_float and kind in "iub"):
        fed = float_dtype
    elif kind in "iu":
        fed = "int64" if numbers_as_float else dtype
    elif kind == "b":
        fed = "bool"
    else:
        raise UnsupportedModelError(
            f"Input {name!r} has dtype {dtype}, which modelsafe does not feed to an ONNX graph. Pass numbers.",
            type_name=dtype)
    shape = tuple(None if i == 0 else int(n) for i, n in enumerate(schema["shape"]))
    return GraphInput(name, fed, shape, position=position, key=key)


def _kind_of(dtype: str) -> str:
    import numpy as np

    try:
        return np.dtype(dtype).kind
    except TypeError:
        return "O"

