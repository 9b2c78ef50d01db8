"""What every artifact reader offers (local file, local folder, remote object, remote prefix).

:class:`ArtifactReader` is the interface flavors and the integrity check read members through;
:class:`ZipMembers` holds a zip's member table, checked against hostile archives, for the zip
readers (local and remote).
"""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping

from modelsafe.artifact.rules import (
    MAX_COMPRESSION_RATIO,
    MAX_MEMBERS,
    MAX_TOTAL_UNCOMPRESSED,
    check_member_name,
)
from modelsafe.errors import IntegrityError, UnsafeArchiveError

__all__ = ["ArtifactReader", "ZipMembers", "ProgressCallback", "empty_view"]

ProgressCallback = Callable[[int], None]


class ArtifactReader:
    """Read members of an artifact. Use :func:`open_artifact` to get one."""

    path: Path
    #: Called with a member's name before a component reads it; ``load`` sets it to wait
    #: for that member's integrity check (see :class:`modelsafe.artifact.integrity.MemberChecks`).
    gate: Callable[[str], None] | None = None
    #: The SHA-256 each member is checked against (set by ``load`` with the gate): once the gate let a
    #: member through, or every check finished, its bytes are the ones with this digest.
    verified: Mapping[str, str] | None = None
    #: Verified private copies of members (writable buffers), kept by the integrity check for :meth:`private`.
    copies: dict[str, Any]

    def names(self) -> list[str]:
        raise NotImplementedError  # abstract

    def size(self, name: str) -> int:
        raise NotImplementedError  # abstract

    def view(self, name: str) -> memoryview:
        """A read-only, zero-copy (memory-mapped) view of the member's bytes."""
        raise NotImplementedError  # abstract

    def read(self, name: str) -> bytes:
        return bytes(self.view(name))

    def private(self, name: str) -> Any:
        """A writable copy of the member that nothing else shares (a buffer: bytearray or uint8 array).

        The integrity check hands over the buffer it read and hashed, when it kept one
        (see ``keep`` of :class:`modelsafe.artifact.integrity.MemberChecks`): those bytes are the
        checked bytes, whatever happens to the file afterwards. Otherwise the member is copied.
        """
        kept = self.copies.pop(name, None)
        return kept if kept is not None else bytearray(self.view(name))

    def locate(self, name: str) -> tuple[int, int] | None:
        """``(fd, offset)`` of the member's bytes in a file this reader holds open, for ``os.pread``.

        Reading through the reader's own descriptor sees the very file that was checked, and
        leaves no memory map resident. None when the member is not stored as plain bytes.
        """
        return None

    def close(self) -> None:
        raise NotImplementedError  # abstract

    def __enter__(self) -> "ArtifactReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def has(self, name: str) -> bool:
        return name in self._index()

    def _index(self) -> Any:
        """A container of member names supporting ``in``."""
        raise NotImplementedError  # abstract

    def _missing(self, name: str) -> IntegrityError:
        return IntegrityError(
            f"Member {name!r} is missing from {str(self.path)!r}: the manifest lists it, so the "
            "artifact is incomplete (a partial copy or a tampered file). Copy the artifact again "
            "from its source, or re-export the model.",
            member=name, expected="present", actual="missing",
        )


def empty_view() -> memoryview:
    return memoryview(b"")


class ZipMembers:
    """A zip's members by name, refusing hostile archives (for readers with ``_zip`` and ``path``)."""

    path: Any
    _zip: zipfile.ZipFile
    _infos: dict[str, zipfile.ZipInfo]
    _missing: Callable[[str], IntegrityError]  # ArtifactReader's

    def _check_members(self) -> None:
        infos = self._zip.infolist()
        if len(infos) > MAX_MEMBERS:
            raise UnsafeArchiveError(
                f"{str(self.path)!r} has {len(infos)} members, more than the limit of {MAX_MEMBERS}: "
                "reading it could exhaust memory or time. Do not use this file.",
                member=None,
            )
        total = 0
        for info in infos:
            name = info.filename
            if name.endswith("/") and info.file_size == 0:
                continue  # directory entry
            check_member_name(name)
            if name in self._infos:
                raise UnsafeArchiveError(
                    f"Refusing {str(self.path)!r}: member {name!r} appears twice. Duplicate names let "
                    "two readers see different content under one name. Do not use this file.",
                    member=name,
                )
            if stat.S_ISLNK(info.external_attr >> 16):
                raise UnsafeArchiveError(
                    f"Refusing member {name!r}: it is a symbolic link, which could point outside the "
                    "artifact. Do not use this file; re-export the model from a trusted source.",
                    member=name,
                )
            if info.compress_type != zipfile.ZIP_STORED:
                ratio = info.file_size / max(info.compress_size, 1)
                if ratio > MAX_COMPRESSION_RATIO:
                    raise UnsafeArchiveError(
                        f"Refusing member {name!r}: it expands {info.compress_size} bytes to "
                        f"{info.file_size} (ratio {ratio:.0f}, limit {MAX_COMPRESSION_RATIO}), the "
                        "signature of a decompression bomb. Do not use this file.",
                        member=name,
                    )
            total += info.file_size
            if total > MAX_TOTAL_UNCOMPRESSED:
                raise UnsafeArchiveError(
                    f"Refusing {str(self.path)!r}: members declare more than {MAX_TOTAL_UNCOMPRESSED} "
                    "bytes in total. Do not use this file.",
                    member=name,
                )
            self._infos[name] = info

    def _index(self) -> Any:
        return self._infos.keys()

    def names(self) -> list[str]:
        return list(self._infos)

    def size(self, name: str) -> int:
        return self._info(name).file_size

    def _info(self, name: str) -> zipfile.ZipInfo:
        try:
            return self._infos[name]
        except KeyError:
            raise self._missing(name) from None
