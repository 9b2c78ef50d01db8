"""``predict_file``: score a CSV, Parquet or JSON lines file (or a folder or glob of Parquet) in chunks.

The steps: the artifact's manifest (and the keywords checked against it) -> the input and
output located -> the artifact loaded with every check of :func:`modelsafe.load` -> chunk
by chunk: read, guard, predict, write -> the output (and the rejects file) committed.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from modelsafe.batch.formats import Location, locate
from modelsafe.batch.readers import DEFAULT_BATCH_ROWS, Source, open_source
from modelsafe.batch.report import BatchReport
from modelsafe.batch.scoring import ChunkScorer, Split, chunk_error, row_level
from modelsafe.batch.writers import Sink, remove
from modelsafe.errors import BatchError

__all__ = ["METHODS", "predict_file", "rejects_location"]

#: The methods a file can be scored with (where the model has them).
METHODS = ("predict", "predict_proba", "decision_function", "transform")
_ON_ERROR = ("fail", "skip")
#: Input warnings repeated at most this many times over a run (one chunk's warnings are often the next one's).
_MAX_WARNINGS = 10
ROW, REASON = "row", "reason"


def predict_file(artifact: Any, source: Any, destination: Any, *, method: str = "predict",
                 batch_size: int | None = None, keep_columns: bool = False, on_error: str = "fail",
                 storage_options: Mapping[str, Any] | None = None, **load_kwargs: Any) -> BatchReport:
    """Score every row of ``source`` with the artifact and write the predictions to ``destination``.

    Parameters
    ----------
    artifact
        The artifact (path or URL); loaded once, with every check of :func:`modelsafe.load`.
    source
        A CSV (``.csv``, ``.tsv``), Parquet (``.parquet``) or JSON lines (``.jsonl``, ``.ndjson``)
        file, a folder of Parquet files or a glob (``data/part-*.parquet``); local or an fsspec URL.
        Read in chunks: memory is bounded by ``batch_size``, not by the file's size.
    destination
        The output file; its suffix gives the format. Written atomically: it appears (or
        replaces an older one) only once complete.
    method
        ``"predict"`` (a column ``prediction``), ``"predict_proba"`` or ``"decision_function"``
        (one column per class, named by the class labels) or ``"transform"``.
    batch_size
        Rows per chunk (default 65,536).
    keep_columns
        Copy the input columns into the output, before the predictions (their types kept in Parquet).
    on_error
        ``"fail"``: a chunk the input guard or the model refuses stops the run, naming its rows.
        ``"skip"``: the rows that fail go to ``OUTPUT.rejects.<ext>`` with a ``reason`` column and
        the others are scored. A missing column fails every row, and stops the run either way.
    storage_options
        Options of the fsspec filesystem, for URLs (artifact, source and destination).
    **load_kwargs
        Passed to :func:`modelsafe.load` (``env=``, ``trust_code=``, ``signature=``, ``trusted_keys=``...).

    Returns
    -------
    BatchReport
        Rows in, rows out, rejected, seconds, throughput.

    Examples
    --------
    >>> import pandas as pd
    >>> import modelsafe as ms
    >>> rows = pd.DataFrame(ms.load("/tmp/doc-model.msafe").sample_inputs(), columns=["a", "b", "c"])
    >>> rows.to_parquet("/tmp/doc-rows.parquet")
    >>> report = ms.predict_file("/tmp/doc-model.msafe", "/tmp/doc-rows.parquet", "/tmp/doc-scores.parquet")
    >>> report.rows_out == report.rows_in and report.ok
    True
    >>> list(pd.read_parquet("/tmp/doc-scores.parquet").columns)
    ['prediction']
    """
    progress: Callable[[int, int | None], None] | None = load_kwargs.pop("progress", None)
    _check_options(method, batch_size, on_error)
    from modelsafe._api import load
    from modelsafe.artifact.reader import manifest_of

    manifest = manifest_of(artifact, storage_options)  # the manifest alone: load checks the signature
    from modelsafe._keywords import declared, signature_names
    from modelsafe._load import refuse_unknown_keywords

    own = signature_names(predict_file) | declared("predict_file")
    refuse_unknown_keywords(load_kwargs, manifest, "predict_file", own)
    inputs = locate(source, "input", storage_options)
    output = locate(destination, "output", storage_options, reading=False)
    if inputs.files == () and os.path.abspath(inputs.path) == os.path.abspath(output.path) \
            and inputs.remote == output.remote:
        raise BatchError(f"The output {output.text!r} is the input: writing it would destroy the rows being read. "
                         "Write the predictions to another file.", path=output.text)
    bundle = load(artifact, storage_options=storage_options, **load_kwargs)
    try:
        scorer = ChunkScorer(bundle, method)
        run = _Run(inputs, output, scorer, keep_columns, on_error, progress)
        reader = open_source(inputs, batch_size or DEFAULT_BATCH_ROWS, manifest.schema)
        try:
            run.all(reader)
        finally:
            reader.close()
    finally:
        bundle.close()
    return BatchReport(artifact=os.fspath(artifact) if not isinstance(artifact, str) else artifact,
                       source=inputs.text, destination=output.text, method=method, rows_in=run.rows_in,
                       rows_out=run.rows_out, rejected=run.rejected, seconds=run.seconds,
                       rejects=run.rejects.text if run.rejected else None, warnings=tuple(run.warned))


def rejects_location(output: Location) -> Location:
    """``OUTPUT.rejects.<ext>`` beside the output (``scores.parquet`` -> ``scores.rejects.parquet``)."""
    name = os.path.basename(output.path.rstrip("/"))
    stem, dot, suffix = name.rpartition(".")
    return output.sibling(f"{stem}.rejects.{suffix}" if dot else f"{name}.rejects")


def _check_options(method: str, batch_size: int | None, on_error: str) -> None:
    if method not in METHODS:
        raise ValueError(f"Invalid `method`: expected one of {', '.join(map(repr, METHODS))}. Received: "
                         f"method={method!r}")
    if on_error not in _ON_ERROR:
        raise ValueError(f"Invalid `on_error`: expected 'fail' or 'skip'. Received: on_error={on_error!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                   or batch_size < 1):
        raise ValueError(f"Invalid `batch_size`: expected a positive number of rows. Received: "
                         f"batch_size={batch_size!r}")


class _Run:
    """One pass over the input: chunks scored and written, rejected rows set aside, counts kept."""

    def __init__(self, inputs: Location, output: Location, scorer: ChunkScorer, keep_columns: bool,
                 on_error: str, progress: Callable[[int, int | None], None] | None) -> None:
        self.inputs, self.output, self.scorer = inputs, output, scorer
        self.keep_columns, self.on_error, self.progress = keep_columns, on_error, progress
        self.rows_in = self.rows_out = self.rejected = 0
        self.seconds = 0.0
        self.rejects = rejects_location(output)
        self.warned: list[str] = []
        self._seen: set[str] = set()

    def all(self, reader: Source) -> None:
        import pyarrow as pa

        started = time.perf_counter()
        sink, rejects = Sink(self.output), None
        # Arrow's allocator (mimalloc by default) keeps the pages of freed chunks for reuse and hands them back
        # lazily: over a long file the resident size crept up with the row count. Returned after every chunk
        # (about a millisecond), the peak is the chunk's, whatever the file's length. That return reaches the
        # calling thread's heap only, so every chunk is read, converted and written on this thread (readers.py:
        # use_threads=False); a chunk is small enough that Arrow's threads bought nothing but that creep.
        pool = pa.default_memory_pool()
        try:
            for batch in reader:
                if rejects is None and self.on_error == "skip":
                    rejects = _LazySink(self.rejects)
                self._chunk(batch, sink, rejects)
                pool.release_unused()
                if self.progress is not None:
                    self.progress(self.rows_in, reader.total_rows)
            if self.rows_in == 0:
                raise BatchError(f"The input {self.inputs.text!r} has no rows: there is nothing to score, and no "
                                 "output was written. Check the input.", path=self.inputs.text)
            if sink.rows == 0:  # every row rejected: an output with the prediction columns and no rows
                sink.write(self._table(None, 0, self.scorer.empty()))
        except BaseException:
            sink.abort()
            if rejects is not None:
                rejects.abort()
            raise
        sink.commit()
        if rejects is not None and rejects.sink is not None:
            rejects.commit()
        else:
            remove(self.rejects)  # a rejects file from an earlier run does not describe this one
        self.seconds = time.perf_counter() - started

    def _chunk(self, batch: Any, sink: Sink, rejects: _LazySink | None) -> None:
        first = self.rows_in
        frame = to_pandas(batch)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                found = Split(scored=[(0, self.scorer.score(frame))])
            except Exception as exc:
                if self.on_error == "fail" or not row_level(exc):
                    raise self._error(exc, first, batch.num_rows) from exc
                found = self.scorer.split(frame, 0, exc)
        self._warn(caught)
        for offset, predictions in found.scored:
            sink.write(self._table(batch, offset, predictions))
        self.rows_in += batch.num_rows
        self.rows_out += sum(len(p) for _, p in found.scored)
        if found.rejected and rejects is not None:
            rejects.write(_rejected_rows(batch, first, found.rejected))
            self.rejected += len(found.rejected)

    def _error(self, exc: BaseException, first: int, rows: int) -> BaseException:
        last = first + rows - 1
        where = f"Rows {first:,}-{last:,} (0-based) of {self.inputs.text!r}"
        return chunk_error(exc, where, {"rows": (first, last), "source": self.inputs.text})

    def _table(self, batch: Any, offset: int, predictions: Any) -> Any:
        import pyarrow as pa

        frame = predictions.to_frame() if predictions.ndim == 1 else predictions
        table = pa.Table.from_pandas(frame, preserve_index=False, nthreads=1)
        if not self.keep_columns or batch is None:
            return table
        kept = pa.Table.from_batches([batch.slice(offset, len(frame))])
        clash = sorted(set(kept.column_names) & set(table.column_names))
        if clash:
            raise BatchError(
                f"The input has column(s) {clash}, which are also the names of the predictions: with keep_columns "
                "the output would hold two columns of one name. Rename those input columns, or leave keep_columns "
                "off.", columns=clash)
        for name in table.column_names:
            kept = kept.append_column(name, table.column(name))
        return kept

    def _warn(self, caught: list[warnings.WarningMessage]) -> None:
        from modelsafe.checks.ranges import InputWarning

        for w in caught:
            text = str(w.message)
            if issubclass(w.category, InputWarning):
                if text in self._seen or len(self._seen) >= _MAX_WARNINGS:
                    continue
                self._seen.add(text)
                self.warned.append(text)
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)


class _LazySink:
    """The rejects file, created on the first rejected row (no rows, no file)."""

    def __init__(self, location: Location) -> None:
        self.location = location
        self.sink: Sink | None = None

    def write(self, table: Any) -> None:
        if self.sink is None:
            self.sink = Sink(self.location)
        self.sink.write(table)

    def commit(self) -> None:
        if self.sink is not None:
            self.sink.commit()

    def abort(self) -> None:
        if self.sink is not None:
            self.sink.abort()


def _rejected_rows(batch: Any, first: int, rejected: list[tuple[int, str]]) -> Any:
    """The rejected input rows with their row number and the reason (the guard's or the model's message)."""
    import pyarrow as pa

    table = pa.Table.from_batches([batch]).take([row for row, _ in rejected])
    row, reason = _free_name(ROW, table), _free_name(REASON, table)
    table = table.append_column(row, pa.array([first + r for r, _ in rejected], pa.int64()))
    return table.append_column(reason, pa.array([text for _, text in rejected], pa.string()))


def to_pandas(batch: Any) -> Any:
    """A chunk as pandas; integer columns with nulls as nullable integers (not floats), so that the input
    guard can say how many values are missing (and ``on_error="skip"`` reject just those rows)."""
    import pyarrow as pa

    if not any(pa.types.is_integer(c.type) and c.null_count for c in batch.columns):
        return batch.to_pandas(use_threads=False)
    import pandas as pd

    def nullable(arrow_type: Any) -> Any:
        name = _NULLABLE.get(str(arrow_type))
        return pd.api.types.pandas_dtype(name) if name else None

    return batch.to_pandas(types_mapper=nullable, use_threads=False)


#: Arrow integer types -> pandas' nullable integer dtypes.
_NULLABLE = {f"{sign}int{bits}": f"{sign.upper()}Int{bits}" for sign in ("", "u") for bits in (8, 16, 32, 64)}


def _free_name(name: str, table: Any) -> str:
    while name in table.column_names:
        name = f"_{name}"
    return name
