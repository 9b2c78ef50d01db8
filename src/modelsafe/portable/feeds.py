"""The model's input, as the ONNX graph takes it: one array per graph input.

The input has been through the input guard (columns realigned to the recorded order), so a
graph input reads its DataFrame columns by position. Numbers are cast to the dtype the graph
takes (float64 columns become float32 where the converter wrote a float graph); text goes in
as ONNX strings; one column becomes a ``[rows, 1]`` tensor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from modelsafe.errors import SchemaError
from modelsafe.flavors.onnx_graph import GraphInput

__all__ = ["feed"]


def feed(inputs: Sequence[GraphInput], x: Any) -> dict[str, np.ndarray]:
    """``{graph input name: array}`` for input ``x`` (guarded already)."""
    return {spec.name: _array(spec, _part(spec, x)) for spec in inputs}


def _part(spec: GraphInput, x: Any) -> Any:
    if spec.position is not None:
        return x[spec.position]
    if spec.key is not None:
        return x[spec.key]
    if spec.columns:
        if not hasattr(x, "columns"):
            return np.asarray(x)[:, list(spec.columns)]
        names = list(x.columns)  # pandas or polars, realigned to the recorded order by the guard
        if list(spec.columns) == list(range(len(names))):
            return x.to_numpy()
        columns = [_column(x, names[i]) for i in spec.columns]  # by label: much faster than iloc on a few rows
        return columns[0] if len(columns) == 1 else np.column_stack(columns)
    return x


def _column(frame: Any, name: Any) -> np.ndarray:
    return np.asarray(frame[name].to_numpy())


def _array(spec: GraphInput, value: Any) -> np.ndarray:
    if spec.dtype == "str":  # onnxruntime takes Python str objects; text columns mostly hold them already
        array = np.asarray(value)
        if array.dtype != object or not all(type(v) is str for v in array.flat):
            array = array.astype(str).astype(object)
    else:
        try:
            array = np.asarray(value, dtype=spec.dtype)
        except (TypeError, ValueError) as exc:
            raise SchemaError(
                f"The ONNX graph's input {spec.name!r} takes {spec.dtype} values, and these cannot be converted "
                f"({exc}). Pass the input as the model was saved with.", expected=spec.dtype, column=spec.name) from exc
    rest = spec.shape[1:]
    if rest and all(n is not None for n in rest) and array.shape[1:] != tuple(rest):
        array = array.reshape(-1, *rest)  # type: ignore[misc]
    return array
