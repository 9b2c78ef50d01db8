"""DataFrame and Series columns stored as ``.npy`` arrays plus JSON, dtype for dtype.

Each column keeps its name (losslessly, see :mod:`.labels`) and its dtype: numbers,
booleans, timedeltas and naive datetimes as their numpy arrays; pandas' nullable
dtypes (``Int64``, ``Float64``, ``boolean``) as their values plus a missing-value mask;
tz-aware datetimes as UTC instants plus the zone; categoricals as codes plus
categories; strings (``object``, ``string``, ``str``) as fixed-width unicode plus a
mask. A polars frame is stored through its Arrow form and rebuilt as polars when
polars is installed where it is read (else as pandas).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from modelsafe.checks.dtypes import describe_dtype
from modelsafe.checks.frames import frame_library, to_pandas
from modelsafe.checks.labels import decode_label, encode_label

if TYPE_CHECKING:
    ArrayWriter = Callable[[str, np.ndarray], str]
    ArrayReader = Callable[[str], np.ndarray]
    Encoder = Callable[[Any, "ArrayWriter", str], dict[str, Any]]
    Decoder = Callable[[dict[str, Any], "ArrayReader"], Any]

__all__ = ["encode_frame", "decode_frame", "encode_column", "decode_column"]

_MASKED_FAMILIES = ("int", "uint", "float", "bool")


def encode_frame(x: Any, write: "ArrayWriter", name: str, encode: "Encoder") -> dict[str, Any]:
    library = frame_library(x)
    frame = to_pandas(x) if library == "polars" else x
    columns = [encode_column(frame.iloc[:, i], write, f"{name}.c{i}", label, encode)
               for i, label in enumerate(frame.columns)]
    spec: dict[str, Any] = {"kind": "dataframe", "columns": columns, "index": None}
    if library == "polars":
        spec["library"] = "polars"
    return spec


def decode_frame(spec: dict[str, Any], read: "ArrayReader", decode: "Decoder") -> Any:
    import pandas as pd

    names = [decode_label(col["name"]) for col in spec["columns"]]
    columns = {i: decode_column(col, read, decode) for i, col in enumerate(spec["columns"])}
    for i, col in enumerate(spec["columns"]):
        if col["dtype"] == "object":  # a Series: pandas 3 would read an object array of strings as its str dtype
            columns[i] = pd.Series(columns[i], dtype=object, copy=False)
    frame = pd.DataFrame(columns, columns=range(len(names)))
    if names and all(isinstance(n, tuple) for n in names) and len({len(n) for n in names}) == 1:
        frame.columns = pd.MultiIndex.from_tuples(names)
    else:
        frame.columns = pd.Index(names, tupleize_cols=False)
    if spec.get("library") == "polars":
        try:
            import polars
        except ImportError:
            return frame  # polars is not installed here: the pandas frame it was stored through
        return polars.from_pandas(frame)
    return frame


def encode_column(series: Any, write: "ArrayWriter", name: str, label: Any, encode: "Encoder") -> dict[str, Any]:
    dtype = series.dtype
    info = describe_dtype(dtype)
    entry: dict[str, Any] = {"name": encode_label(label), "dtype": str(dtype)}
    if info.family == "category":
        entry["categories"] = encode(np.asarray(series.cat.categories), write, f"{name}.cats")
        entry["ordered"] = bool(series.cat.ordered)
        entry["member"] = write(f"{name}.npy", np.asarray(series.cat.codes))
        return entry
    if info.family == "datetime" and info.tz:
        utc = series.dt.tz_convert("UTC").dt.tz_localize(None)
        entry["member"] = write(f"{name}.npy", utc.to_numpy())
        entry["tz"] = info.tz
        return entry
    if info.nullable and info.family in _MASKED_FAMILIES:
        mask = series.isna().to_numpy()
        target = getattr(dtype, "numpy_dtype", None)
        target = np.dtype("float64" if info.family == "float" else "int64") if target is None else target
        fill = np.nan if info.family == "float" else 0
        entry["member"] = write(f"{name}.npy", series.to_numpy(dtype=target, na_value=fill))
        if mask.any():
            entry["na"] = write(f"{name}.na.npy", mask)
        return entry
    values = series.to_numpy()
    if info.family == "string" or (values.dtype.hasobject and _all_text(values, series)):
        mask = series.isna().to_numpy()
        filled = np.where(mask, "", values.astype(object)).astype(str) if values.size else values.astype(str)
        entry["member"] = write(f"{name}.npy", filled)
        if mask.any():
            entry["na"] = write(f"{name}.na.npy", mask)
        return entry
    entry["member"] = write(f"{name}.npy", np.asarray(values))  # objects: numbers and None, or refused
    return entry


def _all_text(values: np.ndarray, series: Any) -> bool:
    present = values[~series.isna().to_numpy()]
    return all(isinstance(v, str) for v in present)


def decode_column(col: dict[str, Any], read: "ArrayReader", decode: "Decoder") -> Any:
    import pandas as pd

    values = read(col["member"])
    dtype = col["dtype"]
    if dtype == "category":
        categories = decode(col["categories"], read)
        return pd.Categorical.from_codes(values, categories=categories, ordered=col.get("ordered", False))
    if col.get("tz"):
        return pd.Series(values).dt.tz_localize("UTC").dt.tz_convert(col["tz"]).astype(dtype).array
    mask = read(col["na"]) if "na" in col else None
    info = describe_dtype(dtype)
    if info.nullable and info.family in _MASKED_FAMILIES:
        array = pd.array(values, dtype=dtype)
        if mask is not None:
            array[mask] = pd.NA
        return array
    if values.dtype.kind == "U":
        obj = values.astype(object)
        if mask is not None:
            obj[mask] = None
        return obj if dtype == "object" else pd.array(obj, dtype=dtype)
    if values.dtype.kind in "Mm" and dtype != str(values.dtype):
        return pd.Series(values).astype(dtype).array
    if dtype == "object":
        return values.astype(object)  # an object column of numbers (and None) stays an object column
    return values

