"""Tables read in chunks of rows, in order, with memory bounded by the chunk size, not the file size.

Parquet (a file, a folder or a glob) is read file by file with :class:`pyarrow.parquet.ParquetFile`,
one batch at a time; CSV with pyarrow's streaming CSV reader and JSON lines with its streaming
JSON reader, block by block. Every source yields :class:`pyarrow.RecordBatch` es of exactly
``batch_size`` rows (the last one shorter), so a chunk's row numbers follow from its place.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from modelsafe.batch.formats import Location
from modelsafe.errors import BatchError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["DEFAULT_BATCH_ROWS", "Source", "open_source", "rebatch"]

#: Rows per chunk when ``batch_size`` is not given.
DEFAULT_BATCH_ROWS = 65_536
#: Bytes the CSV and JSON readers parse at a time.
_BLOCK_BYTES = 4 << 20
#: numpy dtype names recorded in a schema -> the Arrow type a CSV column is read as.
_CSV_TYPES = {"float64": "float64", "float32": "float32", "int64": "int64", "int32": "int32", "int16": "int16",
              "int8": "int8", "uint64": "uint64", "uint32": "uint32", "uint16": "uint16", "uint8": "uint8",
              "bool": "bool_", "object": "string", "str": "string"}


class Source:
    """A table read chunk by chunk: ``total_rows`` when known up front (Parquet metadata)."""

    def __init__(self, location: Location, batches: Iterator[pa.RecordBatch], total_rows: int | None,
                 closing: contextlib.ExitStack) -> None:
        self.location = location
        self.total_rows = total_rows
        self._batches = batches
        self._closing = closing

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa

        try:
            yield from self._batches
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise BatchError(
                f"Cannot read {self.location.text!r} as {self.location.format}: {exc}. The file is malformed or "
                "holds values its columns cannot take (a CSV's columns are read with the dtypes the model was saved "
                "with). Fix the file, or convert it to Parquet with the right column types.",
                path=self.location.text, format=self.location.format) from exc

    def close(self) -> None:
        self._closing.close()


def open_source(location: Location, batch_size: int, schema: Mapping[str, Any] | None) -> Source:
    """The chunks of ``location``; ``schema`` (the input schema recorded at save) types a CSV's columns."""
    closing = contextlib.ExitStack()
    try:
        if location.format == "parquet":
            batches, total = _parquet(location, batch_size)
        else:
            stream = closing.enter_context(_open_binary(location))
            batches, total = (_csv(stream, location, schema) if location.format == "csv" else _jsonl(stream)), None
    except BaseException:
        closing.close()
        raise
    return Source(location, rebatch(batches, batch_size), total, closing)


def rebatch(batches: Iterator[pa.RecordBatch], size: int) -> Iterator[pa.RecordBatch]:
    """``batches`` cut and joined into batches of exactly ``size`` rows (the last one shorter)."""
    import pyarrow as pa

    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        pending.append(batch)
        held += batch.num_rows
        while held >= size:
            table = pa.Table.from_batches(pending)
            head, rest = table.slice(0, size), table.slice(size)
            yield head.combine_chunks().to_batches()[0]
            pending, held = rest.to_batches(), rest.num_rows
    if held:
        yield pa.Table.from_batches(pending).combine_chunks().to_batches()[0]


def arrow_filesystem(location: Location) -> Any:
    """The pyarrow filesystem of a remote location (fsspec wrapped), None for a local one."""
    if not location.remote:
        return None
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    return PyFileSystem(FSSpecHandler(location.fs))


def _parquet(location: Location, batch_size: int) -> tuple[Iterator[pa.RecordBatch], int]:
    import pyarrow.parquet as pq

    filesystem = arrow_filesystem(location)
    # Each file pulled a batch at a time: a pyarrow.dataset scan reads ahead while the model is busy (its queue
    # grows with the file), and pre_buffer reads ahead every row group; without both, memory holds one row
    # group's pages and one batch, whatever the file's size.
    files = [pq.ParquetFile(path, filesystem=filesystem, pre_buffer=False) for path in location.files or
             [location.path]]
    total = sum(f.metadata.num_rows for f in files)

    def batches() -> Iterator[pa.RecordBatch]:
        for handle in files:
            yield from handle.iter_batches(batch_size=batch_size, use_threads=False)
            handle.close()

    return batches(), total


@contextlib.contextmanager
def _open_binary(location: Location) -> Iterator[Any]:
    if location.remote:
        with location.fs.open(location.path, "rb") as stream:
            yield stream
    else:
        import pyarrow as pa

        with pa.OSFile(location.path, "rb") as stream:
            yield stream


def _csv(stream: Any, location: Location, schema: Mapping[str, Any] | None) -> Iterator[pa.RecordBatch]:
    import pyarrow as pa
    from pyarrow import csv

    types = {}
    if schema and schema.get("kind") == "dataframe":
        for column in schema.get("columns") or ():
            arrow = _CSV_TYPES.get(str(column.get("dtype")))
            if arrow is not None and isinstance(column.get("name"), str):
                types[column["name"]] = getattr(pa, arrow)()
    reader = csv.open_csv(stream, read_options=csv.ReadOptions(block_size=_BLOCK_BYTES, use_threads=False),
                          parse_options=csv.ParseOptions(delimiter=location.delimiter),
                          convert_options=csv.ConvertOptions(column_types=types))
    return iter(reader)


def _jsonl(stream: Any) -> Iterator[pa.RecordBatch]:
    import pyarrow.json as pj

    return iter(pj.open_json(stream, read_options=pj.ReadOptions(block_size=_BLOCK_BYTES, use_threads=False)))
