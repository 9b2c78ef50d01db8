"""Writing an artifact atomically: a single ``.msafe`` file (zip) or a folder.

Members go to a temporary file or folder beside the target, each hashed (SHA-256) while
it is written, on a second thread so hashing overlaps the disk write. Zip members are
stored uncompressed and their data is aligned to :data:`~modelsafe._archive.ALIGNMENT`
bytes so arrays can be memory-mapped. ``commit`` writes the manifest last, fsyncs and
renames into place: a failed or interrupted save never leaves a partial artifact at the
target path.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import struct
import tempfile
import threading
import zipfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterable, Iterator

from modelsafe._archive import (
    ALIGNMENT, CHUNK, MANIFEST_NAME, SINGLE_FILE_SUFFIX, ProgressCallback, check_member_name,
)
from modelsafe.errors import SaveError

_PADDING_HEADER_ID = 0xA11E  # private zip extra-field id used only for alignment padding


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




class _Hasher:
    """SHA-256 of a member, updated on a background thread so hashing overlaps writing.

    ``hashlib`` releases the GIL on large buffers, so the cores work at once. A member's
    chunks are hashed in order (each waits for the previous); two members can be hashed
    at the same time, so one member's digest finishes while the next is written.
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

    def update_all(self, pieces: list[memoryview]) -> None:
        """Hash several buffers in order, in one background job (no thread hop per buffer)."""
        if self._pending is not None:
            self._pending.result()
        self._pending = self._pool.submit(_update_all, self._h, pieces)

    def hexdigest(self) -> str:
        if self._pending is not None:
            self._pending.result()
            self._pending = None
        return self._h.hexdigest()


def _update_all(h: "hashlib._Hash", pieces: list[memoryview]) -> None:
    for piece in pieces:
        h.update(piece)


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
        self._members: dict[str, WrittenMember] = {}
        #: Members written whose digest may still be computing: name -> (size, hasher).
        self._digests: dict[str, tuple[int, _Hasher]] = {}
        self._progress = progress
        #: Start the disk write of members while they are written (see :class:`_Writeback`).
        self._writeback = writeback and hasattr(os, "posix_fadvise")
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="modelsafe-hash")
        self._lock = threading.Lock()
        self._committed = False
        self._early_sync: Future[object] | None = None
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
        with contextlib.suppress(OSError):  # the save already failed; its own error is the one to show
            self._join_sync()
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
    @property
    def members(self) -> dict[str, WrittenMember]:
        """Every member written so far, with its size and SHA-256 (waits for pending digests)."""
        for name, (size, hasher) in list(self._digests.items()):
            self._members[name] = WrittenMember(name, size, hasher.hexdigest())
            del self._digests[name]
        return self._members

    def add(self, name: str, buffers: bytes | bytearray | memoryview | Iterable[bytes | bytearray | memoryview],
            *, size: int | None = None) -> None:
        """Write one member from a buffer or an iterable of buffers; its digest may finish later.

        A list is written piece by piece and hashed by one background job, so many small
        buffers (a forest's node arrays) are written without being copied together first.
        The buffers must not change until the digest is read.
        """
        if isinstance(buffers, (bytes, bytearray, memoryview)):
            size = memoryview(buffers).nbytes
            buffers = (buffers,)
        with self.open_member(name, size=size) as out:
            if isinstance(buffers, list):
                out.write_pieces(buffers)
            else:
                for chunk in _chunks(buffers):
                    out.write(chunk)

    def write(self, name: str, buffers: bytes | bytearray | memoryview | Iterable[bytes | bytearray | memoryview],
              *, size: int | None = None) -> WrittenMember:
        """Write one member (see :meth:`add`) and return its record."""
        self.add(name, buffers, size=size)
        return self.members[name]

    @contextlib.contextmanager
    def open_member(self, name: str, *, size: int | None = None) -> Iterator["_MemberStream"]:
        """Open a member for streaming writes. ``size`` (if known) picks the zip64 form."""
        check_member_name(name)
        if name == MANIFEST_NAME or name in self._members or name in self._digests:
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
        self._digests[name] = (stream.size, hasher)

    # -- finishing ------------------------------------------------------------------
    def start_sync(self) -> None:
        """Start writing what was written so far to disk, on a background thread.

        Call it between members, before other work (the sample run): the disk write then
        overlaps that work, and :meth:`commit`'s fsync has only the rest to wait for.
        """
        if self._early_sync is not None:
            return
        if self._zip is not None:
            self._zip.fp.flush()
            self._early_sync = self._pool.submit(os.fsync, self._zip.fp.fileno())
        else:
            written = [self._tmp / name for name in (*self._members, *self._digests)]
            self._early_sync = self._pool.submit(lambda: [_fsync_path(path) for path in written])

    def _join_sync(self) -> None:
        """Wait for :meth:`start_sync`; raise its error (a later fsync may not report it again)."""
        sync, self._early_sync = self._early_sync, None
        if sync is not None:
            sync.result()

    def commit(self, manifest: bytes) -> Path:
        """Write the manifest, fsync, and atomically move the artifact to ``path``."""
        self._join_sync()
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
            self._put(chunk)
        return len(view)

    def write_pieces(self, pieces: list[bytes | bytearray | memoryview]) -> None:
        """Write buffers in order, all hashed by one background job."""
        views = [memoryview(piece).cast("B") for piece in pieces]
        self._hasher.update_all(views)
        for view in views:
            self._put(view)

    def _put(self, view: memoryview) -> None:
        self._raw.write(view)
        self.size += len(view)
        if self._progress is not None:
            self._progress(len(view))
        if self.writeback is not None:
            self.writeback()


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


