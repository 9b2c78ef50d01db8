"""Small values the opcode reader tracks when a caller needs them (value mode).

Some formats put raw bytes *between* pickle opcodes: joblib writes each array's data
right after the ``BUILD`` of a ``NumpyArrayWrapper``, so a reader must know the
wrapper's shape and dtype to find the next opcode. In value mode the symbolic reader
(:mod:`._opcodes`) keeps ints, constants, short strings, flat tuples, small dicts and
"an object built by calling global G with these args" for such readers. Everything
here is bounded: containers are flat (nested containers become :data:`UNKNOWN`), and
large ones are not tracked at all. Nothing is imported or executed.
"""

from __future__ import annotations

from typing import Any

from modelsafe.security._bounds import Box

#: Tuples longer than this, and dicts with more pairs, are not tracked.
MAX_ITEMS = 32


class _Unknown:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNKNOWN"


#: A value the reader does not model.
UNKNOWN: Any = _Unknown()


class TrackedDict(Box):
    """A dict built by the stream (``EMPTY_DICT`` + ``SETITEM(S)``), flat and small."""

    __slots__ = ("items", "overflow")

    def __init__(self) -> None:
        self.w = 1
        self.items: dict[Any, Any] = {}
        self.overflow = False

    def add(self, pairs: list[Any]) -> None:
        for i in range(0, len(pairs) - 1, 2):
            key = plain_key(pairs[i])
            if key is None or len(self.items) >= MAX_ITEMS:
                self.overflow = True
                continue
            self.items[key] = flat(pairs[i + 1])


class TrackedObject(Box):
    """The result of calling (``REDUCE``/``NEWOBJ``) a named global, with its args and state."""

    __slots__ = ("module", "name", "args", "state")

    def __init__(self, module: str, name: str, args: Any, w: int = 1) -> None:
        self.w = w
        self.module, self.name = module, name
        self.args = args if isinstance(args, tuple) else UNKNOWN
        self.state: Any = None

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"

    def __repr__(self) -> str:
        return f"<{self.qualname}{self.args!r}>"


def text(value: Any) -> str | None:
    """The str a string value stands for (bytes of a UTF-8 string opcode are decoded as CPython does),
    or None when it is not one, or CPython would refuse to decode it."""
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            return None
    return value if isinstance(value, str) else None


def legacy_string(name: str, raw: bytes) -> Any:
    """What CPython's unpickler pushes for a non-UTF-8 string opcode (Python 2 ``str``, protocol 0
    ``unicode``), or UNKNOWN when it would refuse the bytes: ``STRING`` is quoted and escaped,
    ``BINSTRING``/``SHORT_BINSTRING`` are decoded as ASCII (the unpickler's default encoding),
    ``UNICODE`` is raw-unicode-escape."""
    import codecs

    try:
        if name == "UNICODE":
            return raw.decode("raw_unicode_escape")
        if name == "STRING":
            if len(raw) < 2 or raw[:1] != raw[-1:] or raw[:1] not in (b"'", b'"'):
                return UNKNOWN
            raw = codecs.escape_decode(raw[1:-1])[0]
        return raw.decode("ascii")
    except (UnicodeDecodeError, ValueError):
        return UNKNOWN


def plain_key(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, str)):
        return text(value)
    if isinstance(value, (int, bool)) or value is None:
        return value
    return None


def flat(value: Any) -> Any:
    """``value`` if it may sit inside a tracked container, else UNKNOWN (keeps nesting shallow)."""
    if value is None or isinstance(value, (int, float, bool, bytes, str)):
        return value
    if isinstance(value, tuple):
        return value if all(not isinstance(v, (tuple, TrackedDict, TrackedObject)) for v in value) else UNKNOWN
    if isinstance(value, TrackedObject):
        # A dtype-like object: flat args, and a flat (or no) state.
        return value if not isinstance(value.state, TrackedDict) else UNKNOWN
    if hasattr(value, "module") and hasattr(value, "name") and not isinstance(value, TrackedDict):
        return value  # a global reference
    return UNKNOWN


def make_tuple(items: list[Any]) -> Any:
    if len(items) > MAX_ITEMS:
        return UNKNOWN
    return tuple(v if v is None or isinstance(v, (int, float, bool, bytes, str)) else UNKNOWN for v in items)


def state_dict(obj: TrackedObject) -> dict[Any, Any] | None:
    """The object's ``BUILD`` state as a plain dict, or None when it is not a tracked dict."""
    state = obj.state
    if isinstance(state, TrackedDict) and not state.overflow:
        return state.items
    return None
