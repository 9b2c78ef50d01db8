"""The isolated worker's wire protocol: messages over a pipe, data as ``.npy``, never pickle.

One message is::

    u32 little-endian length of the header | the header (UTF-8 JSON) | blob 0 | blob 1 | ...

``header["blobs"]`` lists the blobs' lengths. Data (the model's input, its outputs, an
attribute of the model) travels as the sample codec writes it (:mod:`modelsafe.checks.data`):
a JSON description whose arrays are the blobs, each an ``.npy`` array. Numpy arrays,
pandas DataFrames and Series of every dtype the codec stores, lists of texts, dicts and
tuples of arrays cross this way in both directions; an array of Python objects is refused
on both sides (``.npy`` is read without ``allow_pickle``, and the reader refuses object dtypes).

Errors cross as JSON too: the class name, the message and the facts of a
:class:`~modelsafe.errors.ModelsafeError` (rebuilt as the same class on the other side,
looked up by name in :mod:`modelsafe.errors` only), or the message of any other exception,
rebuilt as its nearest built-in base (``ValueError``...).
"""

from __future__ import annotations

import builtins
import io
import json
import re
import struct
import traceback
from collections.abc import Sequence
from typing import Any, BinaryIO

import numpy as np

from modelsafe import errors
from modelsafe._reports import to_jsonable
from modelsafe.checks.data import decode, encode
from modelsafe.errors import IsolatedWorkerError, ModelsafeError, SaveError

__all__ = ["PROTOCOL", "Blob", "error_payload", "pack", "read_message", "rebuild_error", "unpack", "write_message"]

#: The protocol's version: the client and the worker must speak the same one.
PROTOCOL = 1
#: A header larger than this is not a header of this protocol (a stray write on the pipe).
MAX_HEADER = 64 << 20
_LENGTH = struct.Struct("<I")
#: What a blob may be: bytes or an array's memory.
Blob = bytes | bytearray | memoryview
#: Exceptions never rebuilt on the calling side (they would stop the caller itself).
_NEVER_REBUILT = (SystemExit, KeyboardInterrupt, GeneratorExit)


def write_message(stream: BinaryIO, header: dict[str, Any], blobs: Sequence[Blob] = ()) -> None:
    """Write one message (the header with the blobs' lengths, then the blobs) and flush."""
    views = [memoryview(blob).cast("B") for blob in blobs]
    raw = json.dumps({**header, "blobs": [v.nbytes for v in views]}, separators=(",", ":")).encode()
    stream.write(_LENGTH.pack(len(raw)) + raw)
    stream.writelines(views)
    stream.flush()


def read_message(stream: BinaryIO) -> tuple[dict[str, Any], list[memoryview]]:
    """Read one message; EOFError when the other side closed the pipe before a whole one arrived."""
    (length,) = _LENGTH.unpack(_read_exactly(stream, _LENGTH.size))
    if length > MAX_HEADER:
        raise ValueError(f"a message header of {length:,} bytes: not this protocol (at most {MAX_HEADER:,})")
    header = json.loads(bytes(_read_exactly(stream, length)))
    blobs = [_read_exactly(stream, int(size)) for size in header.pop("blobs", ())]
    return header, blobs


def _read_exactly(stream: BinaryIO, size: int) -> memoryview:
    buffer = bytearray(size)
    view = memoryview(buffer)
    done = 0
    while done < size:
        got = stream.readinto(view[done:])  # type: ignore[attr-defined]
        if not got:
            raise EOFError(f"the pipe closed after {done:,} of {size:,} bytes")
        done += got
    return view


def pack(x: Any, blobs: list[Blob]) -> dict[str, Any]:
    """Describe ``x`` with the sample codec; its arrays are appended to ``blobs`` as ``.npy``."""

    def write(name: str, array: np.ndarray) -> str:
        blobs.extend(_npy_parts(array))
        return str(len(blobs) - 2)  # the header's index; the data follows it

    try:
        return encode(x, write, "x")
    except SaveError as exc:
        raise IsolatedWorkerError(
            f"A value of type {type(x).__module__}.{type(x).__qualname__} cannot cross to or from the isolated "
            f"worker: {exc.message} Only data that needs no pickle crosses the process boundary (numpy arrays, "
            "DataFrames, texts, dicts and tuples of arrays). Convert it to one of those.",
            type_name=f"{type(x).__module__}.{type(x).__qualname__}", operation="pack") from None


def unpack(spec: dict[str, Any], blobs: Sequence[memoryview], *, tensors: bool = True) -> Any:
    """Rebuild what :func:`pack` described. ``tensors=False`` gives torch tensors back as numpy arrays."""

    def read(member: str) -> np.ndarray:
        index = int(member)
        return _array(blobs[index], blobs[index + 1])

    return decode(spec if tensors else _without_tensors(spec), read)


def _array(header: memoryview, data: memoryview) -> np.ndarray:
    """One array from its ``.npy`` header and its data, viewed in place (the data is not copied)."""
    shape, fortran, dtype = _header(bytes(header))
    if dtype.hasobject:
        raise ValueError("an .npy blob holds Python objects; modelsafe never sends or reads those")
    count = int(np.prod(shape, dtype=np.int64))
    if count * dtype.itemsize != len(data):
        raise ValueError(f"an .npy blob of {len(data):,} bytes for {count:,} values of {dtype}: truncated or corrupt")
    if count == 0 or dtype.itemsize == 0:
        return np.empty(shape, dtype=dtype, order="F" if fortran else "C")
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")


#: The header of a plain array as numpy writes it: ``{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }``.
_PLAIN_HEADER = re.compile(rb"\{'descr': '([<>|=][A-Za-z]\d*(?:\[[A-Za-z0-9]+\])?)', 'fortran_order': (True|False), "
                           rb"'shape': \(((?:\d+, ?)*\d*)\), \}")


def _header(raw: bytes) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran order, dtype) of an ``.npy`` header.

    numpy's own reader evaluates the header's dict literal (``ast.literal_eval``, about half a
    millisecond); a plain array's header is read here with one regular expression instead, and
    any other header (structured dtypes) by numpy.
    """
    start = 10 if raw[6] == 1 else 12  # magic (6 bytes), version (2), header length (2 or 4)
    found = _PLAIN_HEADER.match(raw, start)
    if raw[:6] == b"\x93NUMPY" and found:
        shape = tuple(int(n) for n in found.group(3).split(b",") if n.strip())
        return shape, found.group(2) == b"True", np.dtype(found.group(1).decode())
    fmt = np.lib.format
    stream = io.BytesIO(raw)
    major, _minor = fmt.read_magic(stream)
    return (fmt.read_array_header_1_0 if major == 1 else fmt.read_array_header_2_0)(stream)


def _npy_parts(array: np.ndarray) -> tuple[bytes, memoryview]:
    """The ``.npy`` header of ``array`` and its data, without copying the data of a contiguous array."""
    fmt = np.lib.format
    if array.dtype.hasobject:  # the codec converts strings; anything else is refused before this
        raise ValueError("an array of Python objects cannot cross the process boundary")
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)
    head = io.BytesIO()
    info = fmt.header_data_from_array_1_0(array)
    try:
        fmt.write_array_header_1_0(head, info)
    except ValueError:  # a header too large for format 1.0 (very many fields)
        head = io.BytesIO()
        fmt.write_array_header_2_0(head, info)
    data = memoryview(array.reshape(-1).view(np.uint8)) if array.size else memoryview(b"")  # any dtype, as bytes
    return head.getvalue(), data


def _without_tensors(spec: Any) -> Any:
    if isinstance(spec, dict):
        kind = "ndarray" if spec.get("kind") == "tensor" else spec.get("kind")
        return {k: (kind if k == "kind" else _without_tensors(v)) for k, v in spec.items()}
    if isinstance(spec, list):
        return [_without_tensors(v) for v in spec]
    return spec


def error_payload(exc: BaseException) -> dict[str, Any]:
    """``exc`` as JSON: its class, message, facts (JSON-able) and built-in bases, and the traceback."""
    cls = type(exc)
    facts = {k: to_jsonable(v) for k, v in vars(exc).items() if k != "message"} if isinstance(exc, ModelsafeError) \
        else {}
    bases = [b.__name__ for b in cls.__mro__ if b.__module__ == "builtins" and issubclass(b, Exception)]
    return {"type": cls.__name__, "module": cls.__module__, "message": str(exc), "facts": facts, "bases": bases,
            "traceback": "".join(traceback.format_exception(exc))[-8000:]}


def rebuild_error(payload: dict[str, Any]) -> BaseException:
    """The exception ``payload`` describes: the same modelsafe error class, or the nearest built-in one.

    Classes are looked up by name in :mod:`modelsafe.errors` and :mod:`builtins` only: a name sent
    by the worker never imports anything.
    """
    name, module, message = str(payload.get("type")), str(payload.get("module")), str(payload.get("message"))
    facts = payload.get("facts") or {}
    if module == "modelsafe.errors" and name in errors.__all__:
        exc: BaseException = getattr(errors, name)(message, **facts)
    else:
        cls = next((c for c in (getattr(builtins, n, None) for n in [name, *payload.get("bases", ())])
                    if isinstance(c, type) and issubclass(c, Exception) and not issubclass(c, _NEVER_REBUILT)),
                   RuntimeError)
        text = message if module == "builtins" else f"{module}.{name}: {message}"
        exc = cls(text)
    exc.remote_traceback = payload.get("traceback", "")  # type: ignore[attr-defined]
    return exc
