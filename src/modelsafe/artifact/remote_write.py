"""Writing an artifact to a remote store: streamed, hashed as it goes, visible only when complete.

A single-file artifact is one streaming upload: the zip is written front to back (each
member's size and CRC-32 in a data descriptor after its data, since a stream cannot patch
headers) and sent in parts while the members are still being written. On S3 it is a
multipart upload, parts sent concurrently, completed by :meth:`RemoteZipTarget.publish`:
only then does the object exist. An error aborts the upload, and nothing is left at the
target. Other stores get fsspec's uncommitted file (``autocommit=False``), committed or
discarded the same way.

``overwrite=False`` is a conditional write on S3 (``If-None-Match: *`` on the completing
request), so of two savers racing for one key exactly one wins. Other stores cannot make
the write conditional: the target is checked just before the commit, and a warning says
that a concurrent writer could still slip in.

A folder artifact is one object per member, uploaded as each member ends; the manifest is
written last, so a folder without its manifest is not an artifact, and ``load`` refuses it.
Replacing a folder (``overwrite=True``) first removes its manifest, and removes members the
new artifact does not have before writing the new manifest.
"""

from __future__ import annotations

import warnings
import zlib
from concurrent.futures import Future
from typing import Any, Callable

from modelsafe.artifact.location import RemotePath
from modelsafe.artifact.manifest import MANIFEST_NAME
from modelsafe.artifact.reader import SINGLE_FILE_SUFFIX
from modelsafe.artifact.remote_upload import (
    FileUpload,
    S3Upload,
    commit_upload,
    open_upload,
)
from modelsafe.artifact.storage_errors import classify, storage_error
from modelsafe.artifact.threads import pool, settle
from modelsafe.artifact.zipwrite import StoredZipWriter, ZipEntry
from modelsafe.errors import ModelsafeError, SaveError

__all__ = ["remote_target", "RemoteZipTarget", "RemoteDirTarget"]

#: Folder members whose upload is being completed at once (each may hold one part's memory).
_COMPLETING = 4


def _exists_error(url: str, racing: bool = False) -> SaveError:
    when = ("appeared while this save was running (another writer saved there first)" if racing
            else "already exists and overwrite=False")
    return SaveError(f"{url!r} {when}: saving would replace it, so nothing was written. Pass overwrite=True to "
                     "replace it, or choose a new path.", path=url, reason="exists")


def _warn_unconditional(remote: RemotePath) -> None:
    if not remote.is_s3:
        warnings.warn(f"{remote.scheme}:// cannot make a write conditional in modelsafe: {remote.url!r} was checked "
                      "just before the commit, but a writer saving there at the same moment could still replace it "
                      "(overwrite=False is exact on s3:// only).", UserWarning, stacklevel=4)


class _StreamedZip(StoredZipWriter):
    """The zip written front to back into an upload (data descriptors instead of patched headers)."""

    descriptors = True

    def __init__(self, sink: Callable[[list[memoryview]], None]) -> None:
        super().__init__(-1)
        self._sink = sink

    def write(self, views: list[memoryview]) -> int:
        self._sink(views)
        n = sum(view.nbytes for view in views)
        self.offset += n
        return n


class RemoteZipTarget:
    """A single-file artifact as one streaming upload (the target interface of ArtifactWriter)."""

    crc = True
    single_file = True

    def __init__(self, remote: RemotePath, overwrite: bool) -> None:
        self.path = remote
        self._overwrite = overwrite
        self._upload = open_upload(remote)
        self._zip = _StreamedZip(self._sink)

    def _sink(self, views: list[memoryview]) -> None:
        try:
            self._upload.write(views)
        except ModelsafeError:
            raise
        except Exception as exc:
            raise storage_error(exc, self.path.url, writing=True) from exc

    def begin(self, name: str, size: int | None) -> ZipEntry:
        entry = self._zip.begin(name, size)
        entry.start = self._zip.offset  # type: ignore[attr-defined]
        return entry

    def write(self, handle: ZipEntry, views: list[memoryview]) -> int:
        if not hasattr(handle, "digest"):  # the manifest, written by commit() without a digest job
            for view in views:
                handle.crc = zlib.crc32(view, handle.crc)
        return self._zip.write(views)

    def end(self, handle: ZipEntry) -> None:
        """The member's data descriptor: its size and CRC-32 (waits for the member's digest)."""
        size = self._zip.offset - handle.start  # type: ignore[attr-defined]
        crc = handle.digest.result()[1] if hasattr(handle, "digest") else handle.crc
        if size > (1 << 31) - 1 and not handle.zip64:
            raise SaveError(f"member {handle.name!r} grew to {size} bytes, past the size it was begun with; this "
                            "is a bug in the flavor that wrote it.", member=handle.name)
        handle.size, handle.crc = size, crc
        self._zip.write([memoryview(handle.data_descriptor())])

    def finish(self, handle: ZipEntry, size: int, crc: int) -> None:
        pass  # the data descriptor was written at end()

    def syncer(self) -> Callable[[], None]:
        return lambda: None

    def close(self) -> None:
        self._zip.close()  # the central directory and end records, into the upload

    def release(self) -> None:
        pass

    def publish(self) -> None:
        """Complete the upload: the artifact appears whole, or (overwrite=False, on S3) not at all."""
        if not self._overwrite:
            _warn_unconditional(self.path)
        try:
            commit_upload(self._upload, if_none_match=not self._overwrite)
        except FileExistsError:
            raise _exists_error(self.path.url, racing=True) from None

    def abort(self) -> None:
        self._upload.abort()


class RemoteDirTarget:
    """A folder artifact as one object per member under a prefix; the manifest last."""

    crc = False
    single_file = False

    def __init__(self, remote: RemotePath, overwrite: bool, existing: list[str]) -> None:
        self.path = remote
        self._overwrite = overwrite
        self._existing = existing
        self._written: list[str] = []
        self._created: list[str] = []  # members this save's commits created: the only ones its abort may remove
        self._begun: list[S3Upload | FileUpload] = []
        self._uploads: list[Future[Any]] = []
        self._manifest: Any = None
        if MANIFEST_NAME in existing:  # the old artifact stops being one before any member changes
            _remove(remote, [MANIFEST_NAME])

    def begin(self, name: str, size: int | None) -> Any:
        upload = open_upload(self.path.join(name))
        upload.member = name  # type: ignore[union-attr]
        self._begun.append(upload)
        return upload

    def write(self, handle: Any, views: list[memoryview]) -> int:
        try:
            handle.write(views)
        except Exception as exc:
            raise storage_error(exc, handle.remote.url, writing=True) from exc
        return sum(view.nbytes for view in views)

    def end(self, handle: Any) -> None:
        if handle.member == MANIFEST_NAME:
            self._manifest = handle  # written last, by publish()
            return
        self._written.append(handle.member)
        if len(self._uploads) >= _COMPLETING:  # bound the memory of members not yet completed
            self._uploads[-_COMPLETING].result()
        # Completions run on a pool of their own: they wait for their parts, sent by "remote-upload".
        self._uploads.append(pool("remote-complete", _COMPLETING).submit(self._commit, handle))

    def _commit(self, handle: Any) -> None:
        # With overwrite=False every member is created conditionally, not only the manifest: a writer saving the
        # same folder at the same moment either finds its members already there (and stops) or owns each member
        # it created, so the save that fails removes only its own objects, never the winner's.
        try:
            commit_upload(handle, if_none_match=not self._overwrite)
        except FileExistsError:
            raise _exists_error(self.path.url, racing=True) from None
        self._created.append(handle.member)

    def finish(self, handle: Any, size: int, crc: int) -> None:
        pass

    def syncer(self) -> Callable[[], None]:
        return lambda: None

    def close(self) -> None:
        for future in self._uploads:
            future.result()
        stale = sorted(set(self._existing) - set(self._written) - {MANIFEST_NAME})
        _remove(self.path, stale)

    def release(self) -> None:
        pass

    def publish(self) -> None:
        if not self._overwrite:
            _warn_unconditional(self.path)
        try:
            commit_upload(self._manifest, if_none_match=not self._overwrite)
        except FileExistsError:
            raise _exists_error(self.path.url, racing=True) from None

    def abort(self) -> None:
        settle(self._uploads)  # completions not started never start; running ones end first
        for upload in self._begun:  # every multipart upload not completed is aborted (none is left billed)
            upload.abort()
        _remove(self.path, self._created, quiet=True)  # members of a save that failed: not an artifact


def _remove(remote: RemotePath, names: list[str], quiet: bool = False) -> None:
    if not names:
        return
    try:
        remote.fs.rm([remote.join(name).path for name in names])
    except Exception as exc:
        if not quiet:
            raise storage_error(exc, remote.url, writing=True) from exc


def remote_target(remote: RemotePath, overwrite: bool) -> "RemoteZipTarget | RemoteDirTarget":
    """The target for an artifact at ``remote``, after checking what is there now."""
    try:
        remote.fs.invalidate_cache(remote.path)
        info = remote.fs.info(remote.path)
    except FileNotFoundError as exc:
        if classify(exc) == "no-bucket":  # say so before any work, not at the first upload
            raise storage_error(exc, remote.url, writing=True) from exc
        info = None
    except Exception as exc:
        raise storage_error(exc, remote.url, writing=True) from exc
    folder = info.get("type") == "directory" if info else remote.suffix != SINGLE_FILE_SUFFIX
    if info is not None and not overwrite:
        raise _exists_error(remote.url)
    if not folder:
        if info is not None:
            _check_replaceable(remote)
        return RemoteZipTarget(remote, overwrite)
    existing = _listing(remote) if info is not None else []
    if existing and MANIFEST_NAME not in existing:
        raise SaveError(f"{remote.url!r} holds {len(existing)} object(s) but is not a modelsafe artifact (no "
                        f"{MANIFEST_NAME}); overwrite=True only replaces artifacts, so nothing was deleted. Choose "
                        "another path.", path=remote.url, reason="not-an-artifact")
    return RemoteDirTarget(remote, overwrite, existing)


def _check_replaceable(remote: RemotePath) -> None:
    from modelsafe.artifact.remote_read import open_remote

    try:
        open_remote(remote).close()
    except ModelsafeError as exc:
        raise SaveError(f"{remote.url!r} exists and is not a modelsafe artifact ({exc}); overwrite=True only "
                        "replaces artifacts, so nothing was replaced. Choose another path.",
                        path=remote.url, reason="not-an-artifact") from exc


def _listing(remote: RemotePath) -> list[str]:
    root = remote.path.rstrip("/") + "/"
    try:
        found = remote.fs.find(remote.path, withdirs=False)
    except Exception as exc:
        raise storage_error(exc, remote.url, writing=True) from exc
    names = [key.lstrip("/") if not root.startswith("/") else key for key in found]
    return sorted(key[len(root):] for key in names if key.startswith(root))
