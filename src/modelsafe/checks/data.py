"""Storing sample inputs and outputs without pickle.

Data is encoded as a JSON description plus ``.npy`` arrays (never ``allow_pickle``):
numpy arrays, pandas DataFrames and Series (numeric, boolean, datetime, string and
categorical columns), lists of texts, nested lists, dicts of arrays, and tensors of
any framework that offers ``.numpy()``. Object arrays of strings become fixed-width
unicode arrays; anything that would need pickle is refused with a clear error.
"""

from __future__ import annotations

import io
from typing import Any, Callable

import numpy as np

from modelsafe.errors import SaveError

ArrayWriter = Callable[[str, np.ndarray], str]
ArrayReader = Callable[[str], np.ndarray]


def npy_bytes(array: np.ndarray) -> memoryview:
    """Serialize one array to .npy bytes (no pickle)."""
    buf = io.BytesIO()
    np.save(buf, _plain(array), allow_pickle=False)
    return buf.getbuffer()


def npy_load(view: memoryview | bytes, *, copy: bool = True) -> np.ndarray:
    """Read .npy bytes (never pickle). ``copy=False`` returns a zero-copy, read-only view."""
    fmt = np.lib.format
    header = io.BytesIO(bytes(memoryview(view)[:65536]))
    major, _minor = fmt.read_magic(header)
    read_header = fmt.read_array_header_1_0 if major == 1 else fmt.read_array_header_2_0
    shape, fortran, dtype = read_header(header)
    if dtype.hasobject:
        raise ValueError("an .npy member holds Python objects; modelsafe never stores or reads those")
    count = 1
    for dim in shape:
        count *= dim
    arr = np.frombuffer(view, dtype=dtype, count=count, offset=header.tell())
    arr = arr.reshape(shape, order="F" if fortran else "C")
    return arr.copy(order="K") if copy else arr


def _plain(array: Any) -> np.ndarray:
    """A non-object numpy array, converting string objects to unicode and refusing the rest."""
    arr = np.asarray(array)
    if arr.dtype.hasobject:
        flat = arr.ravel()
        if all(isinstance(v, str) for v in flat):
            return arr.astype(str)
        if all(isinstance(v, (bool, np.bool_)) for v in flat):
            return arr.astype(bool)
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in flat):
            return arr.astype(np.int64)
        if all(isinstance(v, (int, float, np.number)) or v is None for v in flat):
            return np.array([np.nan if v is None else v for v in flat], dtype=np.float64).reshape(arr.shape)
        kinds = sorted({type(v).__name__ for v in flat})
        raise SaveError(
            f"Cannot store data with Python objects of types {kinds} without pickle. "
            "Convert the sample (or the model's outputs) to numbers or strings, e.g. np.asarray(x, dtype=float).",
            types=kinds,
        )
    return arr


def _tensor_to_numpy(x: Any) -> np.ndarray | None:
    for attr in ("detach",):
        if hasattr(x, attr) and hasattr(x, "cpu") and hasattr(x, "numpy"):
            return x.detach().cpu().numpy()
    if type(x).__module__.startswith(("tensorflow", "keras")) and hasattr(x, "numpy"):
        return np.asarray(x.numpy())
    return None


def describe_kind(x: Any) -> str:
    """The container kind of ``x``: ndarray, dataframe, series, texts, list, dict, tensor."""
    module = type(x).__module__
    if module.startswith("pandas"):
        name = type(x).__name__
        if name == "DataFrame":
            return "dataframe"
        if name == "Series":
            return "series"
    if isinstance(x, np.ndarray):
        return "ndarray"
    if isinstance(x, dict):
        return "dict"
    if isinstance(x, (list, tuple)):
        return "texts" if x and all(isinstance(v, str) for v in x) else "list"
    if _tensor_to_numpy(x) is not None:
        return "tensor"
    return "ndarray"


def encode(x: Any, write: ArrayWriter, name: str) -> dict[str, Any]:
    """Store ``x`` through ``write(member_name, array)``; return its JSON description."""
    kind = describe_kind(x)
    if kind == "dataframe":
        columns = []
        for i, col in enumerate(x.columns):
            columns.append(_encode_column(x[col], write, f"{name}.c{i}", col))
        return {"kind": kind, "columns": columns, "index": None}
    if kind == "series":
        return {"kind": kind, "column": _encode_column(x, write, f"{name}.s", x.name)}
    if kind == "dict":
        return {"kind": kind, "items": {str(k): encode(v, write, f"{name}.{i}") for i, (k, v) in enumerate(x.items())}}
    if kind == "tensor":
        arr = _tensor_to_numpy(x)
        return {"kind": kind, "framework": type(x).__module__.split(".")[0],
                "member": write(f"{name}.npy", _plain(arr))}
    arr = _plain(x)
    return {"kind": kind, "member": write(f"{name}.npy", arr)}


def _encode_column(series: Any, write: ArrayWriter, name: str, label: Any) -> dict[str, Any]:
    dtype = str(series.dtype)
    entry: dict[str, Any] = {"name": _label(label), "dtype": dtype}
    if dtype == "category":
        entry["categories"] = encode(np.asarray(series.cat.categories), write, f"{name}.cats")
        entry["ordered"] = bool(series.cat.ordered)
        entry["member"] = write(f"{name}.npy", np.asarray(series.cat.codes))
        return entry
    values = series.to_numpy()
    if values.dtype.kind == "M":
        entry["member"] = write(f"{name}.npy", values.astype("datetime64[ns]"))
        return entry
    if values.dtype.hasobject or dtype in ("string", "str"):
        mask = series.isna().to_numpy()
        filled = np.where(mask, "", values.astype(object)).astype(str)
        entry["member"] = write(f"{name}.npy", filled)
        if mask.any():
            entry["na"] = write(f"{name}.na.npy", mask)
        return entry
    entry["member"] = write(f"{name}.npy", np.asarray(values))
    return entry


def _label(label: Any) -> Any:
    if isinstance(label, (str, int, float, bool)) or label is None:
        return label
    return str(label)


def decode(spec: dict[str, Any], read: ArrayReader) -> Any:
    """Rebuild data described by ``spec`` from arrays returned by ``read(member)``."""
    kind = spec["kind"]
    if kind == "dataframe":
        import pandas as pd

        data = {col["name"]: _decode_column(col, read) for col in spec["columns"]}
        return pd.DataFrame(data, columns=[col["name"] for col in spec["columns"]])
    if kind == "series":
        import pandas as pd

        col = spec["column"]
        return pd.Series(_decode_column(col, read), name=col["name"])
    if kind == "dict":
        return {k: decode(v, read) for k, v in spec["items"].items()}
    arr = read(spec["member"])
    if kind == "texts":
        return [str(v) for v in arr.tolist()]
    if kind == "list":
        return arr.tolist() if arr.ndim else arr.item()
    if kind == "tensor" and spec.get("framework") == "torch":
        import torch

        return torch.from_numpy(np.ascontiguousarray(arr))
    return arr


def _decode_column(col: dict[str, Any], read: ArrayReader) -> Any:
    values = read(col["member"])
    dtype = col["dtype"]
    if dtype == "category":
        import pandas as pd

        categories = decode(col["categories"], read)
        return pd.Categorical.from_codes(values, categories=categories, ordered=col.get("ordered", False))
    if "na" in col:
        import pandas as pd

        obj = values.astype(object)
        obj[read(col["na"])] = None
        return pd.array(obj, dtype=dtype) if dtype not in ("object",) else obj
    if values.dtype.kind == "U":
        import pandas as pd

        return pd.array(values.astype(object), dtype=dtype) if dtype != "object" else values.astype(object)
    if values.dtype.kind == "M" and dtype != str(values.dtype):
        import pandas as pd

        return pd.Series(values).astype(dtype)
    return values


def as_arrays(outputs: Any) -> np.ndarray:
    """Model outputs as one plain numpy array (for comparison)."""
    arr = _tensor_to_numpy(outputs)
    if arr is not None:
        return arr
    if type(outputs).__module__.startswith("pandas"):
        return _plain(outputs.to_numpy())
    if hasattr(outputs, "toarray") and type(outputs).__module__.startswith("scipy"):
        return np.asarray(outputs.toarray())
    return _plain(outputs)
