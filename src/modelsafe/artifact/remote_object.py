"""One object on a remote store, read with range requests pinned to the version seen at open.

Large reads go out as parallel range requests (at most :data:`WINDOW` in flight), and are
hashed in order as the pieces arrive. On S3 each piece's body is streamed straight into its
place in the one buffer the caller gets (a few chunks of :data:`CHUNK` are all that is held
besides it), so reading a member costs its size in memory once; other stores answer a range
with bytes, copied into place. s3fs pins each range to the ETag (``If-Match``); for other
stores :meth:`RemoteObject.check_unchanged` compares the version once reading is done.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import Future
from typing import Any, Mapping

from modelsafe.artifact.location import RemotePath
from modelsafe.artifact.members import ProgressCallback
from modelsafe.artifact.storage_errors import changed_error, storage_error
from modelsafe.artifact.threads import pool, settle
from modelsafe.errors import FormatError

__all__ = ["RemoteObject", "etag_of", "WINDOW", "PARALLEL_BYTES"]

#: Members larger than this are fetched in parallel ranges.
PARALLEL_BYTES = 16 << 20
#: Range pieces are at least this large, and at most PIECE_MAX (fewer, larger requests).
PIECE_MIN, PIECE_MAX = 16 << 20, 64 << 20
#: Range requests in flight at once.
WINDOW = 8
#: A piece's body is read from the connection in chunks of this size, each copied into place.
CHUNK = 1 << 20
#: Pieces of a read that is only hashed (nothing kept) are this large: WINDOW of them are held at once.
HASHED_PIECE = 8 << 20


def etag_of(info: Mapping[str, Any]) -> str | None:
    for key in ("ETag", "etag", "VersionId", "generation", "version_id"):
        value = info.get(key)
        if value:
            return str(value)
    return None


class RemoteObject:
    """One object, read with range requests pinned to the version seen at open."""

    def __init__(self, remote: RemotePath, info: Mapping[str, Any] | None = None) -> None:
        self.remote = remote
        try:
            self.info = dict(info) if info is not None else remote.fs.info(remote.path)
            self.size = int(self.info["size"])
            # s3fs pins every range of this file object to the ETag (If-Match); others read plainly.
            opened = remote.fs.open(remote.path, "rb", cache_type="none", size=None) if remote.is_s3 else None
        except Exception as exc:
            raise storage_error(exc, remote.url) from exc
        self._file = opened
        self.etag = etag_of(self.info)
        concurrency = getattr(remote.fs, "max_concurrency", 4) or 4
        self.window = max(1, min(int(concurrency), WINDOW))

    def fetch(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)``; a short answer means the object changed or was cut."""
        if end <= start:
            return b""
        try:
            if self._file is not None:
                data = self._file._fetch_range(start, end)
            else:
                data = self.remote.fs.cat_file(self.remote.path, start=start, end=end)
        except Exception as exc:
            raise storage_error(exc, self.remote.url) from exc
        if len(data) != end - start:
            raise FormatError(
                f"Reading bytes {start}-{end} of {self.remote.url!r} gave {len(data)} bytes: the object ends early "
                f"(it is {self.size} bytes as listed). It was truncated or replaced while being read; nothing from "
                "it was used. Read it again, or copy the artifact again from its source.",
                path=self.remote.url, reason="truncated", expected=end - start, actual=len(data))
        return bytes(data) if not isinstance(data, bytes) else data

    def fetch_into(self, start: int, target: Any) -> None:
        """Fill ``target`` (a writable byte buffer) with the bytes from ``start``: on S3 the body is streamed
        into it chunk by chunk (s3fs's request and retries, pinned to the ETag); elsewhere copied from bytes."""
        view = memoryview(target).cast("B")
        streamed = _streamed(self, start, view) if self._file is not None else None
        if streamed is None:
            view[:] = self.fetch(start, start + len(view))
        elif streamed != len(view):
            raise FormatError(
                f"Reading bytes {start}-{start + len(view)} of {self.remote.url!r} gave {streamed} bytes: the object "
                f"ends early (it is {self.size} bytes as listed). It was truncated or replaced while being read; "
                "nothing from it was used. Read it again, or copy the artifact again from its source.",
                path=self.remote.url, reason="truncated", expected=len(view), actual=streamed)

    def read(self, start: int, size: int, progress: ProgressCallback | None = None,
             hasher: Any = None, keep: bool = True) -> Any:
        """``size`` bytes from ``start`` as one buffer (bytes, or a writable uint8 array when large),
        fetched in parallel pieces when large; ``hasher`` is updated in order as they arrive.
        Without ``keep`` the pieces are only hashed (WINDOW pieces held at most), and None is returned."""
        if size <= PARALLEL_BYTES:
            data = self.fetch(start, start + size)
            if hasher is not None:
                hasher.update(data)
            if progress is not None:
                progress(len(data))
            return data
        import numpy as np

        piece = min(PIECE_MAX, max(PIECE_MIN, -(-size // self.window))) if keep else HASHED_PIECE
        bounds = [(o, min(o + piece, size)) for o in range(0, size, piece)]
        # Kept: every piece lands in its place in the buffer returned. Hashed only: in one of
        # ``window`` slots, reused once the piece in it is hashed.
        buffer = np.empty(size if keep else piece * min(self.window, len(bounds)), dtype=np.uint8)

        def place(i: int) -> Any:
            lo, hi = bounds[i]
            return buffer[lo:hi] if keep else buffer[(i % self.window) * piece:][: hi - lo]

        workers = pool("remote-io", WINDOW)
        futures: list[Future[None]] = []
        try:
            for i, (lo, hi) in enumerate(bounds):
                while len(futures) < min(len(bounds), i + self.window):
                    j = len(futures)
                    futures.append(workers.submit(self.fetch_into, start + bounds[j][0], place(j)))
                futures[i].result()
                if hasher is not None:
                    hasher.update(place(i))  # in order, while later pieces are still arriving
                if progress is not None:
                    progress(hi - lo)
        except BaseException:
            settle(futures)  # none still writes into the buffer once this returns
            raise
        return buffer if keep else None

    def check_unchanged(self) -> None:
        """Where reads are not pinned by the store, refuse an object whose version changed since open."""
        if self._file is not None or self.etag is None:
            return
        try:
            self.remote.fs.invalidate_cache(self.remote.path)
            now = etag_of(self.remote.fs.info(self.remote.path))
        except Exception as exc:
            raise storage_error(exc, self.remote.url) from exc
        if now != self.etag:
            raise changed_error(self.remote.url, expected=self.etag, actual=now)

    def close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(Exception):
                self._file.close()
            self._file = None



def _streamed(obj: RemoteObject, start: int, view: memoryview) -> int | None:
    """Stream bytes ``[start, start + len(view))`` of an S3 object into ``view``; how many came.

    The request and its retries are s3fs's own (its ``_call_s3`` and retry loop, as its
    ranged reads use them), pinned to the ETag seen at open. None when this s3fs lacks them
    (the caller then reads the range as bytes)."""
    try:
        from fsspec.asyn import sync
        from s3fs.core import _error_wrapper
    except ImportError:
        return None
    fs = obj.remote.fs
    bucket, key, _ = fs.split_path(obj.remote.path)
    pinned = {"IfMatch": obj.etag} if obj.etag else {}

    async def attempt() -> int:
        response = await fs._call_s3("get_object", Bucket=bucket, Key=key,
                                     Range=f"bytes={start}-{start + len(view) - 1}", **pinned)
        body, done = response["Body"], 0
        try:
            while done < len(view):
                chunk = await body.read(min(CHUNK, len(view) - done))
                if not chunk:
                    break
                view[done : done + len(chunk)] = chunk
                done += len(chunk)
        finally:
            body.close()
        return done

    try:
        return sync(fs.loop, _error_wrapper, attempt, retries=fs.retries)
    except Exception as exc:
        raise storage_error(exc, obj.remote.url) from exc
