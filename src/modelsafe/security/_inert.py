"""The audit of an in-memory pickle stream: the symbolic reader, checked by CPython's own unpickler.

:func:`summarize_buffer` answers which globals a stream names and which it calls while
unpickling. Two readers answer, and they must agree:

1. the symbolic reader (:mod:`._opcodes`) reads the stream first, without building
   anything: it enforces CPython's framing rules and the denial-of-service bounds of
   :mod:`._bounds`, so nothing below ever builds an oversized structure (a "billion
   laughs" of nested tuples would make CPython hash for hours);
2. then CPython's C unpickler *replays* the stream, with ``find_class`` overridden (the
   mechanism the Python documentation gives for restricting globals) so that **every**
   global resolves to a fresh inert class that only records what happens to it:

   * calling it (``REDUCE``), creating it (``NEWOBJ``, ``NEWOBJ_EX``, ``INST``, ``OBJ``)
     or applying ``BUILD`` to it marks it *invoked*; otherwise it was only *referenced*;
   * what a call returns is an inert object that accepts ``BUILD``, ``SETITEMS``,
     ``APPENDS`` and ``ADDITEMS`` and does nothing;
   * a call of an allowlisted constructor that would allocate more than
     :data:`MAX_ALLOCATION` items (``bytearray(10**12)``, ``list(range(10**12))``, a
     numpy array of that shape) is a denial-of-service stream;
   * persistent ids resolve to inert objects; out-of-band buffers to empty bytes.

Nothing from the stream is imported or called. The replay reads the stream exactly as the
restricted unpickler later will (same C unpickler, same file object), so when the two
readers disagree about a global, or about whether it is called, the stream is refused: one
of them misread it. When the replay cannot finish (a call of a computed object, an
operation the stand-ins do not support), the symbolic reader's answer stands.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import math
import pickle
from typing import Any

from modelsafe.security._fast_reader import fast_summary
from modelsafe.security._opcodes import GlobalRef, PickleSummary, summarize_pickle

#: Most items an allowlisted constructor may be asked to allocate while unpickling.
MAX_ALLOCATION = 1 << 30
#: Constructors that materialize an iterable (their size is the iterable's).
_MATERIALIZE = frozenset(f"builtins.{n}" for n in ("list", "tuple", "set", "frozenset", "bytearray", "bytes",
                                                    "sorted")) | {"collections.deque"}
_RECONSTRUCT = frozenset(f"{m}.multiarray._reconstruct" for m in ("numpy.core", "numpy._core"))


class _Stop(Exception):
    """The replay met something only the symbolic reader reports well."""


class _Exhausted(Exception):
    """A call would allocate more than MAX_ALLOCATION items."""


class _Inert:
    """What an invoked stand-in returns: accepts the container opcodes, does nothing.

    ``size`` is the length of the sequence it stands for, when that is known (a ``range``).
    """

    __slots__ = ("size",)

    def __init__(self, size: int = 0) -> None:
        self.size = size

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


def _sized(qualname: str, args: tuple[Any, ...]) -> int:
    """Items a call of ``qualname`` with ``args`` allocates (or, for ``range``, stands for)."""
    first = args[0] if args else None
    if qualname == "builtins.range":
        try:
            return len(range(*args))
        except (TypeError, ValueError, OverflowError):
            return 0
    if qualname in _MATERIALIZE:
        if isinstance(first, _Inert):
            return first.size
        return first if isinstance(first, int) and qualname.endswith(("bytes", "bytearray")) else 0
    if qualname in _RECONSTRUCT and len(args) > 1 and isinstance(args[1], tuple):
        if all(isinstance(n, int) and n >= 0 for n in args[1]):
            return math.prod(args[1])
    return 0


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
                size = _sized(cls._ms_qual, args)  # type: ignore[attr-defined]
                if size > MAX_ALLOCATION:
                    raise _Exhausted(f"it calls {cls._ms_qual} to allocate {size} items, more than the limit of "  # type: ignore[attr-defined]
                                     f"{MAX_ALLOCATION}")
                return _Inert(size if cls._ms_qual == "builtins.range" else 0)  # type: ignore[attr-defined]

        class _StandIn(metaclass=_Meta):
            __setstate__ = _BuildHook()

            def __new__(cls, *args: Any, **kwargs: Any) -> Any:  # NEWOBJ, NEWOBJ_EX, INST without
                found[cls._ms_key] = True  # type: ignore[attr-defined]
                return _Inert()

        self._meta, self._base = _Meta, _StandIn
        self._standins: dict[tuple[str, str], type] = {}

    def standin(self, module: str, name: str) -> type:
        from modelsafe.security._allowlist import canonical

        key = (module, name)
        cls = self._standins.get(key)
        if cls is None:
            qual = ".".join(canonical(module, name))
            cls = self._meta("standin", (self._base,), {"_ms_key": key, "_ms_qual": qual, "__slots__": ()})
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
    """The summary by inert replay, or None when only the symbolic reader can say.

    Run it only on streams the symbolic reader accepted: the replay builds what the stream
    describes (see the module docstring).
    """
    recorder = _Recorder()
    file = io.BytesIO(data)
    view = memoryview(data)
    protocol = view[1] if len(view) > 1 and view[0] == pickle.PROTO[0] else 0
    try:
        _ReplayUnpickler(file, recorder).load()
    except _Exhausted as exc:
        return PickleSummary(globals=(), protocol=protocol, complete=False, problems=(str(exc),), n_opcodes=0,
                             end_offset=file.tell(), exhausted=str(exc))
    except Exception:  # malformed, hostile or unusual: the symbolic reader reports it exactly
        return None
    refs = tuple(GlobalRef(module, name, invoked, 0) for (module, name), invoked in recorder.found.items())
    return PickleSummary(globals=refs, protocol=protocol, complete=True, problems=(), n_opcodes=0,
                         end_offset=file.tell(), persistent_ids=recorder.persistent)


def _kinds(summary: PickleSummary) -> set[tuple[str, bool]]:
    return {(g.qualname, g.invoked) for g in summary.globals}


def summarize_buffer(data: bytes | bytearray | memoryview) -> PickleSummary:
    """What an in-memory pickle stream names and calls, read by both readers (see the module docstring)."""
    summary = summarize_pickle(data)
    if not summary.complete:
        return summary
    replay = _replay(data)
    if replay is None:
        return summary
    if replay.exhausted:
        return dataclasses.replace(summary, complete=False, problems=replay.problems, exhausted=replay.exhausted)
    if _kinds(replay) != _kinds(summary) or replay.persistent_ids != summary.persistent_ids:
        only_c = sorted(_kinds(replay) - _kinds(summary))
        only_reader = sorted(_kinds(summary) - _kinds(replay))
        problem = (f"CPython's unpickler and modelsafe's opcode reader read this stream differently (only CPython: "
                   f"{_shown(only_c)}; only the reader: {_shown(only_reader)}), so it is not trusted")
        return dataclasses.replace(summary, complete=False, problems=(problem,))
    return summary


def summarize_own_stream(data: bytes | bytearray | memoryview) -> PickleSummary:
    """What a stream modelsafe itself has just pickled names and calls (``save`` records it in the manifest):
    one reading, not the two a stream from elsewhere gets (summarize_buffer): the symbolic reader's in C
    (:mod:`._fast_reader`), else CPython's own by the inert replay, else the symbolic reader's in Python.
    Every load still reads the stream with both readers, and refuses it unless they agree."""
    fast = fast_summary(data)
    if fast is not None:
        return fast
    replay = _replay(data)
    return replay if replay is not None and not replay.exhausted else summarize_pickle(data)


def _shown(kinds: list[tuple[str, bool]]) -> str:
    return ", ".join(f"{name} ({'called' if invoked else 'referenced'})" for name, invoked in kinds) or "nothing"
