"""A checkpoint directory on a remote store (``Checkpointer("s3://bucket/run")``).

The layout is the local one (:mod:`modelsafe.checkpoints.index`): one artifact per checkpoint
and the index ``checkpoints.json`` under one prefix. What differs is how writers stay out of
each other's way, since an object store has no ``flock`` and no rename:

* **Artifacts** are streamed uploads that appear only once complete (a multipart upload,
  see :mod:`modelsafe.artifact.remote_write`), created with ``If-None-Match: *``: two
  writers can never replace each other's checkpoint, and a killed save leaves no object.
* **The index** is replaced only by a conditional write: ``If-Match`` on the ETag of the
  version read (``If-None-Match: *`` when there is none yet). A writer whose write was
  refused (another writer's came first) reads the new version and applies its change to
  it again. Sequence numbers are reserved in the index the same way before an artifact is
  written, so two writers never share one. Of two concurrent writers both updates survive;
  the index is never a mix of the two, nor does one undo the other.
* **Retention** deletes old checkpoints only once the index that no longer lists them is
  in place.
* **After a crash**, a complete artifact the index does not list yet (the process died
  between the upload and the index write) is adopted: every read lists the prefix (one
  request) and reads such an artifact's manifest; the next save writes it into the index.

Stores other than S3 have no conditional write in modelsafe: there the index is checked
just before it is replaced, and a warning says that a concurrent writer could slip in.
Several processes may write one remote directory; in distributed training, save from rank
0 only all the same (every writer applies its own retention to all the checkpoints).
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from modelsafe.artifact.location import RemotePath, is_url, resolve
from modelsafe.checkpoints import index as idx
from modelsafe.checkpoints.directory import CheckpointDirectory, Retention
from modelsafe.errors import FormatError, IntegrityError, SaveError

__all__ = ["RemoteCheckpointDirectory", "directory_at"]

#: Conditional index writes tried before giving up (each refused one means another writer's went in).
_ATTEMPTS = 25


def directory_at(directory: Any, storage_options: Mapping[str, Any] | None, monitor: str | None, mode: str,
                 keep_best: int, keep_last: int) -> CheckpointDirectory:
    """The checkpoint directory ``directory`` names, with its retention: a local folder, or a prefix on a
    remote store (``storage_options`` are the store's)."""
    retention = Retention(monitor, mode, keep_best, keep_last)
    if is_url(directory):
        remote = resolve(directory, storage_options)
        assert isinstance(remote, RemotePath)
        if remote.read_only:
            raise SaveError(f"Cannot keep checkpoints in {remote.url!r}: {remote.scheme}:// is read-only in "
                            "modelsafe. Use a bucket (s3://, gs://, az://) or a local folder.",
                            path=remote.url, reason="read-only")
        return RemoteCheckpointDirectory(remote, retention)
    return CheckpointDirectory(Path(directory), retention)


class RemoteCheckpointDirectory(CheckpointDirectory):
    """The checkpoints under one prefix of a remote store (see the module docstring)."""

    def __init__(self, path: RemotePath, retention: Retention) -> None:  # noqa: D107 - no lock to take
        self.path = path  # type: ignore[assignment]
        self.retention = retention
        self._deleting = None
        self._index_object = path / idx.INDEX_NAME
        self._warned = False

    # -- reading ------------------------------------------------------------------------
    def _fetch(self) -> tuple[bytes | None, str | None]:
        """The index object's bytes and the ETag they are (None, None when there is none)."""
        from modelsafe.artifact.remote_object import RemoteObject

        for _ in range(3):  # replaced between the listing of its version and the read: read the new one
            self._index_object.fs.invalidate_cache(self._index_object.path)
            try:
                obj = RemoteObject(self._index_object)
            except FormatError as exc:
                if getattr(exc, "reason", None) == "not-found":
                    return None, None
                raise
            try:
                data = obj.fetch(0, obj.size)  # pinned to the ETag just listed (If-Match)
                obj.check_unchanged()
                return data, obj.etag
            except IntegrityError as exc:
                if getattr(exc, "reason", None) != "changed":
                    raise
            finally:
                obj.close()
        raise IntegrityError(f"{self._index_object.url!r} kept changing while it was read: writers are replacing it "
                             "continuously. Try again.", path=self._index_object.url, member=None, reason="changed")

    def _listing(self) -> dict[str, int]:
        """Every object directly under the prefix: name -> size (one listing, never from a cache)."""
        from modelsafe.artifact.storage_errors import storage_error

        fs, root = self.path.fs, self.path.path.rstrip("/") + "/"
        try:
            fs.invalidate_cache(self.path.path)
            found = fs.find(self.path.path, detail=True, withdirs=False, maxdepth=1)
        except FileNotFoundError:
            return {}
        except Exception as exc:
            raise storage_error(exc, self.path.url) from exc
        return {key[len(root):]: int(info.get("size", 0)) for key, info in found.items() if key.startswith(root)}

    def _state(self) -> tuple[idx.Index, bool, str | None, dict[str, int]]:
        """``(index, exists, etag, listing)``: the index reconciled with what the prefix holds."""
        data, etag = self._fetch()
        index = None
        if data is not None:
            try:
                index = idx.parse_index(data, self._index_object.url)
            except idx.IndexDamaged as exc:
                warnings.warn(f"{exc}; it is rebuilt from the checkpoint files themselves.", RuntimeWarning,
                              stacklevel=5)
        listing = self._listing()
        reconciled, _ = idx.reconcile(self.path, index, clean=False, listing=listing)  # type: ignore[arg-type]
        return reconciled, data is not None, etag, listing

    def index(self) -> idx.Index:
        """The index as it stands, with complete artifacts it does not list yet adopted."""
        return self._state()[0]

    # -- writing ------------------------------------------------------------------------
    def _update(self, change: Callable[[idx.Index], idx.Index]) -> tuple[idx.Index, idx.Index, dict[str, int]]:
        """Apply ``change`` to the index as it stands and write it, conditionally (see the module docstring);
        ``(index before, index written, listing)``."""
        from modelsafe.artifact.remote_upload import put_object

        for attempt in range(_ATTEMPTS):
            index, exists, etag, listing = self._state()
            new = change(index)
            if exists and etag is None:
                self._warn_unconditional()
            try:
                put_object(self._index_object, idx.index_bytes(new), if_none_match=not exists, if_match=etag)
                return index, new, listing
            except FileExistsError:  # another writer's update went in first: apply the change to that one
                time.sleep(random.uniform(0, 0.02 * 2 ** min(attempt, 6)))
        raise SaveError(
            f"The checkpoint index {self._index_object.url!r} changed {_ATTEMPTS} times while this Checkpointer "
            "tried to update it: other writers keep replacing it. The index is as they wrote it (a checkpoint "
            "already uploaded is adopted into it by the next save); save again.",
            path=self._index_object.url, reason="changed")

    def _warn_unconditional(self) -> None:
        if not self._warned:
            self._warned = True
            warnings.warn(f"{self.path.scheme}:// gives modelsafe no conditional write: the checkpoint index "
                          f"{self._index_object.url!r} is checked just before it is replaced, but two Checkpointers "
                          "writing there at the same moment could lose one update (exact on s3:// only).",
                          UserWarning, stacklevel=5)

    def repair_if_free(self) -> None:
        """Nothing to remove: an interrupted upload never became an object. (Orphans are adopted as read.)"""

    def take(self) -> None:
        """No lock to take: writers are kept apart by conditional writes."""

    def release(self) -> None:
        self.finish_deleting()

    def reserve(self, step: int, metrics: Mapping[str, float]) -> idx.Entry:
        """The entry of a checkpoint about to be written; its sequence number reserved in the index."""
        before, _, listing = self._update(lambda index: dataclasses.replace(index, next_seq=index.next_seq + 1))
        name = idx.artifact_name(step, before.next_seq, [e.file for e in before.entries] + list(listing))
        return idx.Entry(step=step, seq=before.next_seq, file=name, time=idx.now(), metrics=dict(metrics))

    def sized(self, entry: idx.Entry) -> idx.Entry:
        from modelsafe.artifact.storage_errors import storage_error

        target = self.path / entry.file
        try:
            target.fs.invalidate_cache(target.path)
            size = int(target.fs.info(target.path)["size"])
        except Exception as exc:
            raise storage_error(exc, target.url) from exc
        return dataclasses.replace(entry, size=size)

    def commit(self, entry: idx.Entry) -> None:
        """List the written checkpoint in the index (conditionally), then delete what retention drops."""
        written = self.sized(entry)
        dropped: list[idx.Entry] = []

        def change(index: idx.Index) -> idx.Index:
            kept, dropped[:] = self.retain(index, written)
            return kept

        self._update(change)
        self.delete(dropped)  # only now that the index without them is in place

    def _delete(self, paths: list[RemotePath]) -> None:  # type: ignore[override]
        """Delete checkpoints the index no longer lists (one request); a failure is a warning."""
        if not paths:
            return
        try:
            self.path.fs.rm([p.path for p in paths])
        except Exception as exc:  # noqa: BLE001 - the index is right; only storage is not yet freed
            names = ", ".join(p.name for p in paths)
            warnings.warn(f"Could not delete the old checkpoint(s) {names} from {self.path.url!r}: {exc}. They are "
                          "no longer listed; delete them by hand to free the space.", RuntimeWarning, stacklevel=2)

    @contextlib.contextmanager
    def failures(self, entry: idx.Entry, *, background: bool = False) -> Iterator[None]:
        """Store failures are SaveErrors already, saying that nothing was left at the target."""
        yield
