"""Storing sample inputs and outputs without pickle.

Data is encoded as a JSON description plus ``.npy`` arrays (never ``allow_pickle``):
numpy arrays, pandas and polars DataFrames and pandas Series (every column dtype, see
:mod:`.columns`), lists of texts, nested lists, dicts of arrays (keyword inputs), tuples
and lists of arrays (positional inputs, each stored on its own, whatever its shape),
and tensors of any framework that offers ``.numpy()``. Object arrays of strings become
fixed-width unicode arrays; anything that would need pickle is refused with a clear
error. :func:`difference` says whether data read back equals what was stored.
"""

from __future__ import annotations

import io
from typing import Any, Callable

import numpy as np

from modelsafe.checks.columns import decode_column, decode_frame, encode_column, encode_frame
from modelsafe.checks.frames import frame_library
from modelsafe.checks.labels import decode_label
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
    try:
        arr = np.asarray(array)
    except ValueError as exc:  # nested lists of different lengths
        raise SaveError(
            f"Cannot store data whose parts have different shapes ({exc}). Pass arrays of one shape, or several "
            "inputs as a tuple of arrays, one per input: sample=(a, b).",
        ) from None
    if arr.dtype.hasobject:
        flat = arr.ravel()
        if all(isinstance(v, str) for v in flat):
            return arr.astype(str)
        if all(isinstance(v, (bool, np.bool_)) for v in flat):
            return arr.astype(bool)
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in flat):
            return arr.astype(np.int64)
        if all(isinstance(v, (int, float, np.number)) or _missing(v) for v in flat):
            return np.array([np.nan if _missing(v) else v for v in flat], dtype=np.float64).reshape(arr.shape)
        kinds = sorted({type(v).__name__ for v in flat})
        raise SaveError(
            f"Cannot store data with Python objects of types {kinds} without pickle. "
            "Convert the sample (or the model's outputs) to numbers or strings, e.g. np.asarray(x, dtype=float).",
            types=kinds,
        )
    return arr


def _missing(value: Any) -> bool:
    """None or pandas' NA (recognised without importing pandas)."""
    return value is None or type(value).__name__ == "NAType"


def _tensor_to_numpy(x: Any) -> np.ndarray | None:
    for attr in ("detach",):
        if hasattr(x, attr) and hasattr(x, "cpu") and hasattr(x, "numpy"):
            return x.detach().cpu().numpy()
    if type(x).__module__.startswith(("tensorflow", "keras")) and hasattr(x, "numpy"):
        return np.asarray(x.numpy())
    return None


def describe_kind(x: Any) -> str:
    """The container kind of ``x``: ndarray, dataframe, series, texts, list, sequence, dict, tensor.

    ``sequence`` is a tuple or list of arrays (positional inputs); ``list`` nested lists of values.
    """
    if frame_library(x) is not None:
        return "dataframe"
    if type(x).__module__.startswith("pandas") and type(x).__name__ == "Series":
        return "series"
    if isinstance(x, np.ndarray):
        return "ndarray"
    if isinstance(x, dict):
        return "dict"
    if isinstance(x, (list, tuple)):
        if x and all(isinstance(v, str) for v in x):
            return "texts"
        return "sequence" if x and all(_array_like(v) for v in x) else "list"
    if _tensor_to_numpy(x) is not None:
        return "tensor"
    return "ndarray"


def _array_like(value: Any) -> bool:
    """An array, tensor or frame (it has a shape), not a scalar."""
    return hasattr(value, "shape") and not isinstance(value, np.generic)


def encode(x: Any, write: ArrayWriter, name: str) -> dict[str, Any]:
    """Store ``x`` through ``write(member_name, array)``; return its JSON description."""
    kind = describe_kind(x)
    if kind == "dataframe":
        return encode_frame(x, write, name, encode)
    if kind == "series":
        return {"kind": kind, "column": encode_column(x, write, f"{name}.s", x.name, encode)}
    if kind == "dict":
        return {"kind": kind, "items": {str(k): encode(v, write, f"{name}.{i}") for i, (k, v) in enumerate(x.items())}}
    if kind == "sequence":
        return {"kind": kind, "container": "tuple" if isinstance(x, tuple) else "list",
                "items": [encode(v, write, f"{name}.{i}") for i, v in enumerate(x)]}
    if kind == "tensor":
        arr = _tensor_to_numpy(x)
        return {"kind": kind, "framework": type(x).__module__.split(".")[0],
                "member": write(f"{name}.npy", _plain(arr))}
    arr = _plain(x)
    return {"kind": kind, "member": write(f"{name}.npy", arr)}


def decode(spec: dict[str, Any], read: ArrayReader) -> Any:
    """Rebuild data described by ``spec`` from arrays returned by ``read(member)``."""
    kind = spec["kind"]
    if kind == "dataframe":
        return decode_frame(spec, read, decode)
    if kind == "series":
        import pandas as pd

        col = spec["column"]
        return pd.Series(decode_column(col, read, decode), name=decode_label(col["name"]))
    if kind == "dict":
        return {k: decode(v, read) for k, v in spec["items"].items()}
    if kind == "sequence":
        items = [decode(v, read) for v in spec["items"]]
        return tuple(items) if spec.get("container") == "tuple" else items
    arr = read(spec["member"])
    if kind == "texts":
        return [str(v) for v in arr.tolist()]
    if kind == "list":
        return arr.tolist() if arr.ndim else arr.item()
    if kind == "tensor" and spec.get("framework") == "torch":
        import torch

        return torch.from_numpy(np.ascontiguousarray(arr))
    return arr


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


def difference(original: Any, decoded: Any, where: str = "the sample") -> str | None:
    """How ``decoded`` (read back after :func:`encode`) differs from ``original``, or None when equal.

    Equal means: the same container types, keys and column names, dtypes, shapes and
    values (NaN equal to NaN). The row index of a frame is not stored and not compared.
    """
    if type(original) is not type(decoded):
        return f"{where} is a {_type(original)} but reads back as a {_type(decoded)}"
    if isinstance(original, dict):
        if list(map(str, original)) != list(decoded):
            return f"{where} has keys {list(original)} but reads back with {list(decoded)}"
        return next((d for k in original if (d := difference(original[k], decoded[str(k)], f"{where}[{k!r}]"))), None)
    if isinstance(original, (list, tuple)):
        if len(original) != len(decoded):
            return f"{where} has {len(original)} items but reads back with {len(decoded)}"
        if describe_kind(original) != "sequence":
            return None if original == decoded else f"{where} reads back with other values"
        return next((d for i, (a, b) in enumerate(zip(original, decoded))
                     if (d := difference(a, b, f"{where}[{i}]"))), None)
    if frame_library(original) is not None or describe_kind(original) == "series":
        return _frame_difference(original, decoded, where)
    a, b = _comparable(original), _comparable(decoded)
    if a.dtype != b.dtype or a.shape != b.shape:
        return f"{where} is {a.dtype} {a.shape} but reads back as {b.dtype} {b.shape}"
    same = np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
    return None if same else f"{where} reads back with other values"


def _frame_difference(original: Any, decoded: Any, where: str) -> str | None:
    if frame_library(original) == "pandas" or describe_kind(original) == "series":
        original = original.reset_index(drop=True)
    names = list(getattr(original, "columns", [getattr(original, "name", None)]))
    back = list(getattr(decoded, "columns", [getattr(decoded, "name", None)]))
    if names != back:
        return f"{where} has columns {names} but reads back with {back}"
    dtypes = [str(d) for d in (original.dtypes if hasattr(original, "columns") else [original.dtype])]
    dtypes_back = [str(d) for d in (decoded.dtypes if hasattr(decoded, "columns") else [decoded.dtype])]
    if dtypes != dtypes_back:
        changed = next(f"{n!r}: {a} -> {b}" for n, a, b in zip(names, dtypes, dtypes_back) if a != b)
        return f"{where} changes dtype when read back (column {changed})"
    try:
        same = bool(original.equals(decoded))
    except Exception:  # noqa: BLE001 - not comparable: treat as different, and replay it
        same = False
    return None if same else f"{where} reads back with other values"


def _comparable(x: Any) -> np.ndarray:
    arr = _tensor_to_numpy(x)
    return np.asarray(x) if arr is None else arr


def _type(x: Any) -> str:
    return f"{type(x).__module__.partition('.')[0]}.{type(x).__qualname__}".removeprefix("builtins.")
