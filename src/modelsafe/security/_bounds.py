"""The limits a pickle stream must respect to be read at all, and CPython's framing rules.

**Denial of service.** A pickle can describe a structure far larger than its file:
memo ``GET``/``DUP`` reuse a container, so a few hundred bytes can nest lists whose
expansion (what ``repr``, ``copy.deepcopy``, JSON or a recursive ``hash`` of nested
tuples walk) has billions of nodes ("billion laughs"); a memo index of 2**31 makes
CPython allocate a memo table of 2**32 pointers. The opcode reader tracks, per
container, its *expanded size* (the node count when every shared reference is
counted again, see :class:`Box`) and the memo indices; a stream past
:data:`MAX_EXPANDED` or :data:`MAX_MEMO` is not read further and is reported as a
denial-of-service stream. A fitted scikit-learn pipeline or a torch checkpoint stays
several orders of magnitude below both (their expansion is about their object count).

**Framing.** Protocol 4 added ``FRAME``: "the next N bytes hold whole opcodes". What
CPython does with a stream whose frames do not match its opcodes depends on the
version and on the file object:

* the pure-Python unpickler (``pickle._Unpickler``, used by joblib) always refused an
  opcode argument that runs past the end of its frame, and a ``FRAME`` that begins
  before the previous frame ended;
* the C unpickler of CPython up to 3.13.14 and 3.14.6 (3.11 and 3.12 included) did not
  check frames: reading from bytes (``pickle.loads``) or from a file with ``peek``
  it reads straight across a frame's end, but reading from a file without ``peek``
  (``io.BytesIO``, which ``torch.load`` uses for ``data.pkl``) it *drops the rest of
  the frame* and takes the argument from the bytes after it, so the same bytes decode
  to other opcodes (CPython gh-154848: a stream that disassembles as one ``BINBYTES``
  can call ``os.system``);
* from CPython 3.13.15 and 3.14.7 the C unpickler refuses such streams like the
  pure-Python one.

modelsafe therefore reads only *canonical* framing, as every pickler writes it, and
refuses the rest on every Python: an argument that straddles a frame's end (a read
that starts exactly at the end is allowed, as every unpickler reads it the same), a
frame that opens inside another one and reaches past it, a stream that stops inside
a frame that goes on, and a frame that claims more bytes than the file has.
"""

from __future__ import annotations

import base64
import binascii

#: Largest expanded size (nodes, shared references counted again) a stream may describe.
MAX_EXPANDED = 1 << 27
#: Largest memo index, and number of memo entries, a stream may use.
MAX_MEMO = 1 << 24
#: Bytes of an embedded pickle candidate that are read and analysed.
MAX_EMBEDDED = 8 << 20
#: Opcodes whose payload the scanner checks for an embedded pickle.
EMBEDDED_MIN = 4

_HEX_HEADS = tuple(f"80{p:02x}".encode() for p in range(2, 6))
#: First bytes of a value that may hold a pickle: raw protocol 2-5, base64 ("gA..."), hex ("80...").
EMBEDDED_FIRST = frozenset(b"\x80g8")


class Box:
    """A container (or an object built by a call) on the reader's stack, with its expanded size.

    The same box sits on the stack and in the memo, so items added after the container
    was memoized (``EMPTY_LIST``, ``MEMOIZE``, ``APPENDS``) count for every later reference.
    """

    __slots__ = ("w",)

    def __init__(self, w: int = 1) -> None:
        self.w = w


class LimitExceeded(Exception):
    """The stream exceeds a denial-of-service bound (the message says which)."""


def weight(items: list) -> int:
    """Expanded size of stack items: one per item, plus what each box holds beyond itself."""
    extra = 0
    for item in items:
        if isinstance(item, Box):
            extra += item.w - 1
    return len(items) + extra


def grow(box: Box, w: int) -> None:
    """Add ``w`` to a box's expanded size (items added to a container, or its state)."""
    box.w += w
    if box.w > MAX_EXPANDED:
        raise over()


def boxed(w: int) -> Box:
    """A new container of expanded size ``w``."""
    if w > MAX_EXPANDED:
        raise over()
    return Box(w)


def over() -> LimitExceeded:
    return LimitExceeded(f"its structure expands to more than {MAX_EXPANDED} objects when shared references are "
                         "followed (a 'billion laughs' pickle)")


def memo_over(key: int) -> LimitExceeded:
    return LimitExceeded(f"it uses memo index {key}, past the limit of {MAX_MEMO} (CPython would allocate a memo "
                         "table for every index below it)")


def straddle(code_name: str, at: int, frame_end: int, starts: tuple[int, ...], end: int) -> str | None:
    """Why an opcode at ``at`` whose reads begin at ``starts`` and end at ``end`` breaks the
    frame that ends at ``frame_end`` (None when a read starts exactly there: allowed)."""
    if frame_end in starts or frame_end >= end:
        return None
    return (f"{code_name} at byte {at} runs past the end of its frame at byte {frame_end} (to byte {end}): "
            "CPython unpicklers disagree on such a stream (up to 3.13.14 the C unpickler reads the bytes after "
            "the frame instead), so it is not read")


def frame_in_frame(at: int, frame_end: int) -> str:
    return (f"FRAME at byte {at} opens inside the frame that ends at byte {frame_end} and reaches past it: "
            "CPython unpicklers disagree on such a stream, so it is not read")


def stop_problem(at: int, frame_end: int | None) -> str:
    if frame_end is None:
        return f"STOP at byte {at} with nothing on the stack to return"
    return (f"STOP at byte {at} inside a frame that goes on to byte {frame_end}: what follows it inside the frame "
            "is read differently by different CPython unpicklers, so the stream is not read")


def embedded_kind(head: bytes) -> str | None:
    """"raw", "base64" or "hex" when ``head`` (the first bytes of a value) starts like a pickle."""
    if len(head) >= 3 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "raw"
    if head[:2] == b"gA" and len(head) >= 4:
        try:
            start = base64.b64decode(head[:4], validate=True)
        except (ValueError, binascii.Error):
            return None
        return "base64" if 2 <= start[1] <= 5 else None
    if head[:4].lower() in _HEX_HEADS:
        return "hex"
    return None


def decode_embedded(data: bytes) -> bytes | None:
    """The pickle bytes an embedded candidate holds (decoded), or None when it does not decode."""
    kind = embedded_kind(data[:4])
    if kind == "raw":
        return data
    text = data.strip()
    try:
        if kind == "base64":
            return base64.b64decode(text[: len(text) - len(text) % 4], validate=True)
        if kind == "hex":
            return binascii.unhexlify(text[: len(text) - len(text) % 2])
    except (ValueError, binascii.Error):
        return None
    return None
