"""Typed tensors of the Open Inference Protocol (v2): JSON ``data`` and the binary tensor data extension.

A tensor is ``{"name", "shape", "datatype", "data"}``, its ``data`` flattened in row-major
order, or, under the binary extension, ``"parameters": {"binary_data_size": N}`` with its
``N`` bytes after the JSON header (whose length the ``Inference-Header-Content-Length``
header gives), in the order of the tensors. ``BYTES`` elements are each a 4-byte
little-endian length and the bytes; every other type is its little-endian array.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelsafe.serving.errors import MalformedRequestError

__all__ = ["Tensor", "DATATYPES", "datatype_of", "read_tensors", "tensor_bytes", "tensor_data"]

#: v2 datatype -> numpy dtype (``BYTES``: an object array of ``str`` or ``bytes``).
DATATYPES: dict[str, str] = {
    "BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32", "UINT64": "uint64",
    "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64",
    "FP16": "float16", "FP32": "float32", "FP64": "float64", "BYTES": "object",
}
_BY_DTYPE = {v: k for k, v in DATATYPES.items()}


@dataclass
class Tensor:
    name: str
    datatype: str
    shape: list[int]
    array: np.ndarray


def datatype_of(dtype: Any) -> str:
    """The v2 datatype of a numpy dtype (text, objects, dates as ``BYTES``)."""
    try:
        return _BY_DTYPE.get(np.dtype(dtype).name, "BYTES")
    except TypeError:
        return "BYTES"


def read_tensors(entries: Any, binary: memoryview) -> list[Tensor]:
    """The request's ``inputs``, their data from JSON or from ``binary`` (the bytes after the header)."""
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise _bad("'inputs' must be a non-empty list of tensors ({name, shape, datatype, data})", entries)
    tensors, offset = [], 0
    for entry in entries:
        name, datatype, shape = entry.get("name"), entry.get("datatype"), entry.get("shape")
        if not isinstance(name, str) or datatype not in DATATYPES:
            raise _bad(f"each input needs a 'name' and a 'datatype' among {sorted(DATATYPES)}",
                       {"name": name, "datatype": datatype})
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise _bad(f"input {name!r} needs a 'shape' of non-negative integers", shape)
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        size = (entry.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise _bad(f"input {name!r} says binary_data_size={size!r} but the body has {len(binary) - offset} "
                           "byte(s) of tensor data left", size)
            array = _from_bytes(name, datatype, binary[offset:offset + size], count)
            offset += size
        elif "data" in entry:
            array = _from_json(name, datatype, entry["data"], count)
        else:
            raise _bad(f"input {name!r} has neither 'data' nor parameters.binary_data_size", sorted(entry))
        tensors.append(Tensor(name, datatype, shape, array.reshape(shape)))
    if offset != len(binary):
        raise _bad(f"the body has {len(binary) - offset} byte(s) after the tensors' binary data that no input claims",
                   len(binary))
    return tensors


def _from_json(name: str, datatype: str, data: Any, count: int) -> np.ndarray:
    if datatype == "BYTES":
        array = np.asarray(data, dtype=object).ravel()
        if not all(isinstance(v, (str, bytes)) for v in array):
            raise _bad(f"input {name!r} is BYTES, so its data must be strings", _head(array))
    else:
        try:
            raw = np.asarray(data)
        except ValueError:
            raise _bad(f"input {name!r} has ragged data (lists of different lengths)", _head(data)) from None
        dtype = np.dtype(DATATYPES[datatype])
        if raw.dtype.kind not in "iufb" and raw.size:
            raise _bad(f"input {name!r} is {datatype}, so its data must be numbers (or true/false)", _head(raw))
        if raw.dtype.kind == "f" and dtype.kind in "iub" and not np.all(np.mod(raw, 1) == 0):
            raise _bad(f"input {name!r} is {datatype} but its data has fractions, which it would cut off",
                       _head(raw))
        array = raw.astype(dtype).ravel()
    if array.size != count:
        raise _bad(f"input {name!r} has {array.size} value(s) but its shape holds {count}", array.size)
    return array


def _from_bytes(name: str, datatype: str, chunk: memoryview, count: int) -> np.ndarray:
    if datatype == "BYTES":
        items, at = [], 0
        while at < len(chunk):
            if at + 4 > len(chunk):
                raise _bad(f"input {name!r} has a truncated BYTES element length", at)
            (length,) = struct.unpack_from("<I", chunk, at)
            if at + 4 + length > len(chunk):
                raise _bad(f"input {name!r} has a BYTES element of {length} byte(s) past the end of its data", at)
            items.append(bytes(chunk[at + 4:at + 4 + length]))
            at += 4 + length
        array = np.empty(len(items), dtype=object)
        array[:] = items
    else:
        dtype = np.dtype(DATATYPES[datatype]).newbyteorder("<")
        if len(chunk) != count * dtype.itemsize:
            raise _bad(f"input {name!r} has {len(chunk)} byte(s) of data but {count} {datatype} value(s) take "
                       f"{count * dtype.itemsize}", len(chunk))
        array = np.frombuffer(chunk, dtype=dtype).astype(dtype.newbyteorder("="))
    if array.size != count:
        raise _bad(f"input {name!r} has {array.size} value(s) but its shape holds {count}", array.size)
    return array


def tensor_data(array: np.ndarray) -> list[Any]:
    """A tensor's values flattened for JSON ``data`` (``BYTES`` as text)."""
    from modelsafe.serving.outputs import jsonable

    flat = array.ravel()
    if datatype_of(array.dtype) == "BYTES":
        return [v.decode("utf-8", errors="replace") if isinstance(v, bytes) else jsonable(v) for v in flat.tolist()]
    return jsonable(flat)


def tensor_bytes(array: np.ndarray) -> bytes:
    """A tensor's values under the binary extension."""
    datatype = datatype_of(array.dtype)
    if datatype == "BYTES":
        parts = []
        for value in array.ravel().tolist():
            raw = value if isinstance(value, bytes) else str(value).encode("utf-8")
            parts.append(struct.pack("<I", len(raw)) + raw)
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def _head(value: Any) -> Any:
    text = repr(value.tolist() if isinstance(value, np.ndarray) else value)
    return text if len(text) <= 80 else text[:77] + "..."


def _bad(problem: str, actual: Any) -> MalformedRequestError:
    return MalformedRequestError(
        f"Invalid inference request: {problem}. Received: {_head(actual)}. The server cannot build tensors from it; "
        "see GET /v2/models/NAME for the inputs this model takes.", actual=_head(actual))
