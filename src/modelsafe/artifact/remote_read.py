"""Reading an artifact on a remote store with range requests: nothing is staged whole.

A single-file artifact is one object. Opening it reads its tail in one range request (the
zip end records, the central directory and, as modelsafe writes it, the manifest just
before them), so ``inspect`` and ``check_env`` read well under 1 MiB of any artifact. The
hostile-archive checks of the local reader apply unchanged (this reader shares
:class:`~modelsafe.artifact.members.ZipMembers` with the local one).

A member is downloaded once, when its integrity check asks for it (:meth:`fetch`): a large
one in parallel range requests streamed into one buffer, hashed in order as the pieces
arrive; the flavor then reads those very bytes after their hash matched, through
:meth:`view`, or takes the buffer itself with :meth:`private` (a PyTorch flavor builds its
tensors on it: the member is in memory once). Small members are downloaded concurrently
before their checks ask for them (:meth:`prefetch`): neighbours in the zip in one range
request, each object of a folder in a request of its own.

Every read is pinned to the version of the object seen when it was opened: s3fs sends
``If-Match`` with the object's ETag on each range, so a replaced object fails the request
instead of mixing two versions (:func:`~.storage_errors.changed_error`); other stores
are checked against their version/ETag once the artifact has been read, and the
member hashes would refuse mixed bytes anyway.

A folder artifact is a prefix: its members are the objects under it (one listing), each
pinned to the ETag the listing gave.
"""

from __future__ import annotations

import hashlib
import io
import threading
import zipfile
from concurrent.futures import Future
from typing import Any, Iterable, Mapping

from modelsafe.artifact.location import RemotePath
from modelsafe.artifact.manifest import MANIFEST_NAME
from modelsafe.artifact.members import ArtifactReader, ProgressCallback, ZipMembers
from modelsafe.artifact.remote_object import WINDOW, RemoteObject, etag_of
from modelsafe.artifact.rules import MAX_MEMBERS, check_member_name, local_header_length
from modelsafe.artifact.storage_errors import storage_error
from modelsafe.artifact.threads import pool, settle
from modelsafe.errors import FormatError, IntegrityError, UnsafeArchiveError

__all__ = ["open_remote", "RemoteZipReader", "RemoteDirReader", "TAIL_BYTES"]

#: Bytes read from the end of a single-file artifact when it is opened (end records,
#: central directory, and usually the manifest): one range request.
TAIL_BYTES = 256 << 10
#: Bytes read past a local header's name for its extra field (modelsafe writes < 100).
_HEADER_SLACK = 1024
#: Small members next to each other in the zip are downloaded in one range request of at most this size.
SPAN_BYTES = 8 << 20


def _span_end(info: zipfile.ZipInfo) -> int:
    """Where a member ends at the latest: its local header (name, extra field up to the slack) and data."""
    return info.header_offset + 30 + len(info.filename.encode("utf-8")) + _HEADER_SLACK + info.file_size


class _TailFile(io.RawIOBase):
    """A seekable file over a remote object for :mod:`zipfile`: the tail is held, the rest fetched."""

    def __init__(self, obj: RemoteObject, tail: bytes) -> None:
        self._obj, self._tail, self._tail_start, self._pos = obj, tail, obj.size - len(tail), 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._obj.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read_at(self, start: int, size: int) -> bytes:
        end = min(start + size, self._obj.size)
        if start >= self._tail_start:
            return self._tail[start - self._tail_start : end - self._tail_start]
        return self._obj.fetch(start, end)

    def readinto(self, b: Any) -> int:
        data = self.read_at(self._pos, len(b))
        b[: len(data)] = data
        self._pos += len(data)
        return len(data)


class _RemoteMembers(ArtifactReader):
    """What both remote readers share: each member downloaded once, hashed as it arrives, and held
    for the flavors; small members fetched concurrently ahead of their checks (:meth:`prefetch`)."""

    remote: RemotePath

    def _init_members(self) -> None:
        self.copies = {}
        self._held: dict[str, Any] = {}
        #: Members being downloaded ahead (prefetch): name -> future of {name: bytes or None}.
        self._pending: dict[str, Future[dict[str, Any]]] = {}

    def _download(self, name: str, progress: ProgressCallback | None, hasher: Any, keep: bool = True) -> Any:
        raise NotImplementedError  # abstract

    def _start(self, names: list[str]) -> dict[str, Future[dict[str, Any]]]:
        raise NotImplementedError  # abstract

    def prefetch(self, names: Iterable[str]) -> None:
        """Start downloading members (the small ones) concurrently; :meth:`fetch` and :meth:`view` wait for them."""
        todo = [n for n in names if n not in self._held and n not in self._pending and self.size(n)]
        if todo:
            self._pending.update(self._start(todo))

    def _prefetched(self, name: str) -> Any:
        future = self._pending.pop(name, None)
        return None if future is None else future.result().get(name)

    def fetch(self, name: str, progress: ProgressCallback | None = None) -> str:
        """Download member ``name`` once, hashing it as it arrives; its SHA-256 (hex). Kept for the flavor."""
        hasher = hashlib.sha256()
        data = self._prefetched(name)
        if data is None:
            data = self._download(name, progress, hasher)
        else:
            hasher.update(data)
            if progress is not None:
                progress(len(data))
        self._held[name] = data
        return hasher.hexdigest()

    def digest(self, name: str) -> str:
        """Member ``name``'s SHA-256 (hex), streamed: nothing is kept (memory stays bounded)."""
        hasher = hashlib.sha256()
        self._download(name, None, hasher, keep=False)
        return hasher.hexdigest()

    def take(self, name: str) -> Any:
        """The downloaded member as a writable buffer nothing else shares (for :meth:`private`)."""
        data = self._held.pop(name, None)
        if data is None:
            data = self._prefetched(name)
        if data is None:  # not downloaded yet (an artifact the hash cache knows): straight into its own buffer
            data = self._download(name, None, None)
        return data if isinstance(data, bytearray) or hasattr(data, "__array_interface__") else bytearray(data)

    def private(self, name: str) -> Any:
        """A writable buffer of the member that nothing else shares: the very buffer it was downloaded into
        (and hashed from) when large, so a flavor building tensors on it copies nothing."""
        kept = self.copies.pop(name, None)
        return kept if kept is not None else self.take(name) if self.size(name) else bytearray()

    def view(self, name: str) -> memoryview:
        if self.size(name) == 0:
            return memoryview(b"")
        data = self._held.get(name)
        if data is None:
            data = self._prefetched(name)
            if data is None:  # taken by private() or never fetched: read again, pinned to the version opened
                data = self._download(name, None, None)
            self._held[name] = data
        return memoryview(data).toreadonly()

    def _release(self) -> None:
        settle(self._pending.values())
        self._pending.clear()
        self.copies.clear()
        self._held.clear()


class RemoteZipReader(ZipMembers, _RemoteMembers):
    """A single-file artifact on a remote store (see the module docstring)."""

    def __init__(self, remote: RemotePath, info: Mapping[str, Any]) -> None:
        self.path = remote  # type: ignore[assignment]
        self.remote = remote
        self._init_members()
        self._infos: dict[str, zipfile.ZipInfo] = {}
        self._starts: dict[str, int] = {}
        self._locating = threading.Lock()
        self._object = RemoteObject(remote, info)
        try:
            size = self._object.size
            self._file = _TailFile(self._object, self._object.fetch(max(0, size - TAIL_BYTES), size))
            try:
                self._zip = zipfile.ZipFile(self._file)  # type: ignore[arg-type]
            except (zipfile.BadZipFile, ValueError) as exc:
                raise FormatError(
                    f"{remote.url!r} is not a modelsafe artifact: it is not a readable zip archive ({exc}). The "
                    "object may be truncated or a different kind of model file; `modelsafe doctor` says what it is.",
                    path=remote.url) from exc
            self._check_members()
        except BaseException:
            self._object.close()
            raise

    def identity(self) -> list[Any] | None:
        """What names this object's exact version (for the verified-hash cache), or None."""
        return [[self.remote.url, self._object.size, self._object.etag]] if self._object.etag else None

    def _data_start(self, name: str) -> int:
        info = self._info(name)
        if name not in self._starts:
            if name != MANIFEST_NAME:
                self._locate_all()
            if name not in self._starts:
                self._starts[name] = self._header(info)
        return self._starts[name]

    def _header(self, info: zipfile.ZipInfo) -> int:
        want = 30 + len(info.filename.encode("utf-8")) + _HEADER_SLACK
        head = self._file.read_at(info.header_offset, want)
        length = local_header_length(info, head, self.remote.url)
        if length > len(head):  # an extra field longer than the slack: read the header exactly
            length = local_header_length(info, self._file.read_at(info.header_offset, length), self.remote.url)
        return info.header_offset + length

    def _locate_all(self) -> None:
        """Every member's data offset, from their local headers read in parallel (once)."""
        with self._locating:
            todo = [i for n, i in self._infos.items() if n not in self._starts]
            if not todo:
                return
            workers = pool("remote-io", WINDOW)
            found = [(i.filename, workers.submit(self._header, i)) for i in todo]
            for name, future in found:
                self._starts[name] = future.result()

    def _download(self, name: str, progress: ProgressCallback | None, hasher: Any, keep: bool = True) -> Any:
        info = self._info(name)
        if info.compress_type != zipfile.ZIP_STORED:
            raise UnsafeArchiveError(
                f"Member {name!r} of {self.remote.url!r} is compressed; modelsafe writes members stored, and reads "
                "compressed members of local files only. Do not use this file; re-export the model.", member=name)
        start = self._data_start(name)
        if start + info.file_size > self._object.size:
            raise IntegrityError(
                f"Member {name!r} runs past the end of {self.remote.url!r}: the object is truncated. Copy the "
                "artifact again from its source.", member=name, expected=info.file_size, actual=None)
        if start >= self._file._tail_start:  # in the tail read at open (the manifest, small members)
            data = self._file.read_at(start, info.file_size)
            if hasher is not None:
                hasher.update(data)
            if progress is not None:
                progress(len(data))
            return data
        return self._object.read(start, info.file_size, progress, hasher, keep)

    def _start(self, names: list[str]) -> dict[str, Future[dict[str, Any]]]:
        """Neighbouring members in one range request each (their local headers with them), in parallel."""
        spans: list[list[zipfile.ZipInfo]] = []
        for info in sorted((self._info(n) for n in names), key=lambda i: i.header_offset):
            if info.compress_type != zipfile.ZIP_STORED:
                continue  # refused by _download, with the reason
            end = _span_end(info)
            if spans and end - spans[-1][0].header_offset <= SPAN_BYTES:
                spans[-1].append(info)
            else:
                spans.append([info])
        workers = pool("remote-io", WINDOW)
        jobs: dict[str, Future[dict[str, Any]]] = {}
        for span in spans:
            future = workers.submit(self._read_span, span)
            jobs.update({info.filename: future for info in span})
        return jobs

    def _read_span(self, span: list[zipfile.ZipInfo]) -> dict[str, Any]:
        """The members of ``span`` from one read: name -> bytes (None where the header needs more than read)."""
        low = span[0].header_offset
        data = memoryview(self._file.read_at(low, min(max(_span_end(i) for i in span), self._object.size) - low))
        out: dict[str, Any] = {}
        for info in span:
            at = info.header_offset - low
            length = local_header_length(info, data[at : at + _span_end(info) - info.header_offset], self.remote.url)
            self._starts[info.filename] = info.header_offset + length
            found = data[at + length : at + length + info.file_size]
            out[info.filename] = bytes(found) if len(found) == info.file_size else None
        return out

    def locate(self, name: str) -> tuple[int, int] | None:
        return None

    def finished(self) -> None:
        """Every member was read: refuse an object that changed meanwhile (where reads are not pinned)."""
        self._object.check_unchanged()

    def close(self) -> None:
        self._release()
        self._object.close()


class RemoteDirReader(_RemoteMembers):
    """A folder artifact on a remote store: the objects under one prefix (one listing)."""

    def __init__(self, remote: RemotePath) -> None:
        self.path = remote  # type: ignore[assignment]
        self.remote = remote
        self._init_members()
        self._objects: dict[str, RemoteObject] = {}
        try:
            listing = remote.fs.find(remote.path, detail=True, withdirs=False)
        except Exception as exc:
            raise storage_error(exc, remote.url) from exc
        root = remote.path.rstrip("/") + "/"
        self._listed: dict[str, Mapping[str, Any]] = {}
        for key, info in listing.items():
            key = key.lstrip("/") if not root.startswith("/") else key
            if key.startswith(root) and info.get("type", "file") != "directory":
                self._listed[key[len(root):]] = info
        if len(self._listed) > MAX_MEMBERS:
            raise UnsafeArchiveError(
                f"{remote.url!r} holds more than {MAX_MEMBERS} objects: reading it could exhaust memory or time. "
                "Point modelsafe at the artifact folder itself.", member=None)

    def identity(self) -> list[Any] | None:
        rows = [[self.remote.url, name, int(info.get("size", 0)), etag_of(info)] for name, info in
                sorted(self._listed.items())]
        return rows if all(row[3] for row in rows) else None

    def _index(self) -> Any:
        return self._listed.keys()

    def names(self) -> list[str]:
        return sorted(self._listed)

    def size(self, name: str) -> int:
        return int(self._listed_info(name).get("size", 0))

    def _listed_info(self, name: str) -> Mapping[str, Any]:
        check_member_name(name)
        try:
            return self._listed[name]
        except KeyError:
            raise self._missing(name) from None

    def _object(self, name: str) -> RemoteObject:
        obj = self._objects.get(name)
        if obj is None:
            obj = self._objects[name] = RemoteObject(self.remote.join(name), self._listed_info(name))
        return obj

    def _download(self, name: str, progress: ProgressCallback | None, hasher: Any, keep: bool = True) -> Any:
        obj = self._object(name)
        return obj.read(0, obj.size, progress, hasher, keep)

    def _start(self, names: list[str]) -> dict[str, Future[dict[str, Any]]]:
        """Each member object in a request of its own, in parallel."""
        workers = pool("remote-io", WINDOW)
        return {name: workers.submit(lambda n: {n: self._download(n, None, None)}, name) for name in names}

    def finished(self) -> None:
        for obj in list(self._objects.values()):
            obj.check_unchanged()

    def close(self) -> None:
        self._release()
        for obj in self._objects.values():
            obj.close()
        self._objects.clear()


def open_remote(remote: RemotePath) -> ArtifactReader:
    """Open the artifact at a URL: an object (single file) or a prefix (folder)."""
    try:
        # The store as it is now, not as a listing cached in a long-lived filesystem instance saw it: an object
        # written since (by another process) is found, and a replaced one is read at its new size.
        remote.fs.invalidate_cache(remote.path)
        info = remote.fs.info(remote.path)
    except FileNotFoundError as exc:
        error = storage_error(exc, remote.url)
        if getattr(error, "reason", None) == "not-found":
            raise FormatError(
                f"No artifact at {remote.url!r}: there is no object or prefix with that name. Check the URL (a "
                f"single-file artifact ends in .msafe; a folder artifact holds {MANIFEST_NAME}).",
                path=remote.url, reason="not-found") from exc
        raise error from exc
    except Exception as exc:
        raise storage_error(exc, remote.url) from exc
    reader: ArtifactReader
    if info.get("type") == "directory":
        reader = RemoteDirReader(remote)
    else:
        reader = RemoteZipReader(remote, info)
    if not reader.has(MANIFEST_NAME):
        reader.close()
        raise FormatError(
            f"{remote.url!r} is not a modelsafe artifact: it has no {MANIFEST_NAME}. A folder on an object store "
            "gets its manifest last, so this may also be a save that did not finish; save it again. For a pickle, "
            "joblib, torch or Keras file run `modelsafe doctor`, and `modelsafe convert` to make an artifact.",
            path=remote.url, reason="no-manifest")
    return reader

