"""One checkpoint directory as a Checkpointer uses it: writer lock, index updates, retention, choosing.

Only the process holding the directory's writer lock (an ``flock`` the operating system
drops when the process dies, SIGKILL included) writes checkpoints, rewrites the index or
removes temporaries; any process may read. Index updates of Checkpointers in one process
that share a directory are serialized by one re-entrant lock per directory.
"""

from __future__ import annotations

import contextlib
import operator
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

from modelsafe.checkpoints import index as idx
from modelsafe.errors import ArtifactWriteError, FormatError, SaveError

_ERRNO_FULL = (27, 28, 122)  # EFBIG, ENOSPC, EDQUOT


@dataclass(frozen=True)
class Retention:
    """Which checkpoints to keep: the best ``keep_best`` by ``monitor``/``mode`` and the last ``keep_last``."""

    monitor: str | None
    mode: str
    keep_best: int
    keep_last: int


class DirectoryLock:
    """An exclusive ``flock`` on the directory's lock file, shared by every Checkpointer of this process.

    Where ``fcntl`` is missing (Windows) locking is skipped.
    """

    _held: dict[str, tuple[int, int]] = {}
    _guard = threading.Lock()
    _index_locks: dict[str, threading.RLock] = {}
    #: The last sequence number a Checkpointer of this process reserved in each directory.
    reserved: dict[str, int] = {}

    def __init__(self, directory: Path) -> None:
        self.path = directory / idx.LOCK_NAME
        self.key = os.path.realpath(directory)
        self.held = False
        with self._guard:
            #: Serializes index updates of this process's Checkpointers that share the directory.
            self.index_lock = self._index_locks.setdefault(self.key, threading.RLock())

    def acquire(self) -> bool:
        """Take the lock without waiting; True when this process holds it (now or already)."""
        if self.held:
            return True
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            self.held = True
            return True
        with self._guard:
            fd, count = self._held.get(self.key, (-1, 0))
            if count == 0:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)
                    return False
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, str(os.getpid()).encode(), 0)
            self._held[self.key] = (fd, count + 1)
            self.held = True
            return True

    @property
    def only_holder(self) -> bool:
        """True when no other Checkpointer of this process holds it (so none has a write in flight)."""
        return self._held.get(self.key, (-1, 0))[1] == 1

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        with self._guard:
            fd, count = self._held.get(self.key, (-1, 0))
            if count <= 1:
                self._held.pop(self.key, None)
                if fd >= 0:
                    os.close(fd)  # closing the descriptor drops the flock
            else:
                self._held[self.key] = (fd, count - 1)

    def holder(self) -> str:
        """The pid recorded by the process holding the lock, for messages."""
        try:
            pid = self.path.read_text().strip()
        except OSError:
            pid = ""
        return f"process {pid}" if pid.isdigit() else "another process"


class CheckpointDirectory:
    """The checkpoints in ``path``: read by anyone, written by the holder of the writer lock."""

    def __init__(self, path: Path, retention: Retention) -> None:
        self.path = path
        self.retention = retention
        self.lock = DirectoryLock(path)
        self._deleting: threading.Thread | None = None

    # -- reading ------------------------------------------------------------------------
    def _read(self, *, clean: bool = False) -> tuple[idx.Index, idx.Repair]:
        try:
            index = idx.read_index(self.path)
        except idx.IndexDamaged as exc:
            warnings.warn(f"{exc}; it is rebuilt from the checkpoint files themselves.", RuntimeWarning, stacklevel=5)
            index = None
        return idx.reconcile(self.path, index, clean=clean)

    def index(self) -> idx.Index:
        """The index as it stands (an empty one when the directory does not exist)."""
        if not self.path.is_dir():
            return idx.Index()
        with self.lock.index_lock:
            return self._read()[0]

    def entries(self) -> list[idx.Entry]:
        """Every checkpoint on disk, in save order."""
        return sorted(self.index().entries, key=lambda e: e.seq)

    def ranking(self, index: idx.Index) -> tuple[str | None, str]:
        """``(monitor, mode)``: this Checkpointer's, or when it has no monitor, the one the index records."""
        if self.retention.monitor is not None or index.monitor is None:
            return self.retention.monitor, self.retention.mode
        return index.monitor, index.mode

    def best(self) -> idx.Entry | None:
        """The checkpoint with the best finite monitored value, or None."""
        index = self.index()
        return idx.best(index.entries, *self.ranking(index))

    def pick(self, which: str | int) -> idx.Entry:
        """The checkpoint ``which`` names: ``"latest"``, ``"best"`` or a step (its newest save)."""
        index = self.index()
        entries = sorted(index.entries, key=lambda e: e.seq)
        if not entries:
            state = "does not exist" if not self.path.exists() else "holds no checkpoints"
            raise FormatError(
                f"No checkpoint to restore: {str(self.path)!r} {state}. Nothing can be restored from it. Check the "
                "directory (it is the one given to Checkpointer), or start training from scratch and save there "
                "first.", path=str(self.path), which=which)
        if which == "latest":
            return entries[-1]
        if which == "best":
            return self._best(entries, *self.ranking(index))
        if isinstance(which, (str, bool)):
            raise ValueError(f"Invalid `which`: expected 'latest', 'best' or a step number. Received: which={which!r}")
        step = operator.index(which)
        matching = [e for e in entries if e.step == step]
        if not matching:
            steps = sorted({e.step for e in entries})
            raise FormatError(
                f"No checkpoint of step {step} in {str(self.path)!r}; the steps on disk are {steps}. Older "
                "checkpoints are deleted as keep_best/keep_last say. Pick one of those steps, 'latest' or 'best'.",
                path=str(self.path), which=step, steps=steps)
        return matching[-1]

    def _best(self, entries: list[idx.Entry], monitor: str | None, mode: str) -> idx.Entry:
        if monitor is None:
            raise FormatError(
                f"No checkpoint in {str(self.path)!r} can be 'best': 'best' needs a metric to rank by, and neither "
                "this Checkpointer nor the directory's index names one (they were saved with monitor=None). Pass "
                "monitor='<metric name>' (and mode) to Checkpointer, or restore which='latest' or a step.",
                path=str(self.path), monitor=None, which="best")
        found = idx.best(entries, monitor, mode)
        if found is None:
            names = sorted({k for e in entries for k in e.metrics})
            raise FormatError(
                f"No checkpoint in {str(self.path)!r} has a finite {monitor!r} metric (metrics recorded: "
                f"{names or 'none'}), so none is 'best'. Restore which='latest', or pass monitor= one of the "
                "recorded metrics.", path=str(self.path), monitor=monitor)
        return found

    # -- writing ------------------------------------------------------------------------
    def repair_if_free(self) -> None:
        """At start-up: when no process writes here, remove a crash's leftovers and fix the index."""
        if self.path.is_dir() and self.lock.acquire():
            try:
                self._repair()
            finally:
                self.lock.release()

    def _repair(self) -> None:
        with self.lock.index_lock:
            index, repair = self._read(clean=True)
            if repair.adopted or repair.lost:
                idx.write_index(self.path, index)

    def take(self) -> None:
        """Create the directory and hold its writer lock (repairing it when first taken)."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ArtifactWriteError(f"Cannot create the checkpoint directory {str(self.path)!r}: {exc}. No checkpoint "
                                     "can be written there. Choose a writable directory.", path=str(self.path),
                                     errno=exc.errno, strerror=exc.strerror, filename=exc.filename) from exc
        if self.lock.held:
            return
        if not self.lock.acquire():
            raise SaveError(
                f"{self.lock.holder()} is writing checkpoints to {str(self.path)!r}. Two writers would delete each "
                "other's checkpoints and temporaries. Use another directory for this run, or stop the other one "
                "(its lock is released when it ends or calls close()).", path=str(self.path))
        if self.lock.only_holder:
            self._repair()

    def release(self) -> None:
        self.finish_deleting()
        self.lock.release()

    def reserve(self, step: int, metrics: Mapping[str, float]) -> idx.Entry:
        """The entry (sequence number, file name, time) of a checkpoint about to be written."""
        with self.lock.index_lock:
            index = self._read()[0]
            seq = max(index.next_seq, DirectoryLock.reserved.get(self.lock.key, 0) + 1)
            DirectoryLock.reserved[self.lock.key] = seq
            taken = [e.file for e in index.entries] + [p.name for p in self.path.iterdir()]
            name = idx.artifact_name(step, seq, taken)
        return idx.Entry(step=step, seq=seq, file=name, time=idx.now(), metrics=dict(metrics))

    def sized(self, entry: idx.Entry) -> idx.Entry:
        return idx.Entry(entry.step, entry.seq, entry.file, entry.time, entry.metrics,
                         (self.path / entry.file).stat().st_size)

    def retain(self, index: idx.Index, entry: idx.Entry) -> tuple[idx.Index, list[idx.Entry]]:
        """``index`` listing the written checkpoint ``entry``, less what retention drops; and the dropped."""
        r = self.retention
        index = index.without({entry.seq}).with_entry(entry)
        monitor, mode = self.ranking(index)  # recorded, so that Checkpointer(directory).best works anywhere
        index = index.ranked_by(monitor, mode)
        keep = {e.seq for e in idx.retained(list(index.entries), monitor=monitor, mode=mode,
                                             keep_best=r.keep_best, keep_last=r.keep_last)}
        dropped = [e for e in index.entries if e.seq not in keep]
        return index.without({e.seq for e in dropped}), dropped

    def commit(self, entry: idx.Entry) -> None:
        """List the written checkpoint in the index (atomically), then delete what retention drops."""
        with self.lock.index_lock:
            index, dropped = self.retain(self._read()[0], self.sized(entry))
            idx.write_index(self.path, index)
        self.delete(dropped)

    def delete(self, dropped: list[idx.Entry]) -> None:
        """Start deleting the checkpoints retention dropped (the index no longer lists them)."""
        if dropped:
            self.finish_deleting()
            self._deleting = threading.Thread(target=self._delete, args=([self.path / e.file for e in dropped],),
                                              name="modelsafe-checkpoint-retention")
            self._deleting.start()

    @staticmethod
    def _delete(paths: list[Path]) -> None:
        """Delete checkpoints the index no longer lists (freeing GiBs takes a while: off the training loop).

        A crash before they are gone leaves complete artifacts that the next start-up adopts
        again and the next save deletes.
        """
        for path in paths:
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                warnings.warn(f"Could not delete the old checkpoint {path.name}: {exc}. It is no longer listed; "
                              "delete it by hand to free the space.", RuntimeWarning, stacklevel=2)

    def finish_deleting(self) -> None:
        """Wait until the checkpoints retention dropped are deleted."""
        if self._deleting is not None:
            self._deleting.join()
            self._deleting = None

    @contextlib.contextmanager
    def failures(self, entry: idx.Entry, *, background: bool = False) -> Iterator[None]:
        """Turn an OS error while writing ``entry`` into an ArtifactWriteError (a SaveError and an OSError)
        saying the older checkpoints are intact."""
        try:
            yield
        except OSError as exc:
            entries = self.entries()
            newest = entries[-1] if entries else None
            intact = (f"the {len(entries)} checkpoint(s) already there are intact (latest: step {newest.step}, "
                      f"{newest.file})" if newest else "no earlier checkpoint exists")
            fix = ("Free disk space (or raise the quota / file-size limit)" if exc.errno in _ERRNO_FULL else
                   "Fix the directory's permissions or choose a writable directory")
            where = " (in the background)" if background else ""
            raise ArtifactWriteError(
                f"Checkpoint step {entry.step} could not be written{where} to {str(self.path / entry.file)!r}: "
                f"{exc.strerror or exc} (errno {exc.errno}). Nothing was half-written: its temporary file was removed "
                f"and {intact}. {fix}, then save again.", path=str(self.path / entry.file), step=entry.step,
                errno=exc.errno, strerror=exc.strerror, filename=exc.filename,
                latest=None if newest is None else newest.step, background=background) from exc
