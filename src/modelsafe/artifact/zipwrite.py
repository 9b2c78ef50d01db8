"""Writing the single-file container: a zip archive of stored (uncompressed) members.

:mod:`zipfile` reads artifacts; writing uses this small writer instead, because a
member's CRC-32 need not be known while its data is written. ``zipfile`` computes the
CRC on the calling thread as data passes through, one ``write`` call per buffer; here a
member's data goes to disk in one ``writev`` of all its buffers, its CRC-32 is computed
beside its SHA-256 on a hashing thread, and the local header is patched in place once
both are known (:meth:`StoredZipWriter.finish`). The central directory is written by
:meth:`StoredZipWriter.close`, as in any zip file (PKWARE APPNOTE 6.3), with the ZIP64
records when a size, an offset or the member count needs them.

Every member's data starts on an :data:`~modelsafe.artifact.reader.ALIGNMENT` boundary (a
private padding extra field fills the gap), so arrays can be memory-mapped.
"""

from __future__ import annotations

import os
import stat
import struct
from dataclasses import dataclass

from modelsafe.artifact.reader import ALIGNMENT

#: Sizes and offsets above this use the ZIP64 fields (zipfile's own, conservative, limit).
ZIP64_LIMIT = (1 << 31) - 1
_PADDING_HEADER_ID = 0xA11E  # private extra-field id, used only for alignment padding
_ZIP64_ID = 0x0001
_DOS_DATE = (0 << 9) | (1 << 5) | 1  # 1980-01-01, the earliest DOS date: artifacts are reproducible
_DOS_TIME = 0
_UTF8_FLAG = 0x0800
_DESCRIPTOR_FLAG = 0x0008
_EXTERNAL_ATTR = (stat.S_IFREG | 0o644) << 16
_UNIX = 3  # "version made by" host system

_LOCAL = struct.Struct("<4s5H3L2H")
_CENTRAL = struct.Struct("<4s6H3L5H2L")
_END = struct.Struct("<4s4H2LH")
_END64 = struct.Struct("<4sQ2H2L4Q")
_LOCATOR64 = struct.Struct("<4sLQL")
_MAX = 0xFFFFFFFF
_MAX16 = 0xFFFF
#: From this many members on, the count is in the ZIP64 end record.
ZIP64_COUNT = _MAX16


@dataclass
class ZipEntry:
    """One member: where its local header is, and (once finished) its size and CRC-32."""

    name: str
    header_offset: int
    zip64: bool  # the local header carries ZIP64 sizes (size unknown or large at start)
    padding: int  # bytes of the alignment extra field
    size: int = 0
    crc: int = 0
    #: Size and CRC-32 follow the data in a data descriptor (a stream that cannot seek back).
    descriptor: bool = False

    @property
    def encoded(self) -> bytes:
        return self.name.encode("utf-8")

    @property
    def flags(self) -> int:
        return (0 if self.name.isascii() else _UTF8_FLAG) | (_DESCRIPTOR_FLAG if self.descriptor else 0)

    def local_header(self) -> bytes:
        name = self.encoded
        extra = b""
        size, crc = (0, 0) if self.descriptor else (self.size, self.crc)
        size32 = size
        if self.zip64:
            extra = struct.pack("<HHQQ", _ZIP64_ID, 16, size, size)
            size32 = _MAX
        extra += _padding(self.padding)
        version = 45 if self.zip64 else 20
        return _LOCAL.pack(b"PK\x03\x04", version, self.flags, 0, _DOS_TIME, _DOS_DATE, crc,
                           size32, size32, len(name), len(extra)) + name + extra

    def data_descriptor(self) -> bytes:
        """The record after the data of a ``descriptor`` entry (ZIP64 sizes when the header has them)."""
        return struct.pack("<4sLQQ" if self.zip64 else "<4sLLL", b"PK\x07\x08", self.crc, self.size, self.size)

    def central_header(self) -> bytes:
        name = self.encoded
        wide = []  # the ZIP64 extra holds, in this order, the fields too large for 32 bits
        size, offset = self.size, self.header_offset
        if size > ZIP64_LIMIT:
            wide += [size, size]
            size = _MAX
        if offset > ZIP64_LIMIT:
            wide.append(offset)
            offset = _MAX
        extra = struct.pack(f"<HH{len(wide)}Q", _ZIP64_ID, 8 * len(wide), *wide) if wide else b""
        version = 45 if wide else 20
        return _CENTRAL.pack(b"PK\x01\x02", (_UNIX << 8) | version, version, self.flags, 0, _DOS_TIME, _DOS_DATE,
                             self.crc, size, size, len(name), len(extra), 0, 0, 0, _EXTERNAL_ATTR,
                             offset) + name + extra


def _padding(total: int) -> bytes:
    return struct.pack("<HH", _PADDING_HEADER_ID, total - 4) + bytes(total - 4) if total else b""


class StoredZipWriter:
    """Appends stored members to an open file descriptor; :meth:`close` writes the directory.

    Data is written at the descriptor's position (:meth:`write`); headers are patched with
    ``pwrite``, which leaves the position alone, so a header can be finished while later
    members are being written.
    """

    #: Entries carry data descriptors (see ZipEntry.descriptor): set by writers that cannot patch headers.
    descriptors = False

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.offset = 0
        self.entries: list[ZipEntry] = []

    def begin(self, name: str, size: int | None) -> ZipEntry:
        """Write the local header of a new member (its CRC comes later, see :meth:`finish`)."""
        big = size is None or size > ZIP64_LIMIT // 2  # a streamed member may still grow past the limit
        fixed = self.offset + _LOCAL.size + len(name.encode("utf-8")) + (20 if big else 0)
        pad = -fixed % ALIGNMENT
        if pad and pad < 4:  # an extra field is at least its 4-byte header
            pad += ALIGNMENT
        entry = ZipEntry(name, self.offset, big, pad, size or 0, descriptor=self.descriptors)
        self.entries.append(entry)
        self.write([memoryview(entry.local_header())])
        return entry

    def write(self, views: list[memoryview]) -> int:
        """Append buffers at the current position; returns the number of bytes."""
        n = write_all(self.fd, views)
        self.offset += n
        return n

    def finish(self, entry: ZipEntry, size: int, crc: int) -> None:
        """Record a member's final size and CRC-32 in its local header."""
        if size > ZIP64_LIMIT // 2 and not entry.zip64:
            raise ValueError(f"member {entry.name!r} grew to {size} bytes, past the size it was begun with")
        entry.size, entry.crc = size, crc
        header = entry.local_header()
        if os.pwrite(self.fd, header, entry.header_offset) != len(header):
            raise OSError(f"short write of the zip header of {entry.name!r}")

    def close(self) -> None:
        """Write the central directory and the end records (ZIP64 ones when needed)."""
        start = self.offset
        self.write([memoryview(e.central_header()) for e in self.entries])
        size = self.offset - start
        count = len(self.entries)
        records = []
        # A field too large for the classic end record holds its all-ones value there, and
        # the ZIP64 end record (found through its locator) holds the real one.
        count16 = _MAX16 if count >= ZIP64_COUNT else count
        size32 = _MAX if size > ZIP64_LIMIT else size
        start32 = _MAX if start > ZIP64_LIMIT else start
        if (count16, size32, start32) != (count, size, start):
            end64 = self.offset
            records.append(_END64.pack(b"PK\x06\x06", _END64.size - 12, (_UNIX << 8) | 45, 45, 0, 0,
                                       count, count, size, start))
            records.append(_LOCATOR64.pack(b"PK\x06\x07", 0, end64, 1))
        records.append(_END.pack(b"PK\x05\x06", 0, 0, count16, count16, size32, start32, 0))
        self.write([memoryview(r) for r in records])


def _iov_max() -> int:
    try:
        return max(16, min(1024, os.sysconf("SC_IOV_MAX")))
    except (AttributeError, ValueError, OSError):
        return 16


_IOV_MAX = _iov_max() if hasattr(os, "writev") else 1


def write_all(fd: int, views: list[memoryview]) -> int:
    """Write every buffer, in order, with as few system calls as possible (``writev``).

    The GIL is released once per call, not once per buffer: a forest's thousand node
    arrays go out in one call while the main thread keeps working.
    """
    pending = [v for v in views if v.nbytes]
    total = sum(v.nbytes for v in pending)
    i = 0
    while i < len(pending):
        batch = pending[i : i + _IOV_MAX]
        n = os.writev(fd, batch) if _IOV_MAX > 1 else os.write(fd, batch[0])
        if n <= 0:
            raise OSError(f"write made no progress on descriptor {fd}")
        for view in batch:  # skip what was written; a partial write resumes mid-buffer
            if n < view.nbytes:
                pending[i] = view[n:]
                break
            n -= view.nbytes
            i += 1
    return total
