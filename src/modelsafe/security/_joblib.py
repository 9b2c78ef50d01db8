"""joblib files, read without joblib: audit first, then the restricted unpickler.

joblib pickles each numpy array as a ``joblib.numpy_pickle.NumpyArrayWrapper`` (its
state: subclass, shape, order, dtype, alignment) and writes the array's bytes right
after that object's ``BUILD`` opcode: raw data for plain dtypes (after a one-byte
padding length when the state records an alignment), or a nested pickle stream for
object arrays. Files may be compressed as a whole (zlib, gzip, bz2, xz, lzma, lz4).

:func:`skip_array_data` lets the opcode reader step over those bytes (and read nested
streams) so the whole file is audited. :func:`restricted_load_joblib` then rebuilds
the objects with a pure-Python unpickler whose ``find_class`` is the restricted one,
and whose wrapper stand-in reads arrays with ``numpy.frombuffer``; joblib itself is
never imported and its wrapper class is never resolved.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pickle
import re
from typing import Any, BinaryIO, Collection, Iterator

from modelsafe.errors import FormatError, UntrustedContentError
from modelsafe.security._compressed import Decompressed, available, compression_of
from modelsafe.security._opcodes import PickleSummary, summarize_pickle
from modelsafe.security._values import UNKNOWN, TrackedObject, state_dict, text
from modelsafe.security._window import Cursor

WRAPPER = "joblib.numpy_pickle.NumpyArrayWrapper"
#: Globals joblib's format itself uses; they are replaced by inert stand-ins, never resolved.
FORMAT_GLOBALS = frozenset([WRAPPER])
_DIGITS = re.compile(r"^[<>|=]?[a-zA-Z]+(\d+)")


def _dtype_facts(dtype: Any) -> tuple[int, bool]:
    """(itemsize, has objects) of a dtype the stream builds with ``numpy.dtype(spec, ...)``."""
    if not isinstance(dtype, TrackedObject) or dtype.qualname not in (
            "numpy.dtype", "numpy._core.multiarray.dtype", "numpy.core.multiarray.dtype"):
        raise ValueError("the array wrapper's dtype is not a plain numpy.dtype(...)")
    spec = text(dtype.args[0]) if isinstance(dtype.args, tuple) and dtype.args else None
    if spec is None:
        raise ValueError("the array wrapper's dtype has no type code")
    state = dtype.state if isinstance(dtype.state, tuple) else ()
    flags = state[7] if len(state) > 7 and isinstance(state[7], int) else 0
    hasobject = spec.startswith("O") or bool(flags & 1)
    if hasobject:
        return 8, True
    if len(state) > 5 and isinstance(state[5], int) and state[5] > 0:
        return state[5], False
    match = _DIGITS.match(spec)
    if match is None:
        raise ValueError(f"cannot tell the item size of dtype {spec!r}")
    return int(match.group(1)), False


def _count(shape: Any) -> int:
    if not isinstance(shape, tuple) or any(not isinstance(n, int) or isinstance(n, bool) or n < 0 for n in shape):
        raise ValueError(f"the array wrapper's shape {shape!r} is not a tuple of sizes")
    count = 1
    for n in shape:
        count *= n
    return count


def skip_array_data(obj: TrackedObject, cursor: Cursor) -> None:
    """Value-mode hook: step over the bytes joblib wrote after a wrapper's BUILD."""
    if obj.qualname != WRAPPER:
        return
    state = state_dict(obj)
    if state is None:
        raise ValueError("a NumpyArrayWrapper's state could not be read")
    itemsize, hasobject = _dtype_facts(state.get("dtype"))
    count = _count(state.get("shape"))
    if hasobject:
        cursor.nested_stream()
        return
    align = state.get("numpy_array_alignment_bytes")
    if align is not None and align is not UNKNOWN:
        cursor.skip(cursor.read(1)[0])
    cursor.skip(count * itemsize)


@contextlib.contextmanager
def open_stream(path: str | os.PathLike[str]) -> Iterator[tuple[BinaryIO, str | None]]:
    """The file's pickle stream (decompressed when joblib compressed it) and the compression."""
    import io

    with open(path, "rb") as raw:
        kind = compression_of(raw.read(6))
        raw.seek(0)
        if kind is None:
            yield raw, None
            return
        if not available(kind):
            raise FormatError(
                f"{os.fspath(path)!r} is compressed with {kind}, which this Python cannot read: modelsafe "
                f"cannot check or load it. Install the {kind} package, or decompress the file first.",
                path=os.fspath(path), compression=kind,
            )
        size = os.fstat(raw.fileno()).st_size
        yield io.BufferedReader(Decompressed(raw, kind, size), 1 << 20), kind


def summarize_joblib(stream: BinaryIO) -> PickleSummary:
    """Audit summary of a joblib stream: every opcode, nested stream and raw array skipped."""
    return summarize_pickle(stream, raw_data=skip_array_data)


def without_format_globals(summary: PickleSummary) -> PickleSummary:
    """The summary without joblib's own wrapper global (it is never resolved)."""
    return dataclasses.replace(summary, globals=tuple(g for g in summary.globals if g.qualname not in FORMAT_GLOBALS))


class _Wrapper:
    """Inert stand-in for NumpyArrayWrapper: only holds the state BUILD gives it."""

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise UntrustedContentError("A joblib array wrapper has a malformed state.", globals=[WRAPPER])
        self.state = state


def _read_array(wrapper: _Wrapper, unpickler: Any) -> Any:
    import numpy as np

    state = wrapper.state
    dtype, shape, order = state.get("dtype"), state.get("shape"), state.get("order", "C")
    if not isinstance(dtype, np.dtype) or order not in ("C", "F"):
        raise UntrustedContentError(f"A joblib array wrapper has dtype {dtype!r} and order {order!r}.",
                                    globals=[WRAPPER])
    count = _count(tuple(shape) if isinstance(shape, (tuple, list)) else shape)
    if dtype.hasobject:
        return unpickler.nested().load()
    if state.get("numpy_array_alignment_bytes") is not None:
        unpickler.raw_read(unpickler.raw_read(1)[0])
    data = unpickler.raw_read(count * dtype.itemsize)
    array = np.frombuffer(data, dtype=dtype, count=count).copy()
    array = array.reshape(shape[::-1]).T if order == "F" else array.reshape(shape)
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    subclass = state.get("subclass", np.ndarray)
    if subclass not in (np.ndarray, np.memmap):
        if not (isinstance(subclass, type) and issubclass(subclass, np.ndarray)):
            raise UntrustedContentError(f"A joblib array wrapper names subclass {subclass!r}.", globals=[WRAPPER])
        array = array.view(subclass)
    return array


class _JoblibUnpickler(pickle._Unpickler):  # type: ignore[name-defined,misc]
    """Pure-Python unpickler (so BUILD can be extended) with the restricted find_class."""

    dispatch = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]

    def __init__(self, file: BinaryIO, policy: dict[str, Any]) -> None:
        super().__init__(file)
        self._raw = file
        self._policy = policy

    def find_class(self, module: str, name: str) -> Any:
        from modelsafe.security._unpickler import resolve_global

        if f"{module}.{name}" == WRAPPER:
            return _Wrapper
        return resolve_global(module, name, default=super().find_class, **self._policy)

    def persistent_load(self, pid: Any) -> Any:
        raise UntrustedContentError("The joblib stream uses a persistent id nobody resolves.", globals=[])

    def raw_read(self, n: int) -> bytes:
        data = self._raw.read(n)
        if len(data) != n:
            raise EOFError(f"the file ends inside array data ({len(data)} of {n} bytes)")
        return data

    def nested(self) -> "_JoblibUnpickler":
        return _JoblibUnpickler(self._raw, self._policy)

    def _load_build(self) -> None:
        pickle._Unpickler.load_build(self)  # type: ignore[attr-defined]
        top = self.stack[-1]
        if isinstance(top, _Wrapper):
            self.stack[-1] = _read_array(top, self)

    dispatch[pickle.BUILD[0]] = _load_build


def restricted_load_joblib(path: str | os.PathLike[str], *, trusted: Collection[str] = (),
                           allowed_modules: Collection[str] = ()) -> Any:
    """Audit a joblib file completely, then rebuild it with the restricted unpickler.

    Raises
    ------
    FormatError
        The file is truncated, corrupt, or compressed with something unavailable.
    UntrustedContentError
        It names a global that is neither allowed nor in ``trusted``.

    Examples
    --------
    >>> import joblib, numpy as np
    >>> joblib.dump({"w": np.arange(3.0)}, "/tmp/doc-w.joblib", compress=3)
    ['/tmp/doc-w.joblib']
    >>> restricted_load_joblib("/tmp/doc-w.joblib")["w"]
    array([0., 1., 2.])
    """
    from modelsafe.security._unpickler import audit_pickle

    with open_stream(path) as (stream, _kind):
        try:
            summary = summarize_joblib(stream)
        except EOFError as exc:
            raise FormatError(f"{os.fspath(path)!r} could not be read completely ({exc}). Copy the file "
                              "again from its source.", path=os.fspath(path)) from exc
    audit_pickle(without_format_globals(summary), trusted=trusted, allowed_modules=allowed_modules)
    policy = {"trusted": tuple(trusted), "allowed_modules": tuple(allowed_modules), "resolve": None}
    with open_stream(path) as (stream, _kind):
        try:
            return _JoblibUnpickler(stream, policy).load()
        except (UntrustedContentError, FormatError):
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
            raise FormatError(
                f"{os.fspath(path)!r} passed the safety audit but could not be rebuilt: "
                f"{type(exc).__name__}: {exc}. The library that defines its objects probably changed "
                "since the file was saved; run `modelsafe doctor` on it.",
                path=os.fspath(path),
            ) from exc
