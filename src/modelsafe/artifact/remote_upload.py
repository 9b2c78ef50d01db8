"""One object uploaded to a remote store: streamed, and visible only once committed.

On S3 an object is a multipart upload: parts are sent by the ``remote-upload`` pool while
the caller goes on writing (at most :data:`IN_FLIGHT` parts per object in flight, which
bounds the memory parts hold), and :meth:`S3Upload.commit` completes it, conditionally
(``If-None-Match: *`` to create only, ``If-Match: <ETag>`` to replace only the version
read). An object smaller than one part is a single conditional PUT. :meth:`S3Upload.abort`
waits for the parts being sent and then aborts the upload, so no part outlives it.

Other stores write through fsspec's uncommitted file (``autocommit=False``) and cannot make
the commit conditional: the condition is checked just before it (see ``remote_write``).

Every network wait is bounded by the store client's timeouts and retries (s3fs: 5 s to
connect, 15 s per read, 5 attempts; ``storage_options={"retries": N, "config_kwargs":
{"read_timeout": S, "connect_timeout": S}}`` set them); no job of this module waits for
another job of the pool it runs on.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import Future
from typing import Any

from modelsafe.artifact.location import RemotePath
from modelsafe.artifact.storage_errors import classify, storage_error
from modelsafe.artifact.threads import pool, settle
from modelsafe.errors import SaveError

__all__ = ["open_upload", "put_object", "commit_upload", "S3Upload", "FileUpload",
           "PART_BYTES", "IN_FLIGHT"]

#: Size of an upload part (S3 needs >= 5 MiB but the last); it doubles every 1000 parts (the limit is 10,000).
PART_BYTES = 16 << 20
#: Parts of one object in flight at once (bounds the memory they hold).
IN_FLIGHT = 4


class S3Upload:
    """One object as an S3 multipart upload (a single PUT when it stays under one part)."""

    def __init__(self, remote: RemotePath) -> None:
        self.remote = remote
        self.bucket, self.key, _ = remote.fs.split_path(remote.path)
        self._part = bytearray()  # grows to one part: a small object never holds a whole part's memory
        self._part_size = PART_BYTES
        self._upload_id: str | None = None
        self._parts: list[Future[dict[str, Any]]] = []

    def _call(self, method: str, **kwargs: Any) -> Any:
        return self.remote.fs.call_s3(method, Bucket=self.bucket, Key=self.key, **kwargs)

    def write(self, views: list[memoryview]) -> None:
        for view in views:
            done = 0
            while done < view.nbytes:
                n = min(self._part_size - len(self._part), view.nbytes - done)
                self._part += view[done : done + n]
                done += n
                if len(self._part) == self._part_size:
                    self._send()

    def _send(self) -> None:
        if self._upload_id is None:
            self._upload_id = self._call("create_multipart_upload")["UploadId"]
        number = len(self._parts) + 1
        if len(self._parts) >= IN_FLIGHT:  # bound the memory held by parts in flight
            self._parts[-IN_FLIGHT].result()
        body, self._part = self._part, bytearray()
        self._parts.append(pool("remote-upload", IN_FLIGHT).submit(self._upload_part, number, body))
        self._part_size = PART_BYTES << (number // 1000)

    def _upload_part(self, number: int, body: bytearray) -> dict[str, Any]:
        out = self._call("upload_part", UploadId=self._upload_id, PartNumber=number, Body=body)
        return {"PartNumber": number, "ETag": out["ETag"]}

    def commit(self, *, if_none_match: bool = False, if_match: str | None = None) -> str | None:
        """Make the object visible (conditionally); its new ETag."""
        match = {"IfNoneMatch": "*"} if if_none_match else {"IfMatch": if_match} if if_match else {}
        if self._upload_id is None:
            out = self._call("put_object", Body=bytes(self._part), **match)
        else:
            if self._part:
                self._send()
            parts = [future.result() for future in self._parts]
            out = self._call("complete_multipart_upload", UploadId=self._upload_id,
                             MultipartUpload={"Parts": parts}, **match)
            self._upload_id = None
        self._part = bytearray()
        self.remote.fs.invalidate_cache(self.remote.path)
        return out.get("ETag")

    def abort(self) -> None:
        """Drop the upload: parts not sent are cancelled, parts being sent end first (none lands after)."""
        settle(self._parts)
        upload, self._upload_id = self._upload_id, None
        if upload is not None:
            with contextlib.suppress(Exception):  # the save already failed; its own error is the one to show
                self._call("abort_multipart_upload", UploadId=upload)


class FileUpload:
    """One object through fsspec's file interface, committed only at the end (other stores)."""

    def __init__(self, remote: RemotePath) -> None:
        self.remote = remote
        fs = remote.fs
        # The memory store commits on open: write beside the target and move it into place.
        memory = "memory" in ((fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol)
        self._staged = remote.sibling(f".{remote.name}.tmp-upload") if memory else None
        self._file = fs.open((self._staged or remote).path, "wb", autocommit=self._staged is not None)
        self._committed = False

    def write(self, views: list[memoryview]) -> None:
        for view in views:
            self._file.write(view)

    def commit(self, *, if_none_match: bool = False, if_match: str | None = None) -> str | None:
        fs = self.remote.fs
        if if_none_match and fs.exists(self.remote.path):
            raise FileExistsError(self.remote.url)
        if if_match is not None and _version(self.remote) != if_match:
            raise FileExistsError(self.remote.url)
        if self._staged is not None:
            self._file.close()
            fs.mv(self._staged.path, self.remote.path)
        else:
            if getattr(self._file, "offset", 0) is None:
                # Nothing flushed yet (less than one block written). fsspec's flush(force=True) starts the upload
                # and, without autocommit, keeps the data for commit(); gcsfs's commit() alone would finalize an
                # upload it never started, and fail.
                self._file.flush(force=True)
            self._file.commit()
            self._file.close()
        self._committed = True
        return _version(self.remote)

    def abort(self) -> None:
        if self._committed:
            return
        with contextlib.suppress(Exception):
            if self._staged is not None:
                self._file.close()
                self.remote.fs.rm(self._staged.path)
            else:
                self._file.discard()


def _version(remote: RemotePath) -> str | None:
    """The object's ETag or version as the store lists it now (None when it has none)."""
    from modelsafe.artifact.remote_object import etag_of

    remote.fs.invalidate_cache(remote.path)
    try:
        return etag_of(remote.fs.info(remote.path))
    except FileNotFoundError:
        return None


def open_upload(remote: RemotePath) -> "S3Upload | FileUpload":
    """A streaming upload to ``remote``: ``write(views)``, then ``commit()`` or ``abort()``."""
    if remote.read_only:
        raise SaveError(f"Cannot save to {remote.url!r}: {remote.scheme}:// is read-only in modelsafe (an HTTP "
                        "server has no upload protocol fsspec could use). Save to a bucket (s3://, gs://, az://) "
                        "or a local path.", path=remote.url, reason="read-only")
    try:
        return S3Upload(remote) if remote.is_s3 else FileUpload(remote)
    except Exception as exc:
        raise storage_error(exc, remote.url, writing=True) from exc


def commit_upload(upload: "S3Upload | FileUpload", **conditions: Any) -> str | None:
    """Commit ``upload``; its new ETag. A condition that failed raises FileExistsError, any other failure
    a SaveError."""
    try:
        return upload.commit(**conditions)
    except FileExistsError:
        raise
    except Exception as exc:
        if any(conditions.values()) and classify(exc) in ("changed", "exists"):
            raise FileExistsError(upload.remote.url) from exc
        raise storage_error(exc, upload.remote.url, writing=True) from exc


def put_object(remote: RemotePath, data: bytes, *, if_none_match: bool = False,
               if_match: str | None = None) -> str | None:
    """Write one small object (conditionally); its new ETag. Raises FileExistsError when a condition failed."""
    upload = open_upload(remote)
    try:
        upload.write([memoryview(data)])
        return commit_upload(upload, if_none_match=if_none_match, if_match=if_match)
    except BaseException:
        upload.abort()
        raise

