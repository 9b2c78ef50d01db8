"""Writing an artifact atomically: a single ``.msafe`` file (zip) or a folder.

Members go to a temporary file or folder beside the target; ``commit`` writes the
manifest last, fsyncs and renames into place, so a failed or interrupted save never
leaves a partial artifact at the target path. Zip members are stored uncompressed, their
data aligned so arrays can be memory-mapped (:mod:`modelsafe.artifact.zipwrite`).

Hashing runs beside the writing, and the caller waits for none of it until ``commit``:

* a member given as buffers (:meth:`ArtifactWriter.add`) is written by the caller in
  place, with one ``writev``, while a background job computes its SHA-256 (and, for a
  zip, its CRC-32). The caller then goes on (a save runs the verification sample) while
  the hash finishes on the other core. The buffers must not change until ``commit``.
* a streamed member (:meth:`ArtifactWriter.open_member`) is written as it comes, its
  chunks hashed by background jobs as they pass.
* :meth:`ArtifactWriter.start_sync` starts the fsync of what is written so far in the
  background; its error, if any, is raised by ``commit``.

An fsspec URL as ``path`` streams the artifact to the store instead, visible only once
complete (:mod:`modelsafe.artifact.remote_write`); a local path never imports fsspec.

Writing stays on the caller's thread on purpose: on two cores, a writer thread made
the sample run and the writes compete for both cores, and saves were slower.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import threading
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from modelsafe.artifact.location import is_url, resolve
from modelsafe.artifact.reader import (
    CHUNK,
    MANIFEST_NAME,
    SINGLE_FILE_SUFFIX,
    ProgressCallback,
    check_member_name,
)
from modelsafe.artifact.targets import (
    DirTarget,
    ZipTarget,
    check_target,
    fsync_directory,
    replace_target,
)
from modelsafe.artifact.threads import pool, settle
from modelsafe.errors import SaveError

#: Buffers smaller than this are hashed in groups copied into one block: a hashing
#: thread then takes the GIL once per block, not once per small buffer.
_BLOCK = 8 << 20
#: A member is written in calls of at most this many bytes (progress, write-back).
_WRITE_GROUP = 64 << 20


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


def _blocks(views: list[memoryview]) -> Iterator[memoryview]:
    """The bytes of ``views`` in order, small buffers gathered into blocks of about _BLOCK.

    A yielded block is reused: use it before asking for the next one.
    """
    stage: memoryview | None = None
    fill = 0
    for view in views:
        n = view.nbytes
        if n >= _BLOCK // 4:
            if fill:
                yield stage[:fill]  # type: ignore[index]
                fill = 0
            yield view
            continue
        if stage is None:
            stage = _stage()
        if fill + n > _BLOCK:
            yield stage[:fill]
            fill = 0
        stage[fill : fill + n] = view
        fill += n
    if fill:
        yield stage[:fill]  # type: ignore[index]


_local = threading.local()


def _stage() -> memoryview:
    """This thread's staging block, kept from one save to the next (fresh memory is slow to touch)."""
    stage = getattr(_local, "stage", None)
    if stage is None or len(stage) != _BLOCK:
        stage = _local.stage = memoryview(bytearray(_BLOCK))
    return stage


class _Digest:
    """SHA-256 (and optionally the zip CRC-32) of one member, computed by background jobs.

    ``hashlib`` and ``zlib`` release the GIL on large buffers, so the cores work at once.
    A member's jobs run in order (each waits for the previous); two members can be hashed
    at the same time.
    """

    def __init__(self, workers: ThreadPoolExecutor, crc: bool, jobs: list[Future[Any]]) -> None:
        self._h = hashlib.sha256()
        self._crc: int | None = 0 if crc else None
        self._workers = workers
        self._jobs = jobs  # the writer's, so that abort can settle them
        self._pending: Future[None] | None = None

    def update(self, views: list[memoryview]) -> None:
        """Hash buffers after those given before (at most one job in flight per member)."""
        if self._pending is not None:
            self._pending.result()
        self._pending = self._workers.submit(self.consume, views)
        self._jobs.append(self._pending)

    def consume(self, views: list[memoryview]) -> None:
        """Hash buffers now, on the calling thread."""
        for block in _blocks(views):
            self._h.update(block)
            if self._crc is not None:
                self._crc = zlib.crc32(block, self._crc)

    def result(self) -> tuple[str, int]:
        """``(sha256 hex digest, crc32)`` once every job is done."""
        if self._pending is not None:
            self._pending.result()
            self._pending = None
        return self._h.hexdigest(), self._crc or 0


def _view(buffer: bytes | bytearray | memoryview) -> memoryview:
    view = buffer if isinstance(buffer, memoryview) else memoryview(buffer)
    if view.format == "B" and view.ndim == 1 and view.c_contiguous:
        return view  # already bytes: a cast costs microseconds, and a forest has a thousand buffers
    return view.cast("B")


def byte_views(buffers: bytes | bytearray | memoryview | list[Any]) -> list[memoryview]:
    """1-D byte views of a buffer or of a list of buffers (no copies)."""
    if isinstance(buffers, (bytes, bytearray, memoryview)):
        return [_view(buffers)]
    return [_view(b) for b in buffers]


def _groups(views: list[memoryview], limit: int) -> Iterator[list[memoryview]]:
    """Consecutive runs of ``views`` of at most ``limit`` bytes (large buffers are split)."""
    group: list[memoryview] = []
    size = 0
    for view in views:
        for start in range(0, max(view.nbytes, 1), limit):
            piece = view[start : start + limit]
            if group and size + piece.nbytes > limit:
                yield group
                group, size = [], 0
            group.append(piece)
            size += piece.nbytes
    if group:
        yield group


@dataclass
class _Member:
    size: int
    digest: _Digest
    #: Where the member was written (the target's handle).
    placed: Any
    record: WrittenMember | None = None


class ArtifactWriter:
    """Write an artifact to ``path`` atomically.

    Use as a context manager: members written with :meth:`add` or :meth:`open_member`,
    then :meth:`commit` with the manifest bytes. Leaving the block without committing,
    or with an exception, removes every temporary file.
    """

    def __init__(self, path: str | os.PathLike[str], *, overwrite: bool = False,
                 progress: ProgressCallback | None = None, writeback: bool = False,
                 storage_options: Mapping[str, Any] | None = None) -> None:
        self.overwrite = overwrite
        self._written: dict[str, _Member] = {}
        self._progress = progress
        self._committed = False
        self._early_sync: Future[object] | None = None
        self._target: ZipTarget | DirTarget
        #: A remote target (an fsspec URL): streamed to the store, published at commit (see remote_write).
        self._remote: Any = None
        if is_url(path):
            from modelsafe.artifact.remote_write import remote_target

            self._remote = self._target = remote_target(resolve(path, storage_options), overwrite)  # type: ignore[assignment]
            self.path = self._remote.path
            self.single_file = self._remote.single_file
        else:
            self._init_local(Path(path), writeback)
        #: Streamed members' chunks: two members can be hashed at once (each in order).
        self._hashing = pool("hash", 2)
        #: Whole members (add), one after the other: while the caller writes them and then
        #: goes on (a save runs its sample), one core hashes and the other stays the caller's.
        self._hashing_whole = pool("hash-whole", 1)
        #: The early fsync (start_sync).
        self._io = pool("sync", 1)
        #: Every job this writer submitted (abort settles them; the pools are shared).
        self._jobs: list[Future[Any]] = []

    def _init_local(self, path: Path, writeback: bool) -> None:
        self.path = path
        self.single_file = is_single_file(self.path)
        check_target(self.path, self.overwrite)
        parent = self.path.parent
        if not parent.is_dir():
            raise SaveError(
                f"Cannot save to {str(self.path)!r}: the folder {str(parent)!r} does not exist. "
                "Create it first (os.makedirs) or choose another path.",
                path=str(self.path),
            )
        #: Start the disk write of members while they are written (see modelsafe.artifact.targets.Writeback).
        writeback = writeback and hasattr(os, "posix_fadvise")
        prefix = f".{self.path.name}.tmp-"
        if self.single_file:
            fd, tmp = tempfile.mkstemp(prefix=prefix, dir=parent)
            self._tmp = Path(tmp)
            self._target = ZipTarget(fd, writeback)
        else:
            self._tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
            self._target = DirTarget(self._tmp, writeback)

    # -- context management ---------------------------------------------------------
    def __enter__(self) -> "ArtifactWriter":
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if not self._committed:
            self.abort()

    def abort(self) -> None:
        """Remove every temporary file. Safe to call more than once."""
        # Queued writes not started are dropped, running ones finish (their errors are
        # dropped too: the save already failed, and its own error is the one to show).
        settle(self._jobs)
        self._target.release()
        if self._remote is not None:
            self._remote.abort()  # nothing becomes visible at the target
            return
        if self._tmp.is_dir():
            shutil.rmtree(self._tmp, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                self._tmp.unlink()

    # -- members --------------------------------------------------------------------
    @property
    def members(self) -> dict[str, WrittenMember]:
        """Every member written so far, with its size and SHA-256 (waits for pending digests)."""
        for name, member in self._written.items():
            if member.record is None:
                member.record = WrittenMember(name, member.size, member.digest.result()[0])
        return {name: member.record for name, member in self._written.items()}  # type: ignore[misc]

    def add(self, name: str, buffers: bytes | bytearray | memoryview | Iterable[bytes | bytearray | memoryview],
            *, size: int | None = None) -> None:
        """Write one member from a buffer or a list of buffers; its digest is computed meanwhile.

        The buffers are written in place with one ``writev`` (a forest's node arrays go to
        disk straight from the model, never copied together) and hashed by a background job:
        they must not change until :meth:`commit`. Any other iterable of buffers is streamed,
        as with :meth:`open_member` (``size``, if known, picks the zip form).
        """
        with contextlib.suppress(TypeError):  # any buffer (a numpy array) is one, never iterated item by item
            buffers = buffers if isinstance(buffers, list) else memoryview(buffers)  # type: ignore[arg-type]
        if not isinstance(buffers, (bytes, bytearray, memoryview, list)):
            with self.open_member(name, size=size) as out:
                for buffer in buffers:
                    out.write(buffer)
            return
        views = byte_views(buffers)
        with self._open(name, sum(view.nbytes for view in views), self._hashing_whole) as out:
            out.write_pieces(views)

    def write(self, name: str, buffers: bytes | bytearray | memoryview | Iterable[bytes | bytearray | memoryview],
              *, size: int | None = None) -> WrittenMember:
        """Write one member (see :meth:`add`) and return its record."""
        self.add(name, buffers, size=size)
        return self.members[name]

    @contextlib.contextmanager
    def open_member(self, name: str, *, size: int | None = None) -> Iterator["_MemberStream"]:
        """Open a member for streaming writes. ``size`` (if known) picks the zip64 form."""
        with self._open(name, size, self._hashing) as stream:
            yield stream

    @contextlib.contextmanager
    def _open(self, name: str, size: int | None, workers: ThreadPoolExecutor) -> Iterator["_MemberStream"]:
        """A new member, hashed by jobs on ``workers``; recorded once the block ends without error."""
        check_member_name(name)
        if name == MANIFEST_NAME or name in self._written:
            raise SaveError(f"Member {name!r} was written twice; this is a bug in the flavor that wrote it.",
                            member=name)
        digest = _Digest(workers, self._target.crc, self._jobs)
        handle = self._target.begin(name, size)
        if self._remote is not None:
            handle.digest = digest  # a streamed zip writes the CRC-32 right after the data
        stream = _MemberStream(self, handle, digest)
        try:
            yield stream
        finally:
            self._target.end(handle)
        self._written[name] = _Member(stream.size, digest, handle)

    def _write(self, handle: Any, views: list[memoryview]) -> None:
        """Write buffers in calls of at most _WRITE_GROUP bytes (the write-back and progress follow each)."""
        for group in _groups(views, _WRITE_GROUP):
            n = self._target.write(handle, group)
            if self._progress is not None:
                self._progress(n)

    # -- finishing ------------------------------------------------------------------
    def start_sync(self) -> None:
        """Start writing what was written so far to disk, on a background thread.

        Call it between members, before other work (the sample run): the disk write then
        overlaps that work, and :meth:`commit`'s fsync has only the rest to wait for.
        """
        if self._early_sync is None:
            self._early_sync = self._io.submit(self._target.syncer())
            self._jobs.append(self._early_sync)

    def _join_sync(self) -> None:
        """Wait for :meth:`start_sync`; raise its error (a later fsync may not report it again)."""
        sync, self._early_sync = self._early_sync, None
        if sync is not None:
            sync.result()

    def commit(self, manifest: bytes) -> Path:
        """Write the manifest, fsync, and atomically move the artifact to ``path``."""
        self._join_sync()
        for member in self._written.values():  # every digest is known now
            self._target.finish(member.placed, member.size, member.digest.result()[1])
        handle = self._target.begin(MANIFEST_NAME, len(manifest))
        self._target.write(handle, [memoryview(manifest)])
        self._target.end(handle)
        self._target.finish(handle, len(manifest), zlib.crc32(manifest))
        self._target.close()  # the zip directory; every byte fsynced
        self._target.release()
        if self._remote is not None:
            self._remote.publish()  # the upload completes: the artifact appears whole
            self._committed = True
            return self.path
        check_target(self.path, self.overwrite)  # the target may have appeared meanwhile
        replace_target(self._tmp, self.path)
        fsync_directory(self.path.parent)
        self._committed = True
        return self.path


class _MemberStream:
    """A write-only stream for one member, hashed as it passes (see ArtifactWriter.open_member)."""

    def __init__(self, writer: ArtifactWriter, handle: Any, digest: _Digest) -> None:
        self._writer = writer
        self._handle = handle
        self._digest = digest
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data).cast("B")
        for start in range(0, len(view), CHUNK):
            self.write_pieces([view[start : start + CHUNK]])
        return len(view)

    def write_pieces(self, pieces: list[bytes | bytearray | memoryview]) -> None:
        """Write buffers in order, hashed by one background job (they must not change until commit)."""
        views = byte_views(pieces)
        self._digest.update(views)
        self._writer._write(self._handle, views)
        self.size += sum(view.nbytes for view in views)
