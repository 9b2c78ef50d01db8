"""Artifact containers: a single ``.msafe`` file (zip) or a directory with the same members.

Writing
    Members go to a temporary file or folder beside the target, each hashed (SHA-256)
    while it is written, on a second thread so hashing overlaps the disk write. Zip
    members are stored uncompressed and their data is aligned to :data:`ALIGNMENT`
    bytes so arrays can be memory-mapped. ``commit`` writes the manifest last, fsyncs
    and renames into place: a failed or interrupted save never leaves a partial
    artifact at the target path.

Reading
    Opening refuses hostile archives (:class:`~modelsafe.errors.UnsafeArchiveError`):
    absolute paths, ``..`` components, symlinks, duplicate names, decompression bombs
    and absurd member counts, each named.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import shutil
import stat
import struct
import tempfile
import threading
import zipfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, Callable, Iterable, Iterator

from modelsafe.errors import FormatError, IntegrityError, SaveError, UnsafeArchiveError

MANIFEST_NAME = "modelsafe.json"
SINGLE_FILE_SUFFIX = ".msafe"
#: Alignment of member data inside a single-file artifact (bytes).
ALIGNMENT = 64
#: Size of the pieces members are written and hashed in.
CHUNK = 8 << 20
#: Hostile-archive limits.
MAX_MEMBERS = 100_000
MAX_COMPRESSION_RATIO = 100
MAX_TOTAL_UNCOMPRESSED = 1 << 40  # 1 TiB
_PADDING_HEADER_ID = 0xA11E  # private zip extra-field id used only for alignment padding
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")

ProgressCallback = Callable[[int], None]


@dataclass(frozen=True)
class WrittenMember:
    name: str
    size: int
    sha256: str


def is_single_file(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` names (or would name) a single-file artifact."""
    p = Path(path)
    if p.is_dir():
        return False
    return p.suffix == SINGLE_FILE_SUFFIX or p.is_file()


def check_member_name(name: str) -> str:
    """Return ``name`` if it is a safe relative POSIX path, else raise UnsafeArchiveError."""
    reason = None
    if not name or "\x00" in name:
        reason = "it is empty or contains a NUL byte"
    elif name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        reason = "it is an absolute path"
    elif "\\" in name:
        reason = "it contains a backslash, which some systems read as a path separator"
    elif any(part in ("..", ".", "") for part in PurePosixPath(name).parts) or name.endswith("/"):
        reason = "it has a '..', '.' or empty path component (path traversal)"
    if reason:
        raise UnsafeArchiveError(
            f"Refusing member {name!r}: {reason}. An artifact member must stay inside the "
            "artifact, or reading it could overwrite or expose other files. Do not use this "
            "file; re-export the model from a trusted source.",
            member=name,
        )
    return name


# ---------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------


class _Hasher:
    """SHA-256 of a member, updated on a background thread so hashing overlaps writing.

    ``hashlib`` releases the GIL on large buffers, so the two cores work at once.
    Chunks are hashed in submission order (one worker).
    """

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        self._h = hashlib.sha256()
        self._pool = pool
        self._pending: Future[None] | None = None

    def update(self, chunk: memoryview | bytes) -> None:
        previous = self._pending
        if previous is not None:
            previous.result()  # bound the queue to one chunk in flight
        self._pending = self._pool.submit(self._h.update, chunk)

    def hexdigest(self) -> str:
        if self._pending is not None:
            self._pending.result()
            self._pending = None
        return self._h.hexdigest()


def _chunks(buffers: Iterable[bytes | bytearray | memoryview]) -> Iterator[memoryview]:
    for buf in buffers:
        view = memoryview(buf).cast("B")
        for start in range(0, len(view), CHUNK):
            yield view[start : start + CHUNK]


class ArtifactWriter:
    """Write an artifact to ``path`` atomically.

    Use as a context manager: members written with :meth:`write` or :meth:`open_member`,
    then :meth:`commit` with the manifest bytes. Leaving the block without committing,
    or with an exception, removes every temporary file.
    """

    def __init__(self, path: str | os.PathLike[str], *, overwrite: bool = False,
                 progress: ProgressCallback | None = None, writeback: bool = False) -> None:
        self.path = Path(path)
        self.single_file = is_single_file(self.path)
        self.overwrite = overwrite
        self.members: dict[str, WrittenMember] = {}
        self._progress = progress
        #: Start the disk write of members while they are written (see :class:`_Writeback`).
        self._writeback = writeback and hasattr(os, "posix_fadvise")
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="modelsafe-hash")
        self._lock = threading.Lock()
        self._committed = False
        check_target(self.path, overwrite)
        parent = self.path.parent
        if not parent.is_dir():
            raise SaveError(
                f"Cannot save to {str(self.path)!r}: the folder {str(parent)!r} does not exist. "
                "Create it first (os.makedirs) or choose another path.",
                path=str(self.path),
            )
        prefix = f".{self.path.name}.tmp-"
        if self.single_file:
            fd, tmp = tempfile.mkstemp(prefix=prefix, dir=parent)
            self._tmp = Path(tmp)
            self._zip = zipfile.ZipFile(os.fdopen(fd, "w+b"), "w", zipfile.ZIP_STORED, allowZip64=True)
        else:
            self._tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
            self._zip = None

    # -- context management ---------------------------------------------------------
    def __enter__(self) -> "ArtifactWriter":
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if not self._committed:
            self.abort()

    def abort(self) -> None:
        """Remove every temporary file. Safe to call more than once."""
        self._pool.shutdown(wait=True)
        if self._zip is not None:
            with contextlib.suppress(Exception):
                fp = self._zip.fp
                self._zip.close()
                if fp is not None:
                    fp.close()
        if self._tmp.is_dir():
            shutil.rmtree(self._tmp, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                self._tmp.unlink()

    # -- members --------------------------------------------------------------------
    def write(self, name: str, buffers: bytes | bytearray | memoryview | Iterable[bytes | bytearray | memoryview],
              *, size: int | None = None) -> WrittenMember:
        """Write one member from a buffer or an iterable of buffers; return its record."""
        if isinstance(buffers, (bytes, bytearray, memoryview)):
            size = memoryview(buffers).nbytes
            buffers = (buffers,)
        with self.open_member(name, size=size) as out:
            for chunk in _chunks(buffers):
                out.write(chunk)
        return self.members[name]

    @contextlib.contextmanager
    def open_member(self, name: str, *, size: int | None = None) -> Iterator["_MemberStream"]:
        """Open a member for streaming writes. ``size`` (if known) picks the zip64 form."""
        check_member_name(name)
        if name == MANIFEST_NAME or name in self.members:
            raise SaveError(f"Member {name!r} was written twice; this is a bug in the flavor that wrote it.",
                            member=name)
        hasher = _Hasher(self._pool)
        if self._zip is not None:
            zinfo = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            zinfo.compress_type = zipfile.ZIP_STORED
            zinfo.external_attr = (stat.S_IFREG | 0o644) << 16
            big = size is None or size > zipfile.ZIP64_LIMIT // 2
            zinfo.extra = _alignment_padding(self._zip.fp.tell(), name, zip64=big)
            raw: IO[bytes] = self._zip.open(zinfo, "w", force_zip64=big)
        else:
            target = self._tmp / name
            target.parent.mkdir(parents=True, exist_ok=True)
            raw = open(target, "wb")
        stream = _MemberStream(raw, hasher, self._progress)
        if self._writeback:
            stream.writeback = _Writeback(self._zip.fp if self._zip is not None else raw)
        try:
            yield stream
        finally:
            raw.close()
        self.members[name] = WrittenMember(name, stream.size, hasher.hexdigest())

    # -- finishing ------------------------------------------------------------------
    def commit(self, manifest: bytes) -> Path:
        """Write the manifest, fsync, and atomically move the artifact to ``path``."""
        if self._zip is not None:
            zinfo = zipfile.ZipInfo(MANIFEST_NAME, date_time=(1980, 1, 1, 0, 0, 0))
            zinfo.external_attr = (stat.S_IFREG | 0o644) << 16
            self._zip.writestr(zinfo, manifest, compress_type=zipfile.ZIP_STORED)
            fp = self._zip.fp
            self._zip.close()
            fp.flush()
            os.fsync(fp.fileno())
            fp.close()
        else:
            with open(self._tmp / MANIFEST_NAME, "wb") as f:
                f.write(manifest)
                f.flush()
                os.fsync(f.fileno())
            for member in self.members:
                _fsync_path(self._tmp / member)
        self._pool.shutdown(wait=True)
        check_target(self.path, self.overwrite)  # the target may have appeared meanwhile
        _replace(self._tmp, self.path)
        _fsync_dir(self.path.parent)
        self._committed = True
        return self.path


class _Writeback:
    """Hands what was written so far to the disk, without waiting, and drops it from the page cache.

    ``posix_fadvise(DONTNEED)`` starts the write-out of the dirty range (Linux); the final
    fsync then has little left to wait for, and a multi-GiB artifact does not fill the
    page cache. Used for checkpoints (``ArtifactWriter(writeback=True)``), which are read
    back rarely.
    """

    STEP = 64 << 20

    def __init__(self, fileobj: IO[bytes]) -> None:
        self._file = fileobj
        self._done = fileobj.tell()

    def __call__(self) -> None:
        position = self._file.tell()
        if position - self._done >= self.STEP:
            self._file.flush()
            with contextlib.suppress(OSError):
                os.posix_fadvise(self._file.fileno(), self._done, position - self._done, os.POSIX_FADV_DONTNEED)
            self._done = position


class _MemberStream:
    """A write-only stream that hashes what passes through it."""

    writeback: Callable[[], None] | None = None

    def __init__(self, raw: IO[bytes], hasher: _Hasher, progress: ProgressCallback | None) -> None:
        self._raw = raw
        self._hasher = hasher
        self._progress = progress
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data).cast("B")
        for start in range(0, len(view), CHUNK):
            chunk = view[start : start + CHUNK]
            self._hasher.update(chunk)
            self._raw.write(chunk)
            self.size += len(chunk)
            if self._progress is not None:
                self._progress(len(chunk))
            if self.writeback is not None:
                self.writeback()
        return len(view)


def _alignment_padding(header_offset: int, name: str, *, zip64: bool) -> bytes:
    """An extra field that makes the member's data start on an ALIGNMENT boundary."""
    data_start = header_offset + 30 + len(name.encode("utf-8")) + (20 if zip64 else 0)
    pad = -data_start % ALIGNMENT
    if pad < 4:  # an extra field is at least its 4-byte header
        pad += ALIGNMENT
    return struct.pack("<HH", _PADDING_HEADER_ID, pad - 4) + b"\x00" * (pad - 4)


def check_target(path: Path, overwrite: bool) -> None:
    """Refuse to replace an existing path unless ``overwrite``; refuse non-artifacts always."""
    if not (path.exists() or path.is_symlink()):
        return
    if not overwrite:
        raise SaveError(
            f"{str(path)!r} already exists and overwrite=False: saving would replace it. "
            "Pass overwrite=True to replace it, or choose a new path.",
            path=str(path),
        )
    if path.is_dir() and any(path.iterdir()) and not (path / MANIFEST_NAME).is_file():
        raise SaveError(
            f"{str(path)!r} is a non-empty folder that is not a modelsafe artifact; overwrite=True "
            "only replaces artifacts, so nothing was deleted. Choose another path.",
            path=str(path),
        )


def _replace(tmp: Path, target: Path) -> None:
    """Move ``tmp`` to ``target``; an existing target is swapped out only after tmp is complete."""
    if target.is_dir() and not target.is_symlink():
        backup = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, backup)
        try:
            os.replace(tmp, target)
        except BaseException:
            os.replace(backup, target)
            raise
        shutil.rmtree(backup, ignore_errors=True)
    else:
        if tmp.is_dir() and (target.exists() or target.is_symlink()):
            target.unlink()
        os.replace(tmp, target)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform can fsync a directory
        _fsync_path(path)


# ---------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------


class ArtifactReader:
    """Read members of an artifact. Use :func:`open_artifact` to get one."""

    path: Path
    #: Called with a member's name before a component reads it; ``load`` sets it to wait
    #: for that member's integrity check (see :class:`modelsafe._integrity.MemberChecks`).
    gate: Callable[[str], None] | None = None

    def names(self) -> list[str]:
        raise NotImplementedError  # abstract

    def size(self, name: str) -> int:
        raise NotImplementedError  # abstract

    def view(self, name: str) -> memoryview:
        """A read-only, zero-copy (memory-mapped) view of the member's bytes."""
        raise NotImplementedError  # abstract

    def read(self, name: str) -> bytes:
        return bytes(self.view(name))

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


def _empty_view() -> memoryview:
    return memoryview(b"")


class ZipArtifactReader(ArtifactReader):
    def __init__(self, path: Path) -> None:
        self.path = path
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
        try:
            self._check_members()
        except BaseException:
            self.close()
            raise

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

    def view(self, name: str) -> memoryview:
        info = self._info(name)
        if info.file_size == 0:
            return _empty_view()
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
        if offset + info.file_size > os.fstat(self._file.fileno()).st_size:
            raise IntegrityError(
                f"Member {name!r} runs past the end of {str(self.path)!r}: the file is truncated. "
                "Copy the artifact again from its source.",
                member=name, expected=info.file_size, actual=None,
            )
        return self._file.fileno(), offset

    def _data_offset(self, info: zipfile.ZipInfo) -> int:
        mm = self._map()
        start = info.header_offset
        header = mm[start : start + _LOCAL_HEADER.size]
        if len(header) < _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
            raise IntegrityError(
                f"Member {info.filename!r} has a damaged zip header in {str(self.path)!r}: the file is "
                "corrupted or truncated. Copy the artifact again from its source.",
                member=info.filename, expected="zip local header", actual=bytes(header[:4]).hex(),
            )
        fields = _LOCAL_HEADER.unpack(header)
        name_len, extra_len = fields[-2], fields[-1]
        stored_name = mm[start + 30 : start + 30 + name_len].decode("utf-8", "replace")
        if stored_name != info.filename:
            raise UnsafeArchiveError(
                f"Member {info.filename!r} is named {stored_name!r} in its local header: two readers "
                "would see different files. Do not use this file.",
                member=info.filename,
            )
        return start + 30 + name_len + extra_len

    def _map(self) -> mmap.mmap:
        if self._mmap is None:
            self._mmap = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        return self._mmap

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._zip.close()
        if self._mmap is not None:
            with contextlib.suppress(BufferError):  # views still alive keep the map open
                self._mmap.close()
        self._file.close()


class DirArtifactReader(ArtifactReader):
    def __init__(self, path: Path) -> None:
        self.path = path
        self._names: set[str] = set()
        self._maps: list[mmap.mmap] = []
        self._fds: dict[str, int] = {}
        count = 0
        for root, dirs, files in os.walk(path, followlinks=False):
            for entry in dirs + files:
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

    def size(self, name: str) -> int:
        return self._file(name).stat().st_size

    def view(self, name: str) -> memoryview:
        target = self._file(name)
        with open(target, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                return _empty_view()
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self._maps.append(mm)
        return memoryview(mm).toreadonly()

    def locate(self, name: str) -> tuple[int, int] | None:
        if name not in self._fds:
            self._fds[name] = os.open(self._file(name), os.O_RDONLY | getattr(os, "O_BINARY", 0))
        return self._fds[name], 0

    def close(self) -> None:
        for mm in self._maps:
            with contextlib.suppress(BufferError):
                mm.close()
        self._maps.clear()
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()


def open_artifact(path: str | os.PathLike[str]) -> ArtifactReader:
    """Open an artifact for reading, refusing hostile archives and non-artifacts."""
    p = Path(path)
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
            raise FormatError(f"Cannot read {str(p)!r}: permission denied. Check the file's permissions.",
                              path=str(p)) from exc
    if not reader.has(MANIFEST_NAME):
        reader.close()
        raise FormatError(
            f"{str(p)!r} is not a modelsafe artifact: it has no {MANIFEST_NAME}. If it is a pickle, "
            "joblib, torch or Keras file, run `modelsafe doctor` on it, and `modelsafe convert` to make "
            "an artifact.",
            path=str(p),
        )
    return reader
