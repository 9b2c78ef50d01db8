"""A streaming, symbolic reader of pickle opcodes. It never imports or executes anything.

A small model of the pickle machine tracks what matters for safety: strings (to resolve
``STACK_GLOBAL``), globals, marks, the memo, frames, and each container's expanded size
(:mod:`._bounds`). Each global is recorded with whether unpickling *invokes* it
(``REDUCE``, ``NEWOBJ(_EX)``, ``INST``, ``OBJ``, ``BUILD`` on it, or a container opcode
calling its method) or only references it. Large payloads are skipped in chunks (bounded
memory). A stream that ends early, has an unknown opcode, breaks CPython's framing
rules, exceeds a denial-of-service bound or cannot be modelled is not ``complete``.

In *value mode* (``raw_data=`` given) the reader also tracks small values (see
:mod:`._values`) and calls ``raw_data(obj, cursor)`` after each ``BUILD`` of an object
built from a named global, so formats that interleave raw bytes with opcodes (joblib)
can skip them or read a nested stream through the :class:`Cursor`. With
``embedded=True`` it collects the bytes and text values that start like a pickle.
"""

from __future__ import annotations

from typing import BinaryIO, Callable

from modelsafe.security._bounds import (
    EMBEDDED_FIRST, EMBEDDED_MIN, MAX_EMBEDDED, MAX_MEMO, Box, LimitExceeded, boxed as built, embedded_kind,
    frame_in_frame, grow as grown, memo_over, stop_problem, straddle, weight)
from modelsafe.security._opcode_table import (
    A_BUILD, A_BYTES, A_CONST, A_DICT, A_DUP, A_EMPTY, A_EMPTY_DICT, A_EXT, A_FRAME, A_FROM_MARK,
    A_FROM_TOP, A_GENERIC, A_GET, A_GLOBAL, A_INST, A_INT, A_KEEP, A_MARK, A_MEMOIZE, A_NEWOBJ,
    A_NEWOBJ_EX, A_OBJ, A_PERSID, A_POP_MARK, A_PROTO, A_PUT, A_REDUCE, A_SETITEMS, A_STACK_GLOBAL,
    A_STOP, A_STRING, ANY, CONSTS, FIXED, LEGACY_STRINGS, LINE, LINE2, MARK, NAMES, OPS, TUPLE_CODES, VALUE_OPS, pop_to_mark)
from modelsafe.security._fast_reader import fast_summary
from modelsafe.security._summary import Embedded, Found, GlobalRef, PickleSummary, int_arg
from modelsafe.security._values import UNKNOWN, TrackedDict, TrackedObject, legacy_string, make_tuple, text
from modelsafe.security._window import Cursor, Truncated, Window

__all__ = ["Embedded", "GlobalRef", "PickleSummary", "RawDataHook", "summarize_pickle"]

#: Payloads larger than this are skipped rather than held.
_KEEP_STRING = 1024
#: Memory bounds: memoized values (estimated bytes), memoized containers, stack depth, nested streams.
_MEMO_BUDGET, _MAX_BOXES, _MAX_STACK, _MAX_NESTING = 48 << 20, 400_000, 8 << 20, 4
#: "Not inside a frame": a frame end no stream reaches.
_NO_FRAME = 1 << 80


class _Global:
    __slots__ = ("module", "name", "offset")

    def __init__(self, module: str, name: str, offset: int) -> None:
        self.module, self.name, self.offset = module, name, offset


#: ``raw_data(obj, cursor)``: called in value mode after each BUILD of a tracked object.
RawDataHook = Callable[[TrackedObject, Cursor], None]


def summarize_pickle(source: bytes | bytearray | memoryview | BinaryIO, *, raw_data: RawDataHook | None = None,
                     embedded: bool = False) -> PickleSummary:
    """Read one pickle's opcodes (from a buffer, or a file's current position) without running it.

    With ``raw_data`` the reader runs in value mode; with ``embedded`` it also collects values
    that look like pickles (see the module docstring); else a buffer is read in C when it can (:mod:`._fast_reader`).
    """
    if raw_data is None and not embedded and (fast := fast_summary(source)) is not None:
        return fast
    src = Window(source)
    summary, pos = _summarize(src, 0, raw_data, 0, embedded)
    src.give_back(pos)
    return summary


def _summarize(src: Window, pos: int, raw_data: RawDataHook | None, depth: int,
               embedded: bool = False) -> tuple[PickleSummary, int]:
    """Read one stream starting at ``pos`` of ``src``; return its summary and the end position."""
    start = src.base + pos
    found = Found()
    problems: list[str] = []
    candidates: list[Embedded] = []
    stack: list = []
    memo: dict[int, object] = {}
    memo_room, boxes_left = _MEMO_BUDGET, _MAX_BOXES
    memo_next = protocol = count = persistent = 0
    complete, exhausted = False, ""
    values = raw_data is not None
    result: object = None
    ops = VALUE_OPS if values else OPS
    fabs = _NO_FRAME  # absolute end of the current frame
    buf = src.buf
    end = lim = len(buf)  # end of the window; lim: the window's or the frame's end, whichever is first
    soft = src.soft_end
    any_, mark = ANY, MARK
    at_pos = second = 0  # the opcode's position, and where its second read starts (both in the window)

    def moved() -> None:
        """Refresh the window's view after it moved or a frame began or ended."""
        nonlocal buf, end, soft, lim
        buf = src.buf
        end = len(buf)
        flim = fabs - src.base
        soft = min(src.soft_end, flim)
        lim = min(end, flim)

    record = found.record

    def call(target: object, what: int, at: int) -> None:
        if isinstance(target, _Global):
            record(target, True)
        else:
            problems.append(f"{NAMES[what]} at byte {at} calls an object computed while unpickling, "
                            "not a named global")

    marks: list[int] = []  # positions of MARKs on the stack (checked before use: streams may be hostile)

    def pop_mark() -> list:
        return pop_to_mark(stack, marks)

    def shift(before: int) -> None:
        """The window moved on from ``before``: keep the opcode's positions, refresh the view."""
        nonlocal at_pos, second
        at_pos -= src.base - before
        second -= src.base - before
        moved()

    def line(p: int) -> tuple[bytes, int]:
        stop = buf.find(b"\n", p)
        if stop < 0:
            before = src.base
            p = src.refill(p)
            shift(before)
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
                if src.base + pos >= fabs:
                    fabs = _NO_FRAME  # the frame's last opcode ended exactly at its end
                if pos >= src.soft_end:
                    pos = src.refill(pos)
                moved()
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
            second = pos
            if kind == FIXED:
                if action >= A_PUT:  # memo keys, PROTO, FRAME and tracked ints need the value
                    arg = buf[pos] if size == 1 else int.from_bytes(buf[pos : pos + size], "little")
                pos += size
            elif kind:
                if kind == LINE:
                    arg, pos = line(pos)
                    if action == A_PUT or action == A_GET:
                        arg = int(arg)  # type: ignore[call-overload]
                    elif embedded and action == A_STRING and embedded_kind(arg.strip(b"'\"")[:4]):  # type: ignore[union-attr]
                        candidates.append(Embedded(src.base + second, len(arg), arg.strip(b"'\"")))  # type: ignore[union-attr,arg-type]
                elif kind == LINE2:
                    first, pos = line(pos)
                    second = pos
                    arg = (first, line(pos)[0])
                    pos = second + len(arg[1]) + 1  # type: ignore[arg-type]
                else:
                    length = int.from_bytes(buf[pos : pos + size], "little", signed=signed)
                    pos += size
                    second = pos
                    if length < 0:
                        problems.append(f"negative length at byte {src.base + at_pos}")
                        break
                    if (embedded and length >= EMBEDDED_MIN and (action == A_STRING or action == A_BYTES)
                            and pos < end and buf[pos] in EMBEDDED_FIRST and embedded_kind(buf[pos : pos + 4])):
                        at_payload, before = src.base + pos, src.base
                        data, pos = src.take(pos, length, MAX_EMBEDDED)
                        shift(before)
                        candidates.append(Embedded(at_payload, length, data))
                        arg = data if length <= _KEEP_STRING else None
                    elif (action == A_STRING or action == A_INT) and length <= _KEEP_STRING:
                        arg = buf[pos : pos + length]
                        pos += length
                        if pos > end:
                            raise Truncated
                    else:
                        before = src.base
                        pos = src.skip(pos, length)
                        shift(before)
            if pos > lim:
                if pos > end:
                    raise Truncated
                base = src.base
                why = straddle(NAMES[code], base + at_pos, fabs, (base + at_pos + 1, base + second), base + pos)
                if why:
                    problems.append(why)
                    break
                fabs = _NO_FRAME  # a read began exactly at the frame's end: everything after is unframed
                moved()

            # Most frequent actions first (memo traffic dominates protocol 4+ streams).
            if action == A_MEMOIZE or action == A_PUT:
                if action == A_MEMOIZE:
                    key, memo_next = memo_next, memo_next + 1
                else:
                    key = arg  # type: ignore[assignment]
                if key >= MAX_MEMO:  # type: ignore[operator]
                    raise memo_over(key)  # type: ignore[arg-type]
                top = stack[-1]
                if isinstance(top, Box):
                    if not boxes_left:
                        raise LimitExceeded(f"it memoizes more than {_MAX_BOXES} containers: too many to check")
                    boxes_left -= 1
                    memo[key] = top  # containers are always kept: their expanded size must stay known
                elif top is not any_ and (memo_room > 0 or isinstance(top, _Global)):
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
                if code in LEGACY_STRINGS and arg is not None:
                    arg = legacy_string(NAMES[code], arg)  # type: ignore[arg-type]
                stack.append(arg if arg is not None and arg is not UNKNOWN else any_)
            elif action == A_KEEP or action == A_SETITEMS:
                if to_mark:
                    items = pop_mark()
                else:
                    items = stack[len(stack) - (pops - 1) :]
                    del stack[len(stack) - (pops - 1) :]
                target = stack[-1]
                if isinstance(target, Box):
                    grown(target, weight(items))
                    if values and isinstance(target, TrackedDict) and action == A_SETITEMS:
                        target.add(items)
                elif isinstance(target, _Global):
                    record(target, True)  # list.extend, set.add, __setitem__ of the global itself
            elif action == A_EMPTY:
                stack.append(Box())
            elif action == A_FROM_MARK or action == A_FROM_TOP:
                if action == A_FROM_MARK:
                    items = pop_mark()
                else:
                    if pops > len(stack):
                        raise ValueError("stack underflow")
                    items = stack[len(stack) - pops :]
                    del stack[len(stack) - pops :]
                w = weight(items)
                stack.append(make_tuple(items) if values and code in TUPLE_CODES and w == len(items) else built(1 + w))
            elif action == A_NEWOBJ or action == A_REDUCE:
                args = stack.pop()
                target = stack.pop()
                call(target, code, src.base + at_pos)
                w = 1 + (args.w if isinstance(args, Box) else 1)
                stack.append(TrackedObject(target.module, target.name, args, w)
                             if values and isinstance(target, _Global) else built(w))
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
                elif isinstance(target, Box):
                    grown(target, state.w if isinstance(state, Box) else 1)
                    if values and isinstance(target, TrackedObject):
                        target.state = state
                        cursor = Cursor(src, pos, nested, fabs if fabs < _NO_FRAME else None)
                        raw_data(target, cursor)  # type: ignore[misc]
                        if cursor.used:
                            pos = cursor.pos
                            fabs = _NO_FRAME  # raw data and nested streams are never framed
                            moved()
                        for inner in cursor.streams:
                            for ref in inner.globals:
                                record(_Global(ref.module, ref.name, ref.offset), ref.invoked)
                            persistent += inner.persistent_ids
                            problems.extend(inner.problems)
                            exhausted = exhausted or inner.exhausted
                        if problems:
                            break
            elif action == A_MARK:
                marks.append(len(stack))
                stack.append(mark)
            elif action == A_GLOBAL or action == A_INST:
                module, qual = (text(x) for x in arg)  # type: ignore[union-attr]
                if module is None or qual is None:
                    raise ValueError(f"{NAMES[code]} names a global that is not UTF-8")
                glob = _Global(module, qual, src.base + at_pos)
                if action == A_INST:
                    record(glob, True)
                    stack.append(built(1 + weight(pop_mark())))
                else:
                    record(glob, False)
                    stack.append(glob)
            elif action == A_NEWOBJ_EX:
                extra = weight(stack[-2:])
                del stack[-2:]
                call(stack.pop(), code, src.base + at_pos)
                stack.append(built(1 + extra))
            elif action == A_OBJ:
                items = pop_mark()
                if not items:
                    raise ValueError("OBJ without a class")
                call(items[0], code, src.base + at_pos)
                stack.append(built(weight(items)))
            elif action == A_BYTES:
                stack.append(any_)
            elif action == A_PROTO:
                protocol = max(protocol, int(arg))  # type: ignore[call-overload]
            elif action == A_FRAME:
                at = src.base + at_pos
                if fabs == _NO_FRAME:
                    fabs = at + 9 + arg  # type: ignore[operator]
                    moved()
                elif at + 9 + arg > fabs:  # type: ignore[operator]  (one that fits changes nothing)
                    problems.append(frame_in_frame(at, fabs))
                    break
            elif action == A_STOP:
                complete = bool(stack) and stack[-1] is not mark  # what CPython's unpicklers require
                if not complete or src.base + pos < fabs < _NO_FRAME:
                    problems.append(stop_problem(src.base + at_pos, fabs if complete else None))
                    complete = False
                result = stack[-1] if complete and values else None
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
                stack.append(int_arg(NAMES[code], arg, UNKNOWN))
            elif action == A_CONST:
                stack.append(CONSTS[NAMES[code]])
            elif action == A_EMPTY_DICT:
                stack.append(TrackedDict())
            elif action == A_DICT:
                tracked = TrackedDict()
                items = pop_mark()
                tracked.add(items)
                grown(tracked, weight(items))
                stack.append(tracked)
    except (Truncated, IndexError) as exc:
        if isinstance(exc, IndexError) and pos < len(buf) and stack == []:
            problems.append(f"malformed stream near byte {src.base + pos}: stack underflow")
        else:
            problems.append(f"stream truncated at byte {src.base + min(pos, len(buf))} (it ends before STOP)")
    except LimitExceeded as exc:
        exhausted = str(exc)
        problems.append(f"the stream was not read past byte {src.base + min(pos, len(buf))}: {exc}")
    except ValueError as exc:
        problems.append(f"malformed stream near byte {src.base + pos}: {exc}")
    end = src.base + min(pos, len(buf))
    refs = found.refs()
    if result is any_ or isinstance(result, Box) and not isinstance(result, (TrackedDict, TrackedObject)):
        result = None  # a container the reader does not model
    summary = PickleSummary(globals=refs, protocol=protocol, complete=complete and not problems,
                            problems=tuple(problems), n_opcodes=count, end_offset=end,
                            persistent_ids=persistent, start_offset=start, value=result,
                            exhausted=exhausted, embedded=tuple(candidates))
    return summary, min(pos, len(buf))
