"""A streaming, symbolic reader of pickle opcodes. It never imports or executes anything.

The reader runs a small model of the pickle machine that tracks only what matters
for safety: strings (to resolve ``STACK_GLOBAL``), globals, marks and the memo. Each
global is recorded with whether the stream *invokes* it while unpickling (``REDUCE``,
``NEWOBJ``, ``NEWOBJ_EX``, ``INST``, ``OBJ``, ``BUILD`` applied to it) or only
references it as a value. Large payloads are skipped in chunks, so memory stays
bounded whatever the stream's size. A stream that ends early, has an unknown opcode,
or cannot be modelled is reported as not ``complete``.

In *value mode* (``raw_data=`` given) the reader also tracks small values (see
:mod:`._values`) and calls ``raw_data(obj, cursor)`` after each ``BUILD`` of an object
built from a named global, so formats that interleave raw bytes with opcodes (joblib)
can skip them or read a nested stream through the :class:`Cursor`.
"""

from __future__ import annotations

import pickletools
from dataclasses import dataclass
from typing import BinaryIO, Callable

from modelsafe.security._values import (
    UNKNOWN,
    TrackedDict,
    TrackedObject,
    make_tuple,
    text,
)
from modelsafe.security._window import Cursor, Truncated, Window

#: Payloads larger than this are skipped rather than held.
_KEEP_STRING = 1024
#: Memory bounds: memoized values (estimated bytes), symbolic stack depth, nested streams.
_MEMO_BUDGET = 48 << 20
_MAX_STACK = 8 << 20
_MAX_NESTING = 4


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
    start_offset: int = 0
    #: In value mode: the unpickled result when it is a tracked value (int, str, flat tuple).
    value: object = None

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


# Actions of the symbolic machine, by opcode byte (dispatch on small ints is fast).
(_A_GENERIC, _A_STRING, _A_GLOBAL, _A_INST, _A_STACK_GLOBAL, _A_MEMOIZE, _A_PUT, _A_GET, _A_REDUCE,
 _A_NEWOBJ, _A_NEWOBJ_EX, _A_OBJ, _A_BUILD, _A_EXT, _A_PERSID, _A_MARK, _A_POP_MARK, _A_DUP,
 _A_KEEP, _A_PROTO, _A_FRAME, _A_STOP,
 # value mode only:
 _A_INT, _A_CONST, _A_TUPLE_N, _A_TUPLE, _A_EMPTY_DICT, _A_DICT, _A_SETITEMS) = range(29)
_ACTIONS = {
    "GLOBAL": _A_GLOBAL, "INST": _A_INST, "STACK_GLOBAL": _A_STACK_GLOBAL, "MEMOIZE": _A_MEMOIZE,
    "REDUCE": _A_REDUCE, "NEWOBJ": _A_NEWOBJ, "NEWOBJ_EX": _A_NEWOBJ_EX, "OBJ": _A_OBJ, "BUILD": _A_BUILD,
    "EXT1": _A_EXT, "EXT2": _A_EXT, "EXT4": _A_EXT, "PERSID": _A_PERSID, "BINPERSID": _A_PERSID,
    "MARK": _A_MARK, "POP_MARK": _A_POP_MARK, "DUP": _A_DUP, "PROTO": _A_PROTO, "FRAME": _A_FRAME,
    "STOP": _A_STOP, **{n: _A_STRING for n in _STRING_OPS}, **{n: _A_PUT for n in _MEMO_PUT},
    **{n: _A_GET for n in _MEMO_GET}, **{n: _A_KEEP for n in _KEEPS_TARGET},
}
_VALUE_ACTIONS = {
    "BININT": _A_INT, "BININT1": _A_INT, "BININT2": _A_INT, "LONG1": _A_INT, "INT": _A_INT, "LONG": _A_INT,
    "NONE": _A_CONST, "NEWTRUE": _A_CONST, "NEWFALSE": _A_CONST, "EMPTY_TUPLE": _A_TUPLE_N,
    "TUPLE1": _A_TUPLE_N, "TUPLE2": _A_TUPLE_N, "TUPLE3": _A_TUPLE_N, "TUPLE": _A_TUPLE,
    "EMPTY_DICT": _A_EMPTY_DICT, "DICT": _A_DICT, "SETITEM": _A_SETITEMS, "SETITEMS": _A_SETITEMS,
}
_CONSTS = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}
_SIGNED_LEN = {"BINSTRING", "LONG4"}


def _compile(values: bool = False) -> tuple[list, list]:
    """Per opcode byte: (action, arg kind, fixed size / length width, signed, pops-to-mark, pops, pushes)."""
    ops: list = [None] * 256
    names: list = [None] * 256
    for op in pickletools.opcodes:
        kind, size = _ARG_KIND.get(op.arg.name, (_NONE, 0)) if op.arg is not None else (_NONE, 0)
        if kind in (_LEN1, _LEN4, _LEN8):
            size = 1 if kind == _LEN1 else 4 if kind == _LEN4 else 8
        to_mark, pops, pushes = _effect(op)
        byte = ord(op.code.encode("latin-1"))
        action = _ACTIONS.get(op.name, _A_GENERIC)
        if values:
            action = _VALUE_ACTIONS.get(op.name, action)
        ops[byte] = (action, kind, size, op.name in _SIGNED_LEN, to_mark, pops, pushes)
        names[byte] = op.name
    return ops, names


_OPS, _NAMES = _compile()
_VALUE_OPS, _ = _compile(values=True)
Source = Window  # the name used before the window moved to its own module

#: ``raw_data(obj, cursor)``: called in value mode after each BUILD of a tracked object.
RawDataHook = Callable[[TrackedObject, Cursor], None]


def _int_arg(name: str, arg: object) -> object:
    """The Python int an integer opcode pushes (value mode), or UNKNOWN."""
    try:
        if name == "BININT":
            return arg - (1 << 32) if arg >= 1 << 31 else arg  # type: ignore[operator]
        if name == "LONG1":
            return int.from_bytes(arg, "little", signed=True) if isinstance(arg, bytes) else UNKNOWN
        if name == "INT":
            return {b"00": False, b"01": True}.get(arg) if arg in (b"00", b"01") else int(arg)  # type: ignore[arg-type]
        if name == "LONG":
            return int(bytes(arg).rstrip(b"L"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return UNKNOWN
    return arg


def summarize_pickle(source: bytes | bytearray | memoryview | BinaryIO, *,
                     raw_data: RawDataHook | None = None) -> PickleSummary:
    """Read one pickle's opcodes (from a buffer, or a file's current position) without running it.

    With ``raw_data`` the reader runs in value mode (see the module docstring).
    """
    src = Window(source)
    summary, pos = _summarize(src, 0, raw_data, 0)
    src.give_back(pos)
    return summary


def _summarize(src: Window, pos: int, raw_data: RawDataHook | None, depth: int) -> tuple[PickleSummary, int]:
    """Read one stream starting at ``pos`` of ``src``; return its summary and the end position."""
    start = src.base + pos
    found: dict[tuple[str, str], list] = {}
    problems: list[str] = []
    stack: list = []
    memo: dict[int, object] = {}
    memo_room = _MEMO_BUDGET
    memo_next = 0
    protocol = 0
    count = 0
    persistent = 0
    complete = False
    values = raw_data is not None
    result: object = None
    ops = _VALUE_OPS if values else _OPS
    buf = src.buf
    end, soft = len(buf), src.soft_end  # refreshed whenever the window moves
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

    marks: list[int] = []  # positions of MARKs on the stack (checked before use: streams may be hostile)

    def pop_mark() -> list:
        while marks:
            at = marks.pop()
            if at < len(stack) and stack[at] is mark:
                items = stack[at + 1 :]
                if mark not in items:
                    del stack[at:]
                    return items
                break
        for at in range(len(stack) - 1, -1, -1):  # a mark moved by DUP or memo: search for it
            if stack[at] is mark:
                items = stack[at + 1 :]
                del stack[at:]
                return items
        raise ValueError("MARK missing")

    def line(p: int) -> tuple[bytes, int]:
        nonlocal buf, end, soft
        stop = buf.find(b"\n", p)
        if stop < 0:
            p = src.refill(p)
            buf = src.buf
            end, soft = len(buf), src.soft_end
            stop = buf.find(b"\n", p)
            if stop < 0:
                raise Truncated
        return buf[p:stop], stop + 1

    def nested(at: int) -> tuple[PickleSummary, int]:
        if depth >= _MAX_NESTING:
            raise ValueError(f"pickle streams nested more than {_MAX_NESTING} deep")
        return _summarize(src, at, raw_data, depth + 1)

    try:
        while True:
            if pos >= soft:
                pos = src.refill(pos)
                buf = src.buf
                end, soft = len(buf), src.soft_end
            at_pos = pos
            code = buf[pos]
            pos += 1
            spec = ops[code]
            if spec is None:
                problems.append(f"unknown opcode 0x{code:02x} at byte {src.base + at_pos}")
                break
            action, kind, size, signed, to_mark, pops, pushes = spec
            count += 1
            if not count & 0xFFFF and len(stack) > _MAX_STACK:
                raise ValueError(f"more than {_MAX_STACK} items on the stack; the stream cannot be "
                                 "checked in bounded memory")
            arg: object = None
            if kind == _FIXED:
                if action >= _A_PUT:  # memo keys, PROTO and tracked ints need the value; others skip it
                    arg = buf[pos] if size == 1 else int.from_bytes(buf[pos : pos + size], "little")
                pos += size
            elif kind:
                if kind == _LINE:
                    arg, pos = line(pos)
                    if action == _A_PUT or action == _A_GET:
                        arg = int(arg)  # type: ignore[call-overload]
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
                    if (action == _A_STRING or action == _A_INT) and length <= _KEEP_STRING:
                        arg = buf[pos : pos + length]
                        pos += length
                        if pos > end:
                            raise Truncated
                    else:
                        pos = src.skip(pos, length)
                        buf = src.buf
                        end, soft = len(buf), src.soft_end
            if pos > end:
                raise Truncated

            # Most frequent actions first (memo traffic dominates protocol 4+ streams).
            if action == _A_MEMOIZE or action == _A_PUT:
                if action == _A_MEMOIZE:
                    key, memo_next = memo_next, memo_next + 1
                else:
                    key = arg  # type: ignore[assignment]
                top = stack[-1]
                if top is not any_ and (memo_room > 0 or isinstance(top, _Global)):
                    memo[key] = top  # strings, globals and (value mode) small values: memory stays bounded
                    memo_room -= len(top) + 90 if isinstance(top, bytes) else 200
                elif memo:
                    memo.pop(key, None)
            elif action == _A_GET:
                stack.append(memo.get(arg, any_))  # type: ignore[call-overload]
            elif action == _A_GENERIC:
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
            elif action == _A_KEEP:
                if to_mark:
                    pop_mark()
                else:
                    del stack[len(stack) - (pops - 1) :]
            elif action == _A_NEWOBJ or action == _A_REDUCE:
                args = stack.pop()
                target = stack.pop()
                call(target, code, src.base + at_pos)
                stack.append(TrackedObject(target.module, target.name, args)
                             if values and isinstance(target, _Global) else any_)
            elif action == _A_STACK_GLOBAL:
                qual, module = text(stack.pop()), text(stack.pop())
                if module is None or qual is None:
                    problems.append(f"STACK_GLOBAL at byte {src.base + at_pos} with a module or name "
                                    "computed at run time")
                    stack.append(any_)
                else:
                    glob = _Global(module, qual, src.base + at_pos)
                    record(glob, False)
                    stack.append(glob)
            elif action == _A_BUILD:
                state = stack.pop()
                target = stack[-1]
                if isinstance(target, _Global):
                    record(target, True)
                elif values and isinstance(target, TrackedObject):
                    target.state = state
                    cursor = Cursor(src, pos, nested)
                    raw_data(target, cursor)  # type: ignore[misc]
                    pos, buf = cursor.pos, src.buf
                    end, soft = len(buf), src.soft_end
                    for inner in cursor.streams:
                        for ref in inner.globals:
                            record(_Global(ref.module, ref.name, ref.offset), ref.invoked)
                        persistent += inner.persistent_ids
                        problems.extend(inner.problems)
                    if problems:
                        break
            elif action == _A_MARK:
                marks.append(len(stack))
                stack.append(mark)
            elif action == _A_GLOBAL or action == _A_INST:
                module, qual = (text(x) or "" for x in arg)  # type: ignore[union-attr]
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
                protocol = max(protocol, int(arg))  # type: ignore[call-overload]
            elif action == _A_FRAME:
                pass
            elif action == _A_STOP:
                if len(stack) != 1:
                    problems.append(f"STOP at byte {src.base + at_pos} with {len(stack)} items on the stack")
                complete = len(stack) == 1
                result = stack[0] if complete and values else None
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
            # -- value mode only ---------------------------------------------------------
            elif action == _A_INT:
                stack.append(_int_arg(_NAMES[code], arg))
            elif action == _A_CONST:
                stack.append(_CONSTS[_NAMES[code]])
            elif action == _A_TUPLE_N:
                if pops > len(stack):
                    raise ValueError("stack underflow")
                items = stack[len(stack) - pops :]
                del stack[len(stack) - pops :]
                stack.append(make_tuple(items))
            elif action == _A_TUPLE:
                stack.append(make_tuple(pop_mark()))
            elif action == _A_EMPTY_DICT:
                stack.append(TrackedDict())
            elif action == _A_DICT:
                tracked = TrackedDict()
                tracked.add(pop_mark())
                stack.append(tracked)
            elif action == _A_SETITEMS:
                if to_mark:
                    items = pop_mark()
                else:
                    items = stack[-2:]
                    del stack[-2:]
                target = stack[-1]
                if isinstance(target, TrackedDict):
                    target.add(items)
    except (Truncated, IndexError) as exc:
        if isinstance(exc, IndexError) and pos < len(buf) and stack == []:
            problems.append(f"malformed stream near byte {src.base + pos}: stack underflow")
        else:
            problems.append(f"stream truncated at byte {src.base + min(pos, len(buf))} (it ends before STOP)")
    except ValueError as exc:
        problems.append(f"malformed stream near byte {src.base + pos}: {exc}")
    end = src.base + min(pos, len(buf))
    refs = tuple(GlobalRef(m, n, inv, off) for (m, n), (off, inv) in found.items())
    summary = PickleSummary(globals=refs, protocol=protocol, complete=complete and not problems,
                            problems=tuple(problems), n_opcodes=count, end_offset=end,
                            persistent_ids=persistent, start_offset=start,
                            value=result if result is not any_ else None)
    return summary, min(pos, len(buf))
