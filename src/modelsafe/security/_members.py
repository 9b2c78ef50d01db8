"""How the scanner addresses and reads a member of a container: its location, and a window of a file."""

from __future__ import annotations

import io
from typing import Any, BinaryIO

__all__ = ["SliceFile", "join"]


def join(parent: str, name: str) -> str:
    """Location of ``name`` inside ``parent`` (nested containers joined with ``!``)."""
    return f"{parent}!{name}" if parent else name


class SliceFile(io.RawIOBase):
    """A read-only, seekable window ``[start, start + size)`` of a seekable file."""

    def __init__(self, raw: BinaryIO, start: int, size: int) -> None:
        self._raw, self._start, self._size, self._pos = raw, start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, b: Any) -> int:
        n = max(0, min(len(b), self._size - self._pos))
        if not n:
            return 0
        self._raw.seek(self._start + self._pos)
        data = self._raw.read(n)
        b[: len(data)] = data
        self._pos += len(data)
        return len(data)
