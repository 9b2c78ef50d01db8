"""Artifact containers: a single ``.msafe`` file (zip) or a directory with the same members.

This module reads local artifacts (and opens remote ones through :mod:`.remote_read`); the
container's shared rules (member names, alignment, limits) are in :mod:`.rules`, writing is
in :mod:`modelsafe.artifact.writer`.

Reading refuses hostile archives (:class:`~modelsafe.errors.UnsafeArchiveError`):
absolute paths, ``..`` components, symlinks, duplicate names, decompression bombs and
absurd member counts, each named. Members are read as zero-copy memory-mapped views, or
through the reader's own file descriptor (``locate``) for ``pread``.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import zipfile
from pathlib import Path
from typing import Any, Mapping

from modelsafe.artifact.disk_errors import read_error
from modelsafe.artifact.location import is_url, resolve
from modelsafe.artifact.manifest import MANIFEST_NAME, Manifest
from modelsafe.artifact.members import ArtifactReader, ProgressCallback, ZipMembers, empty_view
from modelsafe.artifact.rules import (  # noqa: F401 - the container's rules, re-exported for their users
    ALIGNMENT,
    CHUNK,
    MAX_COMPRESSION_RATIO,
    MAX_MEMBERS,
    MAX_TOTAL_UNCOMPRESSED,
    check_member_name,
    is_os_dropping,
    local_header_length,
)
from modelsafe.errors import FormatError, IntegrityError, UnsafeArchiveError

SINGLE_FILE_SUFFIX = ".msafe"
__all__ = ["ArtifactReader", "ProgressCallback", "open_artifact", "read_manifest", "manifest_of", "check_member_name",
           "ignored_files"]


# ---------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------


class ZipArtifactReader(ZipMembers, ArtifactReader):
    def __init__(self, path: Path) -> None:
        self.path = path
        self.copies = {}
        self._file = open(path, "rb")
        try:
            self._zip = zipfile.ZipFile(self._file)
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            self._file.close()
            raise FormatError(
                f"{str(path)!r} is not a modelsafe artifact: it is not a readable zip archive ({exc}). "
                "The file may be truncated or corrupted, or it is a different kind of model file; "
                "for a pickle, joblib, torch or h5 file use `modelsafe convert` (or `modelsafe doctor` "
                "to see what it is).",
                path=str(path),
            ) from exc
        self._infos: dict[str, zipfile.ZipInfo] = {}
        self._mmap: mmap.mmap | None = None
        self._file_size: int | None = None
        try:
            self._check_members()
        except BaseException:
            self.close()
            raise

    def view(self, name: str) -> memoryview:
        info = self._info(name)
        if info.file_size == 0:
            return empty_view()
        if info.compress_type != zipfile.ZIP_STORED:
            with self._zip.open(info) as f:
                return memoryview(f.read())
        offset = self._data_offset(info)
        mm = self._map()
        if offset + info.file_size > len(mm):
            raise IntegrityError(
                f"Member {name!r} runs past the end of {str(self.path)!r}: the file is truncated. "
                "Copy the artifact again from its source.",
                member=name, expected=info.file_size, actual=max(len(mm) - offset, 0),
            )
        return memoryview(mm)[offset : offset + info.file_size].toreadonly()

    def locate(self, name: str) -> tuple[int, int] | None:
        info = self._info(name)
        if info.compress_type != zipfile.ZIP_STORED:
            return None
        offset = self._data_offset(info)
        if self._file_size is None:  # once: a later truncation shows as a short read, and a hash mismatch
            self._file_size = os.fstat(self._file.fileno()).st_size
        if offset + info.file_size > self._file_size:
            raise IntegrityError(
                f"Member {name!r} runs past the end of {str(self.path)!r}: the file is truncated. "
                "Copy the artifact again from its source.",
                member=name, expected=info.file_size, actual=None,
            )
        return self._file.fileno(), offset

    def _data_offset(self, info: zipfile.ZipInfo) -> int:
        mm = self._map()
        start = info.header_offset
        return start + local_header_length(info, mm[start : start + 30 + len(info.filename.encode())],
                                           str(self.path))

    def _map(self) -> mmap.mmap:
        if self._mmap is None:
            self._mmap = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        return self._mmap

    def close(self) -> None:
        self.copies.clear()
        with contextlib.suppress(Exception):
            self._zip.close()
        if self._mmap is not None:
            with contextlib.suppress(BufferError):  # views still alive keep the map open
                self._mmap.close()
        self._file.close()


class DirArtifactReader(ArtifactReader):
    """The folder form. OS droppings (``.DS_Store``, ``Thumbs.db``, ``._*``, ``__MACOSX``...) are
    skipped, never read, and listed in ``ignored``; a member the OS refuses to read raises
    :class:`~modelsafe.errors.ArtifactReadError`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.copies = {}
        self._names: set[str] = set()
        self._maps: list[mmap.mmap] = []
        self._fds: dict[str, int] = {}
        #: OS droppings found in the folder (relative paths), outside the manifest and never read.
        self.ignored: list[str] = []
        count = 0
        for root, dirs, files in os.walk(path, followlinks=False, onerror=self._unlistable):
            for entry in [e for e in dirs + files if is_os_dropping(e)]:
                self.ignored.append((Path(root) / entry).relative_to(path).as_posix())
            dirs[:] = [d for d in dirs if not is_os_dropping(d)]
            for entry in dirs + [f for f in files if not is_os_dropping(f)]:
                full = Path(root) / entry
                rel = full.relative_to(path).as_posix()
                if full.is_symlink():
                    raise UnsafeArchiveError(
                        f"Refusing member {rel!r} of {str(path)!r}: it is a symbolic link, which could "
                        "point outside the artifact. Remove the link, or re-export the model.",
                        member=rel,
                    )
                if entry in files:
                    self._names.add(rel)
                    count += 1
            if count > MAX_MEMBERS:
                raise UnsafeArchiveError(
                    f"{str(path)!r} has more than {MAX_MEMBERS} files: reading it could exhaust memory "
                    "or time. Point modelsafe at the artifact folder itself.",
                    member=None,
                )

    def _index(self) -> set[str]:
        return self._names

    def names(self) -> list[str]:
        return sorted(self._names)

    def _file(self, name: str) -> Path:
        check_member_name(name)
        if name not in self._names:
            raise self._missing(name)
        return self.path / name

    def _unlistable(self, exc: OSError) -> None:
        """A folder of the artifact that cannot be listed (os.walk's onerror)."""
        where = Path(exc.filename).relative_to(self.path).as_posix() if exc.filename else "."
        raise read_error(exc, str(self.path), None if where == "." else where)

    def size(self, name: str) -> int:
        target = self._file(name)
        try:
            return target.stat().st_size
        except OSError as exc:
            raise read_error(exc, str(self.path), name) from exc

    def view(self, name: str) -> memoryview:
        target = self._file(name)
        try:
            with open(target, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size == 0:
                    return empty_view()
                mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as exc:
            raise read_error(exc, str(self.path), name) from exc
        self._maps.append(mm)
        return memoryview(mm).toreadonly()

    def locate(self, name: str) -> tuple[int, int] | None:
        if name not in self._fds:
            target = self._file(name)
            try:
                self._fds[name] = os.open(target, os.O_RDONLY | getattr(os, "O_BINARY", 0))
            except OSError as exc:
                raise read_error(exc, str(self.path), name) from exc
        return self._fds[name], 0

    def close(self) -> None:
        self.copies.clear()
        for mm in self._maps:
            with contextlib.suppress(BufferError):
                mm.close()
        self._maps.clear()
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()


def open_artifact(path: Any, storage_options: Mapping[str, Any] | None = None) -> ArtifactReader:
    """Open an artifact for reading, refusing hostile archives and non-artifacts.

    ``path`` is a local path or an fsspec URL (see :mod:`modelsafe.artifact.location`); a URL is
    read with range requests by :mod:`modelsafe.artifact.remote_read`.
    """
    if is_url(path):
        from modelsafe.artifact.remote_read import open_remote  # imports fsspec's store, on first use

        return open_remote(resolve(path, storage_options))
    p = resolve(path)
    assert isinstance(p, Path)
    if p.is_symlink() and not p.exists():
        raise FormatError(f"{str(p)!r} is a broken symbolic link. Point modelsafe at the artifact itself.",
                          path=str(p))
    if not p.exists():
        raise FormatError(
            f"No artifact at {str(p)!r}: the path does not exist. Check the path (a single-file "
            f"artifact ends in {SINGLE_FILE_SUFFIX}; a folder artifact holds {MANIFEST_NAME}).",
            path=str(p),
        )
    reader: ArtifactReader
    if p.is_dir():
        reader = DirArtifactReader(p)
    else:
        try:
            reader = ZipArtifactReader(p)
        except PermissionError as exc:
            raise read_error(exc, str(p)) from exc
    if not reader.has(MANIFEST_NAME):
        reader.close()
        raise FormatError(
            f"{str(p)!r} is not a modelsafe artifact: it has no {MANIFEST_NAME}. If it is a pickle, "
            "joblib, torch or Keras file, run `modelsafe doctor` on it, and `modelsafe convert` to make "
            "an artifact.",
            path=str(p),
        )
    return reader


def read_manifest(reader: ArtifactReader) -> Manifest:
    """Parse the manifest, checking its format version (raises FormatError)."""
    return Manifest.from_json(reader.read(MANIFEST_NAME), where=f"{reader.path}/{MANIFEST_NAME}")


def manifest_of(path: Any, storage_options: Mapping[str, Any] | None = None) -> Manifest:
    """The manifest of the artifact at ``path`` (a local path or a URL), reading nothing else."""
    with open_artifact(path, storage_options) as reader:
        return read_manifest(reader)


def ignored_files(path: Any) -> list[str]:
    """The OS droppings (``.DS_Store``, ``Thumbs.db``...) a folder artifact at ``path`` holds outside its
    manifest; they are never read. Empty for a single file or a URL."""
    if is_url(path) or not Path(path).is_dir():
        return []
    with DirArtifactReader(Path(path)) as reader:
        return sorted(reader.ignored)
