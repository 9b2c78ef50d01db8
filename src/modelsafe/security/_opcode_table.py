"""The pickle opcodes as the symbolic reader (:mod:`._opcodes`) dispatches on them.

Built once from :mod:`pickletools`: per opcode byte, the reader's action, how its argument
is encoded, and its effect on the stack.
"""

from __future__ import annotations

import pickletools

MARK = object()
ANY = object()

# Argument kinds, decoded by _read_arg.
(_NONE, FIXED, _LEN1, _LEN4, _LEN8, LINE, LINE2) = range(7)
_ARG_KIND: dict[str, tuple[int, int]] = {
    "uint1": (FIXED, 1), "uint2": (FIXED, 2), "int4": (FIXED, 4), "uint4": (FIXED, 4), "uint8": (FIXED, 8),
    "float8": (FIXED, 8), "long1": (_LEN1, 0), "long4": (_LEN4, 0), "string1": (_LEN1, 0),
    "string4": (_LEN4, 0), "bytes1": (_LEN1, 0), "bytes4": (_LEN4, 0), "bytes8": (_LEN8, 0),
    "bytearray8": (_LEN8, 0), "unicodestring1": (_LEN1, 0), "unicodestring4": (_LEN4, 0),
    "unicodestring8": (_LEN8, 0), "stringnl": (LINE, 0), "stringnl_noescape": (LINE, 0),
    "decimalnl_short": (LINE, 0), "decimalnl_long": (LINE, 0), "floatnl": (LINE, 0),
    "unicodestringnl": (LINE, 0), "stringnl_noescape_pair": (LINE2, 0),
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
(A_GENERIC, A_STRING, A_GLOBAL, A_INST, A_STACK_GLOBAL, A_MEMOIZE, A_PUT, A_GET, A_REDUCE,
 A_NEWOBJ, A_NEWOBJ_EX, A_OBJ, A_BUILD, A_EXT, A_PERSID, A_MARK, A_POP_MARK, A_DUP,
 A_KEEP, A_PROTO, A_FRAME, A_STOP,
 # value mode only:
 A_INT, A_CONST, A_EMPTY_DICT, A_DICT, A_SETITEMS,
 # containers (their expanded size is tracked) and bytes payloads:
 A_EMPTY, A_FROM_MARK, A_FROM_TOP, A_BYTES) = range(31)
#: Opcodes that build a container: empty ones, from the items after a MARK, from the top items.
_EMPTY = {"EMPTY_LIST", "EMPTY_DICT", "EMPTY_SET"}
_FROM_MARK = {"LIST", "DICT", "TUPLE", "FROZENSET"}
_FROM_TOP = {"TUPLE1", "TUPLE2", "TUPLE3"}
_BYTES_OPS = {"SHORT_BINBYTES", "BINBYTES", "BINBYTES8", "BYTEARRAY8"}
_ACTIONS = {
    "GLOBAL": A_GLOBAL, "INST": A_INST, "STACK_GLOBAL": A_STACK_GLOBAL, "MEMOIZE": A_MEMOIZE,
    "REDUCE": A_REDUCE, "NEWOBJ": A_NEWOBJ, "NEWOBJ_EX": A_NEWOBJ_EX, "OBJ": A_OBJ, "BUILD": A_BUILD,
    "EXT1": A_EXT, "EXT2": A_EXT, "EXT4": A_EXT, "PERSID": A_PERSID, "BINPERSID": A_PERSID,
    "MARK": A_MARK, "POP_MARK": A_POP_MARK, "DUP": A_DUP, "PROTO": A_PROTO, "FRAME": A_FRAME,
    "STOP": A_STOP, **{n: A_STRING for n in _STRING_OPS}, **{n: A_PUT for n in _MEMO_PUT},
    **{n: A_GET for n in _MEMO_GET}, **{n: A_KEEP for n in _KEEPS_TARGET},
    **{n: A_EMPTY for n in _EMPTY}, **{n: A_FROM_MARK for n in _FROM_MARK},
    **{n: A_FROM_TOP for n in _FROM_TOP}, **{n: A_BYTES for n in _BYTES_OPS},
}
_VALUE_ACTIONS = {
    "BININT": A_INT, "BININT1": A_INT, "BININT2": A_INT, "LONG1": A_INT, "INT": A_INT, "LONG": A_INT,
    "NONE": A_CONST, "NEWTRUE": A_CONST, "NEWFALSE": A_CONST, "EMPTY_TUPLE": A_FROM_TOP,
    "EMPTY_DICT": A_EMPTY_DICT, "DICT": A_DICT, "SETITEM": A_SETITEMS, "SETITEMS": A_SETITEMS,
}
CONSTS = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}
#: String opcodes that are not UTF-8 (CPython decodes them otherwise, see ``_values.legacy_string``).
LEGACY_STRINGS = frozenset(ord(op.code) for op in pickletools.opcodes
                           if op.name in ("STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE"))
#: Opcode bytes that build a tuple (value mode keeps small flat tuples as values).
TUPLE_CODES = frozenset(ord(op.code) for op in pickletools.opcodes if op.name.startswith(("TUPLE", "EMPTY_TUPLE")))
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
        action = _ACTIONS.get(op.name, A_GENERIC)
        if values:
            action = _VALUE_ACTIONS.get(op.name, action)
        ops[byte] = (action, kind, size, op.name in _SIGNED_LEN, to_mark, pops, pushes)
        names[byte] = op.name
    return ops, names


OPS, NAMES = _compile()
VALUE_OPS, _ = _compile(values=True)


def pop_to_mark(stack: list, marks: list[int]) -> list:
    """Pop the items after the topmost MARK, and the MARK (``marks``: where MARKs were pushed)."""
    while marks:
        at = marks.pop()
        if at < len(stack) and stack[at] is MARK:
            items = stack[at + 1 :]
            if MARK not in items:
                del stack[at:]
                return items
            break
    for at in range(len(stack) - 1, -1, -1):  # a mark moved by DUP or memo: search for it
        if stack[at] is MARK:
            items = stack[at + 1 :]
            del stack[at:]
            return items
    raise ValueError("MARK missing")
