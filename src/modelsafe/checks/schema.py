"""Input schema: what the model was given at save (the guard that checks it is :mod:`.guard`).

At save the schema records the input's kind and, by kind:

* a DataFrame (pandas, or polars read through Arrow): per column its name (stored
  losslessly, see :mod:`.labels`), dtype, dtype family, whether it is nullable and its
  time zone (see :mod:`.dtypes`), and for numeric columns the value range;
* an array or tensor: dtype, feature shape, and per feature of a 2-D numeric array its range;
* positional inputs (a tuple or list of arrays, for models that take several, as
  ``forward(a, b)`` or a Keras model called with ``[a, b]``): the schema of each input;
* keyword inputs (a dict): the keys, and the schema of each value.

Ranges come from ``training_data`` when it is given (same layout as the sample), else from
the sample, and only from enough rows to mean something (see :mod:`.ranges`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from modelsafe.checks.data import describe_kind
from modelsafe.checks.dtypes import RANGED, describe_dtype
from modelsafe.checks.frames import frame_library, refuse_duplicates, to_pandas
from modelsafe.checks.guard import Guard, check_input
from modelsafe.checks.labels import encode_label, label_key
from modelsafe.checks.ranges import MIN_RANGE_ROWS, InputWarning, record

__all__ = ["capture_schema", "Guard", "check_input", "InputWarning", "SCHEMA_VERSION"]

#: 2: column names stored losslessly, dtype families, the rows ranges were recorded from.
SCHEMA_VERSION = 2
_MAX_FEATURES = 2048


def capture_schema(x: Any, training_data: Any = None, *, positional: bool = False) -> dict[str, Any]:
    """Describe ``x``: kind, columns or features with dtypes, and value ranges.

    Ranges come from ``training_data`` when it is given (same layout as ``x``).
    ``positional``: the model takes a tuple or list of arrays as separate inputs.
    """
    kind = describe_kind(x)
    if kind == "dataframe":
        return _frame_schema(x, training_data)
    if kind == "dict":
        keys = [str(k) for k in x]
        training = training_data if isinstance(training_data, dict) else {}
        return {"kind": kind, "version": SCHEMA_VERSION, "keys": keys,
                "inputs": {str(k): capture_schema(v, training.get(k)) for k, v in x.items()}}
    if kind == "sequence":
        if not positional:
            return {"kind": "list"}  # rows for this model, not separate inputs: nothing per item to check
        training = training_data if isinstance(training_data, (list, tuple)) and len(training_data) == len(x) \
            else [None] * len(x)
        return {"kind": "positional", "version": SCHEMA_VERSION, "container": type(x).__name__,
                "inputs": [capture_schema(v, t) for v, t in zip(x, training)]}
    if kind in ("texts", "list"):
        return {"kind": kind}
    return _array_schema(x, kind, training_data)


def _polars_dtype(col: Any) -> Any:
    """The dtype recorded for a column of a polars sample (read as a nullable pandas column): every polars
    column may hold nulls, so a number or bool column whose sample holds none is recorded as the numpy dtype,
    as a pandas sample of it would be, and nulls given later into it are counted and refused."""
    plain = getattr(col.dtype, "numpy_dtype", None)
    if plain is not None and plain.kind in "iufb" and not col.isna().any():
        return plain
    return col.dtype


def _frame_schema(x: Any, training_data: Any) -> dict[str, Any]:
    library = frame_library(x)
    frame = to_pandas(x) if library == "polars" else x
    labels = list(frame.columns)
    keys = [label_key(c) for c in labels]
    refuse_duplicates(labels, keys, "The sample")
    reference = frame if training_data is None else training_data
    if frame_library(reference) == "polars":
        reference = to_pandas(reference)
    rows = len(reference)
    by_key = _columns_by_key(reference, len(labels))
    columns = []
    recorded = False
    for j, label in enumerate(labels):
        col = frame.iloc[:, j]
        dtype = _polars_dtype(col) if library == "polars" else col.dtype
        info = describe_dtype(dtype)
        entry: dict[str, Any] = {"name": encode_label(label), "dtype": str(dtype), **info.to_json()}
        if info.family == "category":
            entry["categories"] = [str(c) for c in col.cat.categories[:1000]]
        elif info.family in RANGED and rows >= MIN_RANGE_ROWS:
            values = by_key(keys[j], j)
            entry.update(record(values) if values is not None else {})
            recorded = recorded or "min" in entry
        columns.append(entry)
    return {"kind": "dataframe", "version": SCHEMA_VERSION, "library": library, "columns": columns,
            **_origin(training_data, rows, recorded)}


def _columns_by_key(reference: Any, width: int) -> Any:
    """``get(key, position)``: one column of the range reference as float64 (NaN for missing), or None."""
    if frame_library(reference) is not None:
        where = {label_key(c): i for i, c in enumerate(reference.columns)}

        def from_frame(key: Any, position: int) -> np.ndarray | None:
            i = where.get(key)
            return None if i is None else _floats(reference.iloc[:, i])

        return from_frame
    array = np.asarray(reference) if hasattr(reference, "shape") else None
    usable = array is not None and array.ndim == 2 and array.shape[1] == width and array.dtype.kind in "iuf"

    def from_array(key: Any, position: int) -> np.ndarray | None:
        return array[:, position].astype(np.float64) if usable else None  # type: ignore[index]

    return from_array


def _floats(column: Any) -> np.ndarray | None:
    try:
        return column.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):
        return None


def _origin(training_data: Any, rows: int, recorded: bool) -> dict[str, Any]:
    """Where the ranges came from, and from how many rows (None when too few rows to record any)."""
    if not recorded:
        return {"ranges_from": None, "range_rows": rows}
    return {"ranges_from": "sample" if training_data is None else "training_data", "range_rows": rows}


def _array_schema(x: Any, kind: str, training_data: Any) -> dict[str, Any]:
    try:
        arr = _array(x, kind)
        ref = arr if training_data is None else _array(training_data, describe_kind(training_data))
    except Exception:  # noqa: BLE001 - an input we cannot describe gets no schema
        return {"kind": kind}
    schema: dict[str, Any] = {"kind": kind, "version": SCHEMA_VERSION, "dtype": str(arr.dtype),
                              "shape": [None, *arr.shape[1:]]}
    rangeable = (arr.ndim == 2 and arr.dtype.kind in "iuf" and arr.shape[1] <= _MAX_FEATURES
                 and ref.ndim == 2 and ref.shape[1:] == arr.shape[1:] and ref.dtype.kind in "iuf")
    recorded = rangeable and len(ref) >= MIN_RANGE_ROWS
    if recorded:
        schema["features"] = [record(ref[:, j]) for j in range(ref.shape[1])]
    schema.update(_origin(training_data, len(ref) if ref.ndim else 0, recorded))
    return schema


def _array(x: Any, kind: str) -> np.ndarray:
    if kind == "tensor" and hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)
