"""The C fast path of the opcode reader: ``modelsafe._native.summarize_pickle_fast``.

:func:`._opcodes.summarize_pickle` asks it first for a whole in-memory buffer in default
mode (no ``raw_data`` hook, no embedded-pickle collection). The C reader
(``src/modelsafe/_native_pickle.c``) models exactly what the Python reader does on such a
buffer and answers only when the stream is complete and has no problem; then it returns
the same summary (protocol, opcode count, end offset, and the globals in first-seen order
with their offsets and whether they are called). In every other case (any problem, a
denial-of-service bound, truncation, and whatever the C code leaves to Python: legacy
string opcodes, persistent ids, text memo keys that are not plain digits, the memo budget,
its own lower table caps) it answers None, and the Python reader runs as before and gives
the authoritative summary with its exact messages. A reading is therefore the same with or
without the C module; only its cost differs (a scikit-learn RandomForest(200) stream of 25,000
opcodes: about 25 ms in Python, 0.4 ms in C).

``modelsafe._native`` is optional (installed without a C compiler it is missing): the
Python reader then reads every stream. Set ``MODELSAFE_NATIVE_READER=0`` to always use the
Python reader; the variable is read at every call.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from modelsafe.security._summary import GlobalRef, PickleSummary

__all__ = ["fast_summary"]

#: The variable that turns the C reader off ("0").
ENV = "MODELSAFE_NATIVE_READER"
_UNSET: Any = object()
#: The C function once looked up (None when the module or the function is missing).
_native: Any = _UNSET


def _reader() -> Callable[[Any], Any] | None:
    global _native
    if _native is _UNSET:
        try:
            import modelsafe._native as module
        except ImportError:
            _native = None
        else:
            _native = getattr(module, "summarize_pickle_fast", None)
    return _native


def fast_summary(source: object) -> PickleSummary | None:
    """The summary of the pickle stream at the start of ``source`` read in C, or None when the C
    reader is off, missing, or leaves the stream to the Python reader."""
    if os.environ.get(ENV) == "0":
        return None
    if isinstance(source, memoryview):
        try:
            if not source.c_contiguous:
                return None  # the Python reader copies it in logical order
        except ValueError:  # a released view: the Python reader raises as it always did
            return None
    elif not isinstance(source, (bytes, bytearray)):
        return None
    reader = _reader()
    if reader is None:
        return None
    try:
        result = reader(source)
    except (TypeError, ValueError, BufferError):
        return None
    if result is None:
        return None
    protocol, n_opcodes, end_offset, refs = result
    found = tuple(GlobalRef(module, name, invoked, offset) for module, name, offset, invoked in refs)
    return PickleSummary(globals=found, protocol=protocol, complete=True, problems=(), n_opcodes=n_opcodes,
                         end_offset=end_offset)
