"""A streaming, symbolic reader of pickle opcodes. It never imports or executes anything.

The reader runs a small model of the pickle machine that tracks only what matters
for safety: strings (to resolve ``STACK_GLOBAL``), globals, marks and the memo. Each
global is recorded with whether the stream *invokes* it while unpickling (``REDUCE``,
``NEWOBJ``, ``NEWOBJ_EX``, ``INST``, ``OBJ``, ``BUILD`` applied to it) or only
references it as a value. Large payloads are skipped in chunks, so memory stays
bounded whatever the stream's size. A stream that ends early, has an unknown opcode,
or cannot be modelled is reported as not ``complete``.
"""

from __future__ import annotations

import io
import pickletools
from dataclasses import dataclass
from typing import BinaryIO

#: Payloads larger than this are skipped rather than held.
_KEEP_STRING = 1024
_CHUNK = 1 << 20


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
class PickleSummary:
    """What a pickle stream references, read without running it."""

    globals: tuple[GlobalRef, ...]
    protocol: int
    complete: bool
    problems: tuple[str, ...]
    n_opcodes: int
    end_offset: int
    persistent_ids: int = 0

    def names(self, *, invoked: bool | None = None) -> list[str]:
        return sorted(g.qualname for g in self.globals if invoked is None or g.invoked == invoked)


class _Global:
    __slots__ = ("module", "name", "offset")

    def __init__(self, module: str, name: str, offset: int) -> None:
        self.module, self.name, self.offset = module, name, offset


class _Str(str):
    """A string value on the symbolic stack."""


_MARK = object()
_ANY = object()

# Argument kinds, decoded by _read_arg.
(_NONE, _FIXED, _LEN1, _LEN4, _LEN8, _LINE, _LINE2) = range(7)
_ARG_KIND: dict[str, tuple[int, int]] = {
    "uint1": (_FIXED, 1), "uint2": (_FIXED, 2), "int4": (_FIXED, 4), "uint4": (_FIXED, 4), "uint8": (_FIXED, 8),
    "float8": (_FIXED, 8), "long1": (_LEN1, 0), "long4": (_LEN4, 0), "string1": (_LEN1, 0),
    "string4": (_LEN4, 0), "bytes1": (_LEN1, 0), "bytes4": (_LEN4, 0), "bytes8": (_LEN8, 0),
    "bytearray8": (_LEN8, 0), "unicodestring1": (_LEN1, 0), "unicodestring4": (_LEN4, 0),
    "unicodestring8": (_LEN8, 0), "stringnl": (_LINE, 0), "stringnl_noescape": (_LINE, 0),
    "decimalnl_short": (_LINE, 0), "decimalnl_long": (_LINE, 0), "floatnl": (_LINE, 0),
    "unicodestringnl": (_LINE, 0), "stringnl_noescape_pair": (_LINE2, 0),
}
_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING",
               "SHORT_BINSTRING"}
_MEMO_PUT = {"PUT", "BINPUT", "LONG_BINPUT"}
_MEMO_GET = {"GET", "BINGET", "LONG_BINGET"}
_KEEPS_TARGET = {"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS"}


def _effect(op: pickletools.OpcodeInfo) -> tuple[bool, int, int]:
    """(pops to mark?, extra items popped, items pushed) from pickletools' stack notes."""
    before = op.stack_before
    to_mark = pickletools.markobject in before
    pops = len(before) - (2 if to_mark else 0)
    return to_mark, pops, len(op.stack_after)


class _Truncated(Exception):
    pass


# Actions of the symbolic machine, by opcode byte (dispatch on small ints is fast).
(_A_GENERIC, _A_STRING, _A_GLOBAL, _A_INST, _A_STACK_GLOBAL, _A_MEMOIZE, _A_PUT, _A_GET, _A_REDUCE,
 _A_NEWOBJ, _A_NEWOBJ_EX, _A_OBJ, _A_BUILD, _A_EXT, _A_PERSID, _A_MARK, _A_POP_MARK, _A_DUP,
 _A_KEEP, _A_PROTO, _A_FRAME, _A_STOP) = range(22)
_ACTIONS = {
    "GLOBAL": _A_GLOBAL, "INST": _A_INST, "STACK_GLOBAL": _A_STACK_GLOBAL, "MEMOIZE": _A_MEMOIZE,
    "REDUCE": _A_REDUCE, "NEWOBJ": _A_NEWOBJ, "NEWOBJ_EX": _A_NEWOBJ_EX, "OBJ": _A_OBJ, "BUILD": _A_BUILD,
    "EXT1": _A_EXT, "EXT2": _A_EXT, "EXT4": _A_EXT, "PERSID": _A_PERSID, "BINPERSID": _A_PERSID,
    "MARK": _A_MARK, "POP_MARK": _A_POP_MARK, "DUP": _A_DUP, "PROTO": _A_PROTO, "FRAME": _A_FRAME,
    "STOP": _A_STOP, **{n: _A_STRING for n in _STRING_OPS}, **{n: _A_PUT for n in _MEMO_PUT},
    **{n: _A_GET for n in _MEMO_GET}, **{n: _A_KEEP for n in _KEEPS_TARGET},
}
_SIGNED_LEN = {"BINSTRING", "LONG4"}


def _compile() -> tuple[list, list]:
    """Per opcode byte: (action, arg kind, fixed size / length width, signed, pops-to-mark, pops, pushes)."""
    ops: list = [None] * 256
    names: list = [None] * 256
    for op in pickletools.opcodes:
        kind, size = _ARG_KIND.get(op.arg.name, (_NONE, 0)) if op.arg is not None else (_NONE, 0)
        if kind in (_LEN1, _LEN4, _LEN8):
            size = 1 if kind == _LEN1 else 4 if kind == _LEN4 else 8
        to_mark, pops, pushes = _effect(op)
        byte = ord(op.code.encode("latin-1"))
        ops[byte] = (_ACTIONS.get(op.name, _A_GENERIC), kind, size, op.name in _SIGNED_LEN, to_mark, pops, pushes)
        names[byte] = op.name
    return ops, names


_OPS, _NAMES = _compile()
#: In streaming mode the window always holds this much beyond the current opcode.
_WINDOW = 1 << 16


class _Source:
    """A window over a file (or the whole buffer) with refill and skip."""

    def __init__(self, source: bytes | bytearray | memoryview | BinaryIO) -> None:
        if isinstance(source, (bytes, bytearray, memoryview)):
            self.buf = source if isinstance(source, bytes) else bytes(source)
            self.file = None
            self.soft_end = len(self.buf)
        else:
            self.file = source
            self.buf = source.read(_CHUNK + _WINDOW)
            self.soft_end = self._soft_end()
        self.base = 0

    def _soft_end(self) -> int:
        return len(self.buf) - _WINDOW if len(self.buf) >= _CHUNK else len(self.buf)

    def refill(self, pos: int) -> int:
        """Slide the window so it starts at ``pos``; return the new position (0)."""
        if self.file is None:
            return pos
        rest = self.buf[pos:]
        self.base += pos
        self.buf = rest + self.file.read(_CHUNK)
        self.soft_end = self._soft_end()
        return 0

    def skip(self, pos: int, n: int) -> int:
        """Skip ``n`` payload bytes from ``pos``; return the new position."""
        if pos + n <= len(self.buf):
            return pos + n
        if self.file is None:
            raise _Truncated
        n -= len(self.buf) - pos
        self.base += len(self.buf)
        try:
            here = self.file.tell()
            size = self.file.seek(0, io.SEEK_END)
            if here + n > size:
                raise _Truncated
            self.file.seek(here + n)
        except (AttributeError, OSError, io.UnsupportedOperation):
            left = n
            while left:
                chunk = self.file.read(min(left, _CHUNK))
                if not chunk:
                    raise _Truncated
                left -= len(chunk)
        self.base += n
        self.buf = self.file.read(_CHUNK + _WINDOW)
        self.soft_end = self._soft_end()
        return 0

    def give_back(self, pos: int) -> None:
        if self.file is not None and pos < len(self.buf):
            try:
                self.file.seek(self.file.tell() - (len(self.buf) - pos))
            except (AttributeError, OSError, io.UnsupportedOperation):
                pass


def _text(raw: object) -> str | None:
    if isinstance(raw, (bytes, bytearray)):
        return raw.decode("utf-8", "replace")
    return raw if isinstance(raw, str) else None


def summarize_pickle(source: bytes | bytearray | memoryview | BinaryIO) -> PickleSummary:
    """Read one pickle's opcodes (from a buffer, or a file's current position) without running it."""
    src = _Source(source)
    found: dict[tuple[str, str], list] = {}
    problems: list[str] = []
    stack: list = []
    memo: dict[int, object] = {}
    memo_next = 0
    protocol = 0
    count = 0
    persistent = 0
    complete = False
    ops = _OPS
    buf = src.buf
    pos = 0
    any_, mark = _ANY, _MARK

    def record(glob: _Global, invoked: bool) -> None:
        entry = found.get((glob.module, glob.name))
        if entry is None:
            found[(glob.module, glob.name)] = [glob.offset, invoked]
        elif invoked:
            entry[1] = True

    def call(target: object, what: int, at: int) -> None:
        if isinstance(target, _Global):
            record(target, True)
        else:
            problems.append(f"{_NAMES[what]} at byte {at} calls an object computed while unpickling, "
                            "not a named global")

    def pop_mark() -> list:
        items = []
        while stack:
            item = stack.pop()
            if item is mark:
                return items[::-1]
            items.append(item)
        raise ValueError("MARK missing")

    def line(p: int) -> tuple[bytes, int]:
        nonlocal buf
        end = buf.find(b"\n", p)
        if end < 0:
            p = src.refill(p)
            buf = src.buf
            end = buf.find(b"\n", p)
            if end < 0:
                raise _Truncated
        return buf[p:end], end + 1

    try:
        while True:
            if pos >= src.soft_end:
                pos = src.refill(pos)
                buf = src.buf
            at_pos = pos
            code = buf[pos]
            pos += 1
            spec = ops[code]
            if spec is None:
                problems.append(f"unknown opcode 0x{code:02x} at byte {src.base + at_pos}")
                break
            action, kind, size, signed, to_mark, pops, pushes = spec
            count += 1
            arg: object = None
            if kind == _FIXED:
                if action >= _A_PUT:  # memo keys and PROTO need the value; others skip it
                    arg = int.from_bytes(buf[pos : pos + size], "little")
                pos += size
            elif kind:
                if kind == _LINE:
                    arg, pos = line(pos)
                elif kind == _LINE2:
                    first, pos = line(pos)
                    second, pos = line(pos)
                    arg = (first, second)
                else:
                    length = int.from_bytes(buf[pos : pos + size], "little", signed=signed)
                    pos += size
                    if length < 0:
                        problems.append(f"negative length at byte {src.base + at_pos}")
                        break
                    if action == _A_STRING and length <= _KEEP_STRING:
                        arg = buf[pos : pos + length]
                        pos += length
                        if pos > len(buf):
                            raise _Truncated
                    else:
                        pos = src.skip(pos, length)
                        buf = src.buf
            if pos > len(buf):
                raise _Truncated

            if action == _A_GENERIC:
                if to_mark:
                    pop_mark()
                if pops:
                    if pops > len(stack):
                        raise ValueError("stack underflow")
                    del stack[-pops:]
                if pushes == 1:
                    stack.append(any_)
                elif pushes:
                    stack.extend([any_] * pushes)
            elif action == _A_STRING:
                if isinstance(arg, (bytes, bytearray)) and _NAMES[code] == "STRING":
                    arg = arg.strip()[1:-1]
                stack.append(arg if arg is not None else any_)
            elif action == _A_MEMOIZE or action == _A_PUT:
                if action == _A_MEMOIZE:
                    key, memo_next = memo_next, memo_next + 1
                else:
                    key = int(arg) if not isinstance(arg, bytes) else int(arg)  # type: ignore[arg-type]
                top = stack[-1]
                if top is not any_:
                    memo[key] = top  # strings and globals only: memory stays bounded
                elif memo:
                    memo.pop(key, None)
            elif action == _A_GET:
                stack.append(memo.get(int(arg), any_))  # type: ignore[arg-type]
            elif action == _A_KEEP:
                if to_mark:
                    pop_mark()
                else:
                    del stack[len(stack) - (pops - 1) :]
            elif action == _A_NEWOBJ or action == _A_REDUCE:
                stack.pop()
                call(stack.pop(), code, src.base + at_pos)
                stack.append(any_)
            elif action == _A_STACK_GLOBAL:
                qual, module = _text(stack.pop()), _text(stack.pop())
                if module is None or qual is None:
                    problems.append(f"STACK_GLOBAL at byte {src.base + at_pos} with a module or name "
                                    "computed at run time")
                    stack.append(any_)
                else:
                    glob = _Global(module, qual, src.base + at_pos)
                    record(glob, False)
                    stack.append(glob)
            elif action == _A_BUILD:
                stack.pop()
                target = stack[-1]
                if isinstance(target, _Global):
                    record(target, True)
            elif action == _A_MARK:
                stack.append(mark)
            elif action == _A_GLOBAL or action == _A_INST:
                module, qual = (_text(x) or "" for x in arg)  # type: ignore[union-attr]
                glob = _Global(module, qual, src.base + at_pos)
                if action == _A_INST:
                    pop_mark()
                    record(glob, True)
                    stack.append(any_)
                else:
                    record(glob, False)
                    stack.append(glob)
            elif action == _A_NEWOBJ_EX:
                stack.pop()
                stack.pop()
                call(stack.pop(), code, src.base + at_pos)
                stack.append(any_)
            elif action == _A_OBJ:
                items = pop_mark()
                if not items:
                    raise ValueError("OBJ without a class")
                call(items[0], code, src.base + at_pos)
                stack.append(any_)
            elif action == _A_PROTO:
                protocol = max(protocol, int(arg))  # type: ignore[arg-type]
            elif action == _A_FRAME:
                pass
            elif action == _A_STOP:
                if len(stack) != 1:
                    problems.append(f"STOP at byte {src.base + at_pos} with {len(stack)} items on the stack")
                complete = len(stack) == 1
                break
            elif action == _A_EXT:
                problems.append(f"{_NAMES[code]} extension code at byte {src.base + at_pos}: resolved "
                                "through copyreg's registry, which modelsafe does not trust")
                stack.append(any_)
            elif action == _A_PERSID:
                persistent += 1
                if _NAMES[code] == "BINPERSID":
                    stack.pop()
                stack.append(any_)
            elif action == _A_POP_MARK:
                pop_mark()
            elif action == _A_DUP:
                stack.append(stack[-1])
    except (_Truncated, IndexError) as exc:
        if isinstance(exc, IndexError) and pos < len(buf) and stack == []:
            problems.append(f"malformed stream near byte {src.base + pos}: stack underflow")
        else:
            problems.append(f"stream truncated at byte {src.base + min(pos, len(buf))} (it ends before STOP)")
    except ValueError as exc:
        problems.append(f"malformed stream near byte {src.base + pos}: {exc}")
    end = src.base + min(pos, len(buf))
    src.give_back(pos)
    refs = tuple(GlobalRef(m, n, inv, off) for (m, n), (off, inv) in found.items())
    return PickleSummary(globals=refs, protocol=protocol, complete=complete and not problems,
                         problems=tuple(problems), n_opcodes=count, end_offset=end, persistent_ids=persistent)


def summarize_pickles(fileobj: BinaryIO) -> list[PickleSummary]:
    """Summaries of consecutive pickles in a file, until its end or an incomplete stream."""
    out = []
    while True:
        head = fileobj.read(1)
        if not head:
            return out
        fileobj.seek(-1, io.SEEK_CUR)
        summary = summarize_pickle(fileobj)
        out.append(summary)
        if not summary.complete:
            return out
