"""The fast audit of an in-memory pickle stream: CPython's C unpickler with inert stand-ins.

:func:`summarize_buffer` answers the question :func:`._opcodes.summarize_pickle` answers
(which globals does the stream name, and which does it call while unpickling) at the
speed of the C unpickler, for streams that are already in memory (an artifact's
``graph.pkl``). It runs :class:`pickle.Unpickler` with ``find_class`` overridden, the
mechanism the Python documentation gives for restricting globals, so that **every**
global resolves to a fresh inert class that only records what happens to it:

* calling it (``REDUCE``), creating it (``NEWOBJ``, ``NEWOBJ_EX``, ``INST``, ``OBJ``) or
  applying ``BUILD`` to it marks it *invoked*; otherwise it was only *referenced*;
* what a call returns is an inert object that accepts ``BUILD``, ``SETITEMS``,
  ``APPENDS`` and ``ADDITEMS`` and does nothing;
* persistent ids resolve to inert objects; out-of-band buffers to empty bytes (the
  buffers are not read, nor needed: their integrity may still be being checked).

Nothing from the stream is imported or called, and the objects built are only pickle's
own containers (lists, dicts, tuples, strings, bytes, numbers) and these stand-ins.

Anything unusual (a call of a computed object, a malformed or truncated stream, an
operation the stand-ins do not support) stops the replay, and the symbolic reader of
:mod:`._opcodes` reads the stream instead, for its exact report with byte offsets. The
replay therefore never accepts a stream the symbolic reader would refuse for what it
calls; it only answers faster for the streams modelsafe itself writes.
"""

from __future__ import annotations

import io
import itertools
import pickle
from typing import Any

from modelsafe.security._opcodes import GlobalRef, PickleSummary, summarize_pickle


class _Stop(Exception):
    """The replay met something only the symbolic reader reports well."""


class _Inert:
    """What an invoked stand-in returns: accepts the container opcodes, does nothing."""

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, item: Any) -> None:
        pass

    def extend(self, items: Any) -> None:
        pass

    def add(self, item: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise _Stop("a call of an object computed while unpickling")


class _Recorder:
    """Per replay: which globals were named, and which were invoked."""

    def __init__(self) -> None:
        self.found: dict[tuple[str, str], bool] = {}
        self.persistent = 0
        found = self.found

        class _BuildHook:
            # BUILD looks ``__setstate__`` up on its target; on a stand-in (the global itself,
            # since stand-ins have no instances) that invokes the global.
            def __get__(self, instance: Any, owner: type) -> Any:
                def setstate(state: Any) -> None:
                    found[owner._ms_key] = True  # type: ignore[attr-defined]
                return setstate

        class _Meta(type):
            def __call__(cls, *args: Any, **kwargs: Any) -> Any:  # REDUCE, OBJ, INST with arguments
                found[cls._ms_key] = True  # type: ignore[attr-defined]
                return _Inert()

        class _StandIn(metaclass=_Meta):
            __setstate__ = _BuildHook()

            def __new__(cls, *args: Any, **kwargs: Any) -> Any:  # NEWOBJ, NEWOBJ_EX, INST without
                found[cls._ms_key] = True  # type: ignore[attr-defined]
                return _Inert()

        self._meta, self._base = _Meta, _StandIn
        self._standins: dict[tuple[str, str], type] = {}

    def standin(self, module: str, name: str) -> type:
        key = (module, name)
        cls = self._standins.get(key)
        if cls is None:
            cls = self._meta("standin", (self._base,), {"_ms_key": key, "__slots__": ()})
            self._standins[key] = cls
            self.found.setdefault(key, False)
        return cls


class _ReplayUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, recorder: _Recorder) -> None:
        super().__init__(file, buffers=itertools.repeat(b""))
        self._recorder = recorder

    def find_class(self, module: str, name: str) -> Any:
        if not isinstance(module, str) or not isinstance(name, str):
            raise _Stop("a global named by computed values")
        return self._recorder.standin(module, name)

    def persistent_load(self, pid: Any) -> Any:
        self._recorder.persistent += 1
        return _Inert()


def _replay(data: bytes | bytearray | memoryview) -> PickleSummary | None:
    """The summary by inert replay, or None when only the symbolic reader can say."""
    recorder = _Recorder()
    file = io.BytesIO(data)
    try:
        _ReplayUnpickler(file, recorder).load()
    except Exception:  # malformed, hostile or unusual: the symbolic reader reports it exactly
        return None
    view = memoryview(data)
    protocol = view[1] if len(view) > 1 and view[0] == pickle.PROTO[0] else 0
    refs = tuple(GlobalRef(module, name, invoked, 0) for (module, name), invoked in recorder.found.items())
    return PickleSummary(globals=refs, protocol=protocol, complete=True, problems=(), n_opcodes=0,
                         end_offset=file.tell(), persistent_ids=recorder.persistent)


def summarize_buffer(data: bytes | bytearray | memoryview) -> PickleSummary:
    """What an in-memory pickle stream names and calls (see the module docstring).

    Byte offsets and opcode counts are reported only by the symbolic reader, which
    :func:`summarize_pickle` runs whenever the fast replay cannot finish.
    """
    summary = _replay(data)
    return summary if summary is not None else summarize_pickle(data)
