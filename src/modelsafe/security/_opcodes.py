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

from dataclasses import dataclass
from typing import BinaryIO, Callable

from modelsafe.security._opcode_table import (
    A_BUILD, A_CONST, A_DICT, A_DUP, A_EMPTY_DICT, A_EXT, A_FRAME, A_GENERIC, A_GET, A_GLOBAL, A_INST,
    A_INT, A_KEEP, A_MARK, A_MEMOIZE, A_NEWOBJ, A_NEWOBJ_EX, A_OBJ, A_PERSID, A_POP_MARK, A_PROTO,
    A_PUT, A_REDUCE, A_SETITEMS, A_STACK_GLOBAL, A_STOP, A_STRING, A_TUPLE, A_TUPLE_N, ANY, CONSTS,
    FIXED, LINE, LINE2, MARK, NAMES, OPS, VALUE_OPS)
from modelsafe.security._values import UNKNOWN, TrackedDict, TrackedObject, make_tuple, text
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
    ops = VALUE_OPS if values else OPS
    buf = src.buf
    end, soft = len(buf), src.soft_end  # refreshed whenever the window moves
    any_, mark = ANY, MARK

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
            problems.append(f"{NAMES[what]} at byte {at} calls an object computed while unpickling, "
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
            if kind == FIXED:
                if action >= A_PUT:  # memo keys, PROTO and tracked ints need the value; others skip it
                    arg = buf[pos] if size == 1 else int.from_bytes(buf[pos : pos + size], "little")
                pos += size
            elif kind:
                if kind == LINE:
                    arg, pos = line(pos)
                    if action == A_PUT or action == A_GET:
                        arg = int(arg)  # type: ignore[call-overload]
                elif kind == LINE2:
                    first, pos = line(pos)
                    second, pos = line(pos)
                    arg = (first, second)
                else:
                    length = int.from_bytes(buf[pos : pos + size], "little", signed=signed)
                    pos += size
                    if length < 0:
                        problems.append(f"negative length at byte {src.base + at_pos}")
                        break
                    if (action == A_STRING or action == A_INT) and length <= _KEEP_STRING:
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
            if action == A_MEMOIZE or action == A_PUT:
                if action == A_MEMOIZE:
                    key, memo_next = memo_next, memo_next + 1
                else:
                    key = arg  # type: ignore[assignment]
                top = stack[-1]
                if top is not any_ and (memo_room > 0 or isinstance(top, _Global)):
                    memo[key] = top  # strings, globals and (value mode) small values: memory stays bounded
                    memo_room -= len(top) + 90 if isinstance(top, bytes) else 200
                elif memo:
                    memo.pop(key, None)
            elif action == A_GET:
                stack.append(memo.get(arg, any_))  # type: ignore[call-overload]
            elif action == A_GENERIC:
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
            elif action == A_STRING:
                if isinstance(arg, (bytes, bytearray)) and NAMES[code] == "STRING":
                    arg = arg.strip()[1:-1]
                stack.append(arg if arg is not None else any_)
            elif action == A_KEEP:
                if to_mark:
                    pop_mark()
                else:
                    del stack[len(stack) - (pops - 1) :]
            elif action == A_NEWOBJ or action == A_REDUCE:
                args = stack.pop()
                target = stack.pop()
                call(target, code, src.base + at_pos)
                stack.append(TrackedObject(target.module, target.name, args)
                             if values and isinstance(target, _Global) else any_)
            elif action == A_STACK_GLOBAL:
                qual, module = text(stack.pop()), text(stack.pop())
                if module is None or qual is None:
                    problems.append(f"STACK_GLOBAL at byte {src.base + at_pos} with a module or name "
                                    "computed at run time")
                    stack.append(any_)
                else:
                    glob = _Global(module, qual, src.base + at_pos)
                    record(glob, False)
                    stack.append(glob)
            elif action == A_BUILD:
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
            elif action == A_MARK:
                marks.append(len(stack))
                stack.append(mark)
            elif action == A_GLOBAL or action == A_INST:
                module, qual = (text(x) or "" for x in arg)  # type: ignore[union-attr]
                glob = _Global(module, qual, src.base + at_pos)
                if action == A_INST:
                    pop_mark()
                    record(glob, True)
                    stack.append(any_)
                else:
                    record(glob, False)
                    stack.append(glob)
            elif action == A_NEWOBJ_EX:
                stack.pop()
                stack.pop()
                call(stack.pop(), code, src.base + at_pos)
                stack.append(any_)
            elif action == A_OBJ:
                items = pop_mark()
                if not items:
                    raise ValueError("OBJ without a class")
                call(items[0], code, src.base + at_pos)
                stack.append(any_)
            elif action == A_PROTO:
                protocol = max(protocol, int(arg))  # type: ignore[call-overload]
            elif action == A_FRAME:
                pass
            elif action == A_STOP:
                if len(stack) != 1:
                    problems.append(f"STOP at byte {src.base + at_pos} with {len(stack)} items on the stack")
                complete = len(stack) == 1
                result = stack[0] if complete and values else None
                break
            elif action == A_EXT:
                problems.append(f"{NAMES[code]} extension code at byte {src.base + at_pos}: resolved "
                                "through copyreg's registry, which modelsafe does not trust")
                stack.append(any_)
            elif action == A_PERSID:
                persistent += 1
                if NAMES[code] == "BINPERSID":
                    stack.pop()
                stack.append(any_)
            elif action == A_POP_MARK:
                pop_mark()
            elif action == A_DUP:
                stack.append(stack[-1])
            # -- value mode only ---------------------------------------------------------
            elif action == A_INT:
                stack.append(_int_arg(NAMES[code], arg))
            elif action == A_CONST:
                stack.append(CONSTS[NAMES[code]])
            elif action == A_TUPLE_N:
                if pops > len(stack):
                    raise ValueError("stack underflow")
                items = stack[len(stack) - pops :]
                del stack[len(stack) - pops :]
                stack.append(make_tuple(items))
            elif action == A_TUPLE:
                stack.append(make_tuple(pop_mark()))
            elif action == A_EMPTY_DICT:
                stack.append(TrackedDict())
            elif action == A_DICT:
                tracked = TrackedDict()
                tracked.add(pop_mark())
                stack.append(tracked)
            elif action == A_SETITEMS:
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
