"""A bounded window over a byte stream, for the opcode reader (:mod:`._opcodes`).

The window holds at most ``CHUNK + WINDOW`` bytes of a file. Payloads are skipped
with ``seek`` when the file allows it, or read and dropped chunk by chunk when it does
not (a decompressing stream), so memory stays bounded whatever the stream's size.
"""

from __future__ import annotations

import io
from typing import Any, BinaryIO

CHUNK = 1 << 20
#: In streaming mode the window always holds this much beyond the current opcode.
WINDOW = 1 << 16


class Truncated(Exception):
    """The stream ended where more bytes were needed."""


class Window:
    """A window over a file (or the whole buffer) with refill and skip."""

    def __init__(self, source: bytes | bytearray | memoryview | BinaryIO) -> None:
        if isinstance(source, (bytes, bytearray, memoryview)):
            self.buf = source if isinstance(source, bytes) else bytes(source)
            self.file: Any = None
            self.soft_end = len(self.buf)
        else:
            self.file = source
            self.buf = source.read(CHUNK + WINDOW)
            self.soft_end = self._soft_end()
        self.base = 0

    def _soft_end(self) -> int:
        return len(self.buf) - WINDOW if len(self.buf) >= CHUNK else len(self.buf)

    def refill(self, pos: int) -> int:
        """Slide the window so it starts at ``pos``; return the new position (0)."""
        if self.file is None:
            return pos
        rest = self.buf[pos:]
        self.base += pos
        self.buf = rest + self.file.read(CHUNK)
        self.soft_end = self._soft_end()
        return 0

    def skip(self, pos: int, n: int) -> int:
        """Skip ``n`` payload bytes from ``pos``; return the new position."""
        if pos + n <= len(self.buf):
            return pos + n
        if self.file is None:
            raise Truncated
        n -= len(self.buf) - pos
        self.base += len(self.buf)
        try:
            here = self.file.tell()
            size = self.file.seek(0, io.SEEK_END)
            if here + n > size:
                raise Truncated
            self.file.seek(here + n)
        except (AttributeError, OSError, io.UnsupportedOperation):
            left = n
            while left:
                chunk = self.file.read(min(left, CHUNK))
                if not chunk:
                    raise Truncated from None
                left -= len(chunk)
        self.base += n
        self.buf = self.file.read(CHUNK + WINDOW)
        self.soft_end = self._soft_end()
        return 0

    def take(self, pos: int, n: int, keep: int) -> tuple[bytes, int]:
        """The first ``keep`` bytes of the ``n``-byte payload at ``pos``, and the position after it."""
        if pos + n <= len(self.buf):
            return self.buf[pos : pos + min(n, keep)], pos + n
        if self.file is None:
            raise Truncated
        head = self.buf[pos : pos + keep]
        if len(head) < keep:
            head += self.file.read(min(keep, n) - len(head))
            if len(head) < min(keep, n):
                raise Truncated
        read = max(len(self.buf) - pos, len(head))
        # The window's bytes after ``pos`` are consumed; so are the extra bytes read into head.
        self.base += pos + read
        self.buf, self.soft_end = b"", 0
        return head, self.skip(0, n - read)

    def settle(self, pos: int) -> int:
        """Refill if ``pos`` is near the window's end; return the (possibly new) position."""
        if pos >= self.soft_end:
            return self.refill(pos)
        return pos

    def give_back(self, pos: int) -> None:
        """Leave the file positioned at ``pos`` (the bytes after the last opcode read)."""
        if self.file is not None and pos < len(self.buf):
            try:
                self.file.seek(self.file.tell() - (len(self.buf) - pos))
            except (AttributeError, OSError, io.UnsupportedOperation):
                pass


class Cursor:
    """What a value-mode hook may do at the reader's position: read a few bytes, skip
    raw data, or read a nested pickle stream (whose summary the reader merges)."""

    def __init__(self, window: Window, pos: int, nested: Any, frame_end: int | None = None) -> None:
        self.window = window
        self.pos = pos
        self._nested = nested
        self._frame_end = frame_end
        self.streams: list[Any] = []
        #: Whether the hook read, skipped or nested anything (the reader then continues at ``pos``).
        self.used = False

    @property
    def offset(self) -> int:
        """Absolute byte offset of the cursor in the stream."""
        return self.window.base + self.pos

    def _use(self) -> None:
        if not self.used and self._frame_end is not None and self.offset < self._frame_end:
            raise ValueError(f"raw data at byte {self.offset} lies inside the frame that ends at byte "
                             f"{self._frame_end}: unpicklers read such data after the frame, so the stream is not read")
        self.used = True

    def read(self, n: int) -> bytes:
        """Read ``n`` (a few) bytes."""
        self._use()
        if self.pos + n > len(self.window.buf):
            self.pos = self.window.refill(self.pos)
        data = self.window.buf[self.pos : self.pos + n]
        if len(data) < n:
            raise Truncated
        self.pos += n
        return data

    def skip(self, n: int) -> None:
        """Skip ``n`` bytes of raw data."""
        if n < 0:
            raise ValueError(f"negative raw data length {n}")
        self._use()
        self.pos = self.window.skip(self.pos, n)

    def nested_stream(self) -> Any:
        """Read the pickle stream that starts here; return its summary."""
        self._use()
        summary, self.pos = self._nested(self.pos)
        self.streams.append(summary)
        return summary
