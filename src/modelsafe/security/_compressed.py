"""Streaming decompression for the compressed wrappers joblib writes (and gzip'd pickles).

Each reader decompresses forward only, in bounded memory, and never seeks (seeking a
compressed stream means decompressing it again from the start). Output beyond
:data:`MAX_EXPANSION` times the compressed size (plus a floor) stops the read, so a
decompression bomb ends as a finding instead of filling memory or time.
"""

from __future__ import annotations

import importlib.util
import io
import zlib
from typing import Any, BinaryIO

#: (prefix, name). Order matters: longer, more specific prefixes first.
PREFIXES: tuple[tuple[bytes, str], ...] = (
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x04\x22\x4d\x18", "lz4"),
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bz2"),
    (b"\x5d\x00\x00", "lzma"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)
ZLIB_HEADERS = (b"\x78\x01", b"\x78\x5e", b"\x78\x9c", b"\x78\xda")
#: Decompressed output may be at most this many times the input size...
MAX_EXPANSION = 2000
#: ...or this many bytes, whichever is larger.
MIN_ALLOWANCE = 1 << 30


class ExpansionLimit(Exception):
    """Decompressed output went past the bomb limit."""


def compression_of(head: bytes) -> str | None:
    """The compression a file starting with ``head`` uses, or None."""
    for prefix, name in PREFIXES:
        if head.startswith(prefix):
            return name
    if head[:2] in ZLIB_HEADERS:
        return "zlib"
    return None


def available(kind: str) -> bool:
    """Whether this Python can decompress ``kind`` (lz4 and zstd need optional packages)."""
    if kind == "lz4":
        return importlib.util.find_spec("lz4") is not None
    if kind == "zstd":
        return False
    return True


class _Zlib(io.RawIOBase):
    """A raw zlib stream (joblib's ``compress=('zlib', n)``), decompressed forward."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._z = zlib.decompressobj()
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        want = len(b)
        while not self._pending:
            if self._z.eof:
                return 0
            tail = self._z.unconsumed_tail
            data = tail if tail else self._raw.read(1 << 16)
            if not data:
                raise EOFError("compressed stream ends before its end marker")
            self._pending = self._z.decompress(data, max(want, 1 << 16))
        n = min(want, len(self._pending))
        b[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


class Decompressed(io.RawIOBase):
    """Forward-only decompressed view of a file, with a size limit; ``tell`` but no ``seek``."""

    def __init__(self, raw: BinaryIO, kind: str, compressed_size: int) -> None:
        self.kind = kind
        self._inner = _open(raw, kind)
        self._limit = max(MIN_ALLOWANCE, compressed_size * MAX_EXPANSION)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return self._pos

    def readinto(self, b: Any) -> int:
        try:
            data = self._inner.read(len(b))
        except Exception as exc:  # noqa: BLE001 - zlib.error, OSError, EOFError, lzma.LZMAError, lz4's errors
            raise EOFError(f"{self.kind} stream is corrupt or truncated ({exc})") from exc
        n = len(data)
        b[:n] = data
        self._pos += n
        if self._pos > self._limit:
            raise ExpansionLimit(f"{self.kind} data expands past {self._limit} bytes")
        return n

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        buf = bytearray(size)
        n = self.readinto(buf)
        return bytes(buf[:n])

    def readline(self, size: int | None = -1) -> bytes:
        out = bytearray()
        while size is None or size < 0 or len(out) < size:
            ch = self.read(1)
            if not ch:
                break
            out += ch
            if ch == b"\n":
                break
        return bytes(out)


def _open(raw: BinaryIO, kind: str) -> Any:
    if kind == "zlib":
        return io.BufferedReader(_Zlib(raw), 1 << 16)
    if kind == "gzip":
        import gzip

        return gzip.GzipFile(fileobj=raw, mode="rb")
    if kind == "bz2":
        import bz2

        return bz2.BZ2File(raw, "rb")
    if kind in ("xz", "lzma"):
        import lzma

        return lzma.LZMAFile(raw, "rb", format=lzma.FORMAT_XZ if kind == "xz" else lzma.FORMAT_ALONE)
    if kind == "lz4":
        import lz4.frame  # optional: only when installed

        return lz4.frame.LZ4FrameFile(raw, "rb")
    raise ValueError(f"no decompressor for {kind}")
