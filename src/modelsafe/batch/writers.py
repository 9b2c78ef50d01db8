"""Tables written chunk by chunk, visible at the destination only once complete.

A local output is written to a hidden temporary file beside the destination, fsynced and
renamed over it at the end; a remote one is a streamed upload (an S3 multipart upload, or
fsspec's uncommitted file on other stores, see :mod:`modelsafe.artifact.remote_write`)
completed at the end and aborted on error. An interrupted run (an exception, Ctrl-C, a
killed process) therefore never leaves a half-written output where the output belongs;
an existing output is replaced only by a complete one.

Parquet keeps the Arrow types of every column; CSV is plain text with a header; JSON lines
is one object per row.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelsafe.artifact.location import RemotePath
from modelsafe.batch.formats import Location
from modelsafe.errors import BatchError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["Sink", "remove"]


class _UploadFile:
    """A write-only file object over a streaming upload, for pyarrow's writers."""

    def __init__(self, upload: Any) -> None:
        self.upload = upload
        self.position = 0
        self.closed = False

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.upload.write([view])
        self.position += view.nbytes
        return view.nbytes

    def tell(self) -> int:
        return self.position

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        """Parts are sent as they fill; nothing is held back to flush."""

    def close(self) -> None:
        self.closed = True


class Sink:
    """One output table: :meth:`write` chunks, then :meth:`commit` (or :meth:`abort`)."""

    def __init__(self, location: Location) -> None:
        import pyarrow as pa

        self.location = location
        self.rows = 0
        self._writer: Any = None
        self._schema: pa.Schema | None = None
        self._temporary: Path | None = None
        if isinstance(location.target, RemotePath):
            from modelsafe.artifact.remote_upload import open_upload

            self._upload = open_upload(location.target)
            self._stream: Any = pa.PythonFile(_UploadFile(self._upload), mode="w")
        else:
            target = location.target
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            os.close(fd)
            self._temporary = Path(name)
            self._stream = pa.OSFile(name, "wb")

    def write(self, table: pa.Table) -> None:
        if self._schema is None:
            self._schema = table.schema
            self._writer = self._open_writer(table.schema)
        elif table.schema != self._schema:
            table = self._conform(table)
        if self.location.format == "jsonl":
            self._stream.write(_json_lines(table))
        else:
            self._writer.write_table(table)
        self.rows += table.num_rows

    def _open_writer(self, schema: pa.Schema) -> Any:
        if self.location.format == "parquet":
            import pyarrow.parquet as pq

            return pq.ParquetWriter(self._stream, schema)
        if self.location.format == "csv":
            from pyarrow import csv

            return csv.CSVWriter(self._stream, schema,
                                 write_options=csv.WriteOptions(delimiter=self.location.delimiter))
        return None

    def _conform(self, table: pa.Table) -> pa.Table:
        """A later chunk in the first chunk's types (an all-null column, int predictions in a float column)."""
        import pyarrow as pa

        assert self._schema is not None
        try:
            return table.select(self._schema.names).cast(self._schema)
        except (pa.ArrowException, KeyError, ValueError) as exc:
            raise BatchError(
                f"A chunk of predictions for {self.location.text!r} has columns {table.schema} but the first chunk "
                f"had {self._schema}: one output file cannot hold both ({exc}). The model returns different types "
                "for different rows; write Parquet per chunk yourself, or make the model's output type fixed.",
                path=self.location.text) from exc

    def commit(self) -> None:
        """Finish the file and make it visible at the destination, replacing any older one."""
        if self._writer is not None:
            self._writer.close()
        self._stream.close()
        if self._temporary is not None:
            with open(self._temporary, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(self._temporary, self.location.target)
            self._temporary = None
            _fsync_folder(Path(self.location.path).parent)
        else:
            self._upload.commit()

    def abort(self) -> None:
        """Drop what was written: the destination is left as it was."""
        try:
            if self._writer is not None:
                self._writer.close()
            self._stream.close()
        except Exception:  # noqa: BLE001, S110 - the run already failed; its own error is the one to show
            pass
        if self._temporary is not None:
            self._temporary.unlink(missing_ok=True)
            self._temporary = None
        else:
            self._upload.abort()


def remove(location: Location) -> None:
    """Delete ``location`` if it exists (a stale rejects file from an earlier run)."""
    if isinstance(location.target, RemotePath):
        if location.fs.exists(location.path):
            location.fs.rm(location.path)
    else:
        location.target.unlink(missing_ok=True)


def _json_lines(table: pa.Table) -> bytes:
    text = table.to_pandas(use_threads=False).to_json(orient="records", lines=True, date_format="iso")
    return (text if text.endswith("\n") else text + "\n").encode()


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
