"""What the opcode reader (:mod:`._opcodes`) reports about one pickle stream."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GlobalRef:
    """A ``module.name`` the stream resolves, and whether unpickling calls it."""

    module: str
    name: str
    invoked: bool
    offset: int

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass(frozen=True)
class Embedded:
    """A bytes or text value of the stream that starts like a pickle (raw, base64 or hex).

    ``data`` holds at most the first :data:`._bounds.MAX_EMBEDDED` bytes of the value;
    ``length`` is the value's full length.
    """

    offset: int
    length: int
    data: bytes


@dataclass(frozen=True)
class PickleSummary:
    """What a pickle stream references, read without running it."""

    globals: tuple[GlobalRef, ...]
    protocol: int
    complete: bool
    problems: tuple[str, ...]
    n_opcodes: int
    end_offset: int
    persistent_ids: int = 0
    start_offset: int = 0
    #: In value mode: the unpickled result when it is a tracked value (int, str, flat tuple).
    value: object = None
    #: The resource bound the stream exceeded (a denial-of-service stream), or "".
    exhausted: str = ""
    #: Values that look like pickles themselves (collected when the caller asks).
    embedded: tuple[Embedded, ...] = ()

    def names(self, *, invoked: bool | None = None) -> list[str]:
        return sorted(g.qualname for g in self.globals if invoked is None or g.invoked == invoked)


class Found:
    """The globals a stream names: ``(module, name) -> [offset of first use, invoked]``."""

    __slots__ = ("entries",)

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], list] = {}

    def record(self, glob: object, invoked: bool) -> None:
        key = (glob.module, glob.name)  # type: ignore[attr-defined]
        entry = self.entries.get(key)
        if entry is None:
            self.entries[key] = [glob.offset, invoked]  # type: ignore[attr-defined]
        elif invoked:
            entry[1] = True

    def refs(self) -> tuple[GlobalRef, ...]:
        return tuple(GlobalRef(m, n, inv, off) for (m, n), (off, inv) in self.entries.items())


def int_arg(name: str, arg: object, unknown: object) -> object:
    """The Python int an integer opcode pushes (value mode), or ``unknown``."""
    try:
        if name == "BININT":
            return arg - (1 << 32) if arg >= 1 << 31 else arg  # type: ignore[operator]
        if name == "LONG1":
            return int.from_bytes(arg, "little", signed=True) if isinstance(arg, bytes) else unknown
        if name == "INT":
            return {b"00": False, b"01": True}.get(arg) if arg in (b"00", b"01") else int(arg)  # type: ignore[arg-type]
        if name == "LONG":
            return int(bytes(arg).rstrip(b"L"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return unknown
    return arg
