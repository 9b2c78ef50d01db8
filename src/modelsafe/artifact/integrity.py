"""Integrity: every member's size and SHA-256 are checked before anything is deserialized.

Hashes are computed while members are written (see :mod:`modelsafe.artifact.reader`); here they
are checked on read. Members are hashed in parallel (``hashlib`` releases the GIL), each
read with ``pread`` through the reader's own file descriptor into one reusable buffer, so
checking costs one read of the data, and no memory map of the data stays resident.

The verified-hash cache (:mod:`.hash_cache`) lets a load of an unchanged large artifact skip
re-hashing; :func:`modelsafe.verify` never uses it.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from concurrent.futures import Future
from typing import Any, Callable, Collection, Mapping

from modelsafe.artifact import hash_cache
from modelsafe.artifact.manifest import MemberRecord
from modelsafe.artifact.reader import (
    CHUNK,
    MANIFEST_NAME,
    ArtifactReader,
    ProgressCallback,
    check_member_name,
)
from modelsafe.artifact.threads import pool, settle
from modelsafe.errors import IntegrityError

#: Members at least this large are checked by whichever thread is free (the worker, or the
#: caller once its own steps are done); smaller ones by the caller at once.
_PARALLEL_THRESHOLD = 256 << 10
#: Threads that check members beside the caller: two threads hash, as a save lays members
#: out for (modelsafe.flavors._pickled.BUFFER_SHARES); a third would only make the caller's
#: audit wait for a core on a two-core machine.
_WORKERS = 1


def sha256_of(view: memoryview, progress: ProgressCallback | None = None) -> str:
    if progress is None:
        return hashlib.sha256(view).hexdigest()  # one call: the GIL is released once, for all of it
    h = hashlib.sha256()
    for start in range(0, len(view), CHUNK):
        chunk = view[start : start + CHUNK]
        h.update(chunk)
        if progress is not None:
            progress(len(chunk))
    return h.hexdigest()


def _sha256_pread(fd: int, offset: int, size: int, progress: ProgressCallback | None = None) -> str:
    """SHA-256 of ``size`` bytes at ``offset`` of ``fd``, read in CHUNK pieces into one buffer."""
    h = hashlib.sha256()
    buffer = bytearray(min(CHUNK, size))
    view = memoryview(buffer)
    done = 0
    while done < size:
        want = min(len(buffer), size - done)
        n = os.preadv(fd, [view[:want]], offset + done)
        if n <= 0:
            break  # truncated: the digest will not match
        h.update(view[:n])
        done += n
        if progress is not None:
            progress(n)
    return h.hexdigest()


def _read_private(fd: int, offset: int, size: int) -> Any:
    """The ``size`` bytes at ``offset`` of ``fd``, read into a new writable buffer.

    The buffer is not zero-filled first (``bytearray(size)`` would touch every page while
    holding the GIL): ``pread`` fills it, with the GIL released.
    """
    import numpy as np

    buffer = np.empty(size, dtype=np.uint8)
    view = memoryview(buffer)
    done = 0
    while done < size:
        n = os.preadv(fd, [view[done:]], offset + done)
        if n <= 0:
            break  # truncated: the digest will not match
        done += n
    return buffer


def _check_size(reader: ArtifactReader, name: str, record: MemberRecord) -> int:
    size = reader.size(name)
    if size != record.size:
        raise IntegrityError(
            f"Member {name!r} is {size} bytes but the manifest records {record.size}: the file was "
            "truncated or changed after saving (corruption or tampering). Copy the artifact again "
            "from its source, or re-export the model.",
            member=name, expected=record.size, actual=size,
        )
    return size


def check_member(reader: ArtifactReader, name: str, record: MemberRecord,
                 progress: ProgressCallback | None = None, keep: bool = False,
                 located: tuple[int, int] | None = None, copy: Any = None,
                 on_read: Callable[[], None] | None = None) -> None:
    """Raise IntegrityError unless member ``name`` has the recorded size and hash.

    With ``keep``, the member is read whole into a private buffer (or ``copy``, when it was
    read ahead by :func:`_read_kept`), that buffer is hashed, and it is handed to
    ``reader.copies`` once it matched (see ArtifactReader.private). ``located`` is the
    member's place (see ArtifactReader.locate), when already known. ``on_read`` is called
    once the bytes are read, before the hash.
    """
    size = _check_size(reader, name, record)
    fetch = getattr(reader, "fetch", None)
    if fetch is not None:  # a remote reader: downloaded once, hashed as it arrives (see remote_read)
        if on_read is not None:
            on_read()
        _check_digest(name, record, fetch(name, progress))
        if keep:
            reader.copies[name] = reader.take(name)  # type: ignore[attr-defined]
        return
    located = located or _locate(reader, name)
    if keep and located is not None:
        if copy is None:
            copy = _read_private(*located, size)
        if on_read is not None:
            on_read()
        actual = sha256_of(memoryview(copy), progress)
    else:
        if on_read is not None:  # read and hashed piece by piece: no long read comes first
            on_read()
        if located is not None and size >= CHUNK:  # large: read with pread, nothing stays mapped
            copy, actual = None, _sha256_pread(*located, size, progress)
        else:
            copy, actual = None, sha256_of(reader.view(name), progress)
    _check_digest(name, record, actual)
    if copy is not None:
        reader.copies[name] = copy


def _keep_unchecked(reader: ArtifactReader, name: str, record: MemberRecord, copy: Any = None) -> None:
    """Read a member of an already verified, unchanged artifact into a private buffer
    (unless ``copy`` holds it, read ahead by :func:`_read_kept`)."""
    size = _check_size(reader, name, record)
    located = _locate(reader, name)
    if copy is None and located is not None:
        copy = _read_private(*located, size)
    if copy is not None:
        reader.copies[name] = copy


def _read_kept(reader: ArtifactReader, name: str, record: MemberRecord) -> Any:
    """Member ``name`` read into a private buffer, or None if it has not its recorded size
    (its check will say so) or cannot be located."""
    located = _locate(reader, name)
    if located is None or reader.size(name) != record.size:
        return None
    return _read_private(*located, record.size)


def _locate(reader: ArtifactReader, name: str) -> tuple[int, int] | None:
    return reader.locate(name) if hasattr(os, "preadv") else None


def _check_digest(name: str, record: MemberRecord, actual: str) -> None:
    if actual != record.sha256:
        raise IntegrityError(
            f"Member {name!r} has sha256 {_short(actual)} but the manifest records "
            f"{_short(record.sha256)}: the file changed after saving (corruption or tampering). "
            "Re-export the model from its source.",
            member=name, expected=record.sha256, actual=actual,
        )


def check_structure(reader: ArtifactReader, members: Mapping[str, MemberRecord]) -> None:
    """Every recorded member is present and safely named; no unrecorded member exists."""
    for name in members:
        check_member_name(name)
        if not reader.has(name):
            raise IntegrityError(
                f"Member {name!r} is missing from {str(reader.path)!r}: the manifest lists it, so the "
                "artifact is incomplete (a partial copy or a tampered file). Copy the artifact again "
                "from its source, or re-export the model.",
                member=name, expected="present", actual="missing",
            )
    extra = sorted(set(reader.names()) - set(members) - {MANIFEST_NAME})
    if extra:
        raise IntegrityError(
            f"{str(reader.path)!r} holds members the manifest does not record: {', '.join(extra[:10])}. "
            "Files were added after saving (tampering, or a copy merged into the folder). Remove them "
            "or re-export the model.",
            member=extra[0], expected="absent", actual="present",
        )


class MemberChecks:
    """Integrity of every member: small ones checked at once, large ones on a background thread.

    Hashing large members overlaps the work that does not need them (the audit of a pickle
    stream reads only the stream). :meth:`wait` blocks until one member is verified, so no
    byte of a member is used before its hash matched; :meth:`wait_all` joins every check
    and raises the first IntegrityError. Both check a member that no thread has started on
    the calling thread, so the caller hashes too once it has nothing else to do, and never
    waits idle while a member is queued. Use :func:`check_members` for a blocking check.

    Members named in ``keep`` (those a flavor copies whole, see ``Flavor.copied_members``)
    are read once into private buffers that are hashed and then used: the bytes used are
    the bytes checked. In an artifact the cache knows, they are still read in the background.
    """

    def __init__(self, reader: ArtifactReader, members: Mapping[str, MemberRecord],
                 progress: ProgressCallback | None = None, keep: Collection[str] = (), cache: bool = True) -> None:
        self._reader = reader
        self._members = members
        self._pending: dict[str, Future[None]] = {}
        self._jobs: dict[str, functools.partial[None]] = {}
        self._read: list[threading.Event] = []
        #: Members whose check no worker will run: this thread runs it, or close() cancels it.
        self._here: set[str] = set()
        check_structure(reader, members)
        self._cache_key, self._changed_ns = hash_cache.cache_key(reader, members) if cache else (None, 0)
        big = [n for n, r in members.items() if r.size >= _PARALLEL_THRESHOLD]
        prefetch = getattr(reader, "prefetch", None)
        if prefetch is not None:  # a remote reader: small members downloaded concurrently (see remote_read)
            prefetch([n for n in members if n not in big])
        try:
            if self._cache_key is not None and hash_cache.is_verified(self._cache_key):
                self._cache_key = None  # verified before, and unchanged since
                self._submit({n: functools.partial(_keep_unchecked, reader, n, members[n]) for n in big if n in keep})
            else:
                # Members are located here, not on the workers: a worker that needs the GIL while
                # this thread audits waits for it, up to the interpreter's switch interval.
                self._submit({n: functools.partial(check_member, reader, n, members[n], progress=progress,
                                                   keep=n in keep, located=_locate(reader, n)) for n in big})
                for name in members:  # while the worker reads the first large member
                    if name not in big:
                        check_member(reader, name, members[name], progress)
            self._wait_read()
        except BaseException:  # a small member failed: the worker must not go on with the others
            self.close()
            raise

    def _submit(self, jobs: dict[str, functools.partial[None]]) -> None:
        """Queue ``jobs`` for the worker; read ahead the first one it will not start at once.

        Reading a member ahead here, with the GIL released, lets the worker read its first
        one meanwhile: see :meth:`_wait_read`.
        """
        if not jobs:
            return
        workers = pool("verify", _WORKERS)
        self._read = [threading.Event() for _ in jobs]
        self._jobs = jobs
        self._pending = {n: workers.submit(_signalling, job, event) for event, (n, job) in zip(self._read, jobs.items())}
        ahead = list(jobs)[_WORKERS:_WORKERS + 1]
        if ahead:
            self._read_ahead(ahead[0])

    def _wait_read(self) -> None:
        """Return once the worker has read its first member.

        From then on it hashes, and needs the GIL only briefly, while this thread's next
        steps (the audit) hold it for long stretches: a worker that needed the GIL then
        would wait for them, up to the interpreter's switch interval.
        """
        for event in self._read[:_WORKERS]:  # later ones start when a thread is free
            event.wait(0.05)

    def _read_ahead(self, name: str) -> None:
        """Read queued member ``name`` now, if its check keeps a copy; this thread hashes it later."""
        job = self._jobs[name]
        keeps = job.func is _keep_unchecked or job.keywords.get("keep", False)
        if keeps and self._pending[name].cancel():
            self._jobs[name] = functools.partial(job, copy=_read_kept(self._reader, name, self._members[name]))
            self._pending[name] = Future()  # queued for this thread: see _run_if_queued
            self._here.add(name)

    def wait(self, name: str) -> None:
        """Return once member ``name`` is verified (raise IntegrityError if it is not intact).

        While another thread checks it, this one checks queued members, in order, instead of
        waiting idle (the worker would otherwise check them one after the other).
        """
        if name not in self._pending:
            return
        future = self._run_if_queued(name)
        for other in list(self._pending):
            if future.done():
                break
            self._run_if_queued(other)
        future.result()

    def wait_all(self) -> None:
        """Check every member still queued here, join the others; raise the first IntegrityError;
        remember a verified large artifact."""
        try:
            for name in list(self._pending):
                self._run_if_queued(name)
            for future in self._pending.values():
                future.result()
            finished = getattr(self._reader, "finished", None)
            if finished is not None:  # a remote reader: refuse an object that changed while being read
                finished()
        finally:
            self.close()
        if self._cache_key is not None:
            hash_cache.record(self._cache_key, self._changed_ns, self._reader)
        self._cache_key = None

    def close(self) -> None:
        """Stop: cancel checks not started, wait for running ones (errors are dropped)."""
        for name in self._here:
            future = self._pending[name]
            if future.cancel():
                future.set_running_or_notify_cancel()  # as a worker does: wait() counts it as done only then
        settle(self._pending.values())

    def _run_if_queued(self, name: str) -> Future[None]:
        """The check of ``name``, run here and now if no thread has started it."""
        future = self._pending[name]
        if future.cancel():  # still queued: the worker will skip it
            future = self._pending[name] = Future()
            future.set_running_or_notify_cancel()
            try:
                future.set_result(self._jobs[name]())
            except BaseException as exc:  # kept for result(), as a worker's would be
                future.set_exception(exc)
        return future


def _signalling(job: functools.partial[None], read: threading.Event) -> None:
    """Run ``job`` on the worker; set ``read`` once its member is read (see MemberChecks._wait_read)."""
    try:
        if job.func is check_member:
            job(on_read=read.set)
        else:
            job()  # a read of a verified member: nothing to wait for after it
    finally:
        read.set()


def check_members(reader: ArtifactReader, members: Mapping[str, MemberRecord],
                  progress: ProgressCallback | None = None) -> None:
    """Check every recorded member, and that the artifact holds no unrecorded member.

    ``progress(n_bytes)`` is called as data is hashed (for a progress bar).
    """
    MemberChecks(reader, members, progress).wait_all()


def _short(digest: str) -> str:
    return f"{digest[:8]}…{digest[-4:]}" if len(digest) > 12 else digest
