"""Predictions as JSON: numpy arrays, pandas frames and series, dicts, lists and tensors.

Non-finite floats (NaN, infinity) become ``null``: JSON has no token for them, and a
body with ``NaN`` in it is refused by most clients' parsers.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

__all__ = ["jsonable", "dumps", "rows_of", "take_rows"]


def jsonable(value: Any) -> Any:
    """``value`` as JSON types (a DataFrame as a list of records, as MLflow returns it)."""
    if isinstance(value, np.ndarray):
        return _array(value)
    if isinstance(value, (str, bool, int)) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    kind = type(value).__name__
    if kind == "DataFrame" and hasattr(value, "to_dict"):
        columns = [str(c) for c in value.columns]
        return [dict(zip(columns, row)) for row in _array(value.to_numpy(dtype=object))]
    if kind == "Series" and hasattr(value, "to_numpy"):
        return _array(value.to_numpy())
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
        return _array(value.detach().cpu().numpy())
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    item = getattr(value, "item", None)
    if callable(item):  # numpy scalars
        return jsonable(item())
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "__array__"):
        return _array(np.asarray(value))
    return str(value)


def _array(array: np.ndarray) -> Any:
    kind = array.dtype.kind
    if kind in "iub":
        return array.tolist()
    if kind == "f":
        if np.isfinite(array).all():
            return array.tolist()
        return np.where(np.isfinite(array), array, None).tolist()
    if kind in "Mm":
        return np.where(np.isnat(array), None, array.astype(str)).tolist()
    if kind == "c":
        return jsonable([[z.real, z.imag] for z in array.ravel().tolist()])
    return jsonable(array.tolist())


def dumps(value: Any) -> bytes:
    """Compact JSON of ``value`` (already :func:`jsonable`); anything left over as its text."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False, default=str).encode()


def rows_of(value: Any) -> int | None:
    """How many rows a prediction has (its first dimension), or None when it has none."""
    if isinstance(value, dict):
        lengths = {rows_of(v) for v in value.values()}
        return lengths.pop() if len(lengths) == 1 else None
    shape = getattr(value, "shape", None)
    if shape is not None:
        return int(shape[0]) if len(shape) else None
    if isinstance(value, (list, tuple)):
        return len(value)
    return None


def take_rows(value: Any, start: int, stop: int) -> Any:
    """Rows ``start:stop`` of a prediction (the part of a batch one request sent)."""
    if isinstance(value, dict):
        return {k: take_rows(v, start, stop) for k, v in value.items()}
    iloc = getattr(value, "iloc", None)
    if iloc is not None:
        return iloc[start:stop]
    return value[start:stop]
