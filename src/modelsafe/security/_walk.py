"""The scanner's walk over one file: sniff each piece of content and read it as what it is.

:class:`Walker` collects findings, pickle streams and items. Containers (zip, tar,
directories) live in :mod:`._walk_archives`; this module reads the leaves: pickle
streams (plain, joblib, legacy torch), ``.npy`` arrays, HDF5 model configs,
safetensors headers and compressed streams. Nothing is imported from the file,
executed or unpickled.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
from typing import Any, BinaryIO, Callable, Protocol

from modelsafe.security._allowlist import canonical, verdict
from modelsafe.security._compressed import Decompressed, ExpansionLimit, available
from modelsafe.security._findings import (
    Finding,
    GlobalRecord,
    ItemRecord,
    StreamRecord,
    message,
)
from modelsafe.security._joblib import FORMAT_GLOBALS, skip_array_data
from modelsafe.security._keras_config import check_config
from modelsafe.security._opcodes import PickleSummary
from modelsafe.security._sniff import HEAD, sniff, text_kind
from modelsafe.security._streams import StreamReader
from modelsafe.security._window import Truncated

#: Limits that keep a scan bounded in time and memory.
MAX_DEPTH = 4
MAX_ITEMS = 200_000
MAX_STREAMS = 10_000
#: Members of one archive, or entries of one folder (the same limit artifacts have).
MAX_MEMBERS = 100_000
MAX_NPY_HEADER = 1 << 20
#: Decompression errors and the like: the content ends or breaks while being read.
READ_ERRORS = (EOFError, ExpansionLimit, OSError, Truncated, ValueError, struct.error)


def join(parent: str, name: str) -> str:
    """Location of ``name`` inside ``parent`` (nested containers joined with ``!``)."""
    return f"{parent}!{name}" if parent else name


class SliceFile(io.RawIOBase):
    """A read-only, seekable window ``[start, start + size)`` of a seekable file."""

    def __init__(self, raw: BinaryIO, start: int, size: int) -> None:
        self._raw, self._start, self._size, self._pos = raw, start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, b: Any) -> int:
        n = max(0, min(len(b), self._size - self._pos))
        if not n:
            return 0
        self._raw.seek(self._start + self._pos)
        data = self._raw.read(n)
        b[: len(data)] = data
        self._pos += len(data)
        return len(data)


class Archives(Protocol):
    """How the walker reads archives (:mod:`._walk_archives`, which recurses into the walker)."""

    def scan_zip(self, w: "Walker", location: str, f: BinaryIO, size: int, depth: int, *,
                 path: str | None = None) -> None: ...

    def scan_tar(self, w: "Walker", location: str, f: BinaryIO, depth: int, *, streaming: bool) -> None: ...


class Walker:
    """Collects what a scan finds. One per ``scan`` call; ``archives`` reads zip and tar content."""

    def __init__(self, archives: Archives) -> None:
        self.archives = archives
        self.findings: list[Finding] = []
        self.streams: list[StreamRecord] = []
        self.items: list[ItemRecord] = []
        self.facts: dict[str, Any] = {}

    def add(self, severity: str, kind: str, location: str, offset: int | None, subject: str, what: str) -> None:
        self.findings.append(Finding(severity, kind, location, offset, subject, message(kind, what), what))

    def item(self, location: str, kind: str, size: int, **facts: Any) -> bool:
        """Record an item; False (with a finding) once the scan's item budget is spent."""
        if len(self.items) >= MAX_ITEMS:
            if len(self.items) == MAX_ITEMS:
                self.add("medium", "archive-limit", location, None, "items",
                         f"more than {MAX_ITEMS} files and members; the rest was not read")
                self.items.append(ItemRecord(location, "not-read", size))
            return False
        self.items.append(ItemRecord(location, kind, size, facts))
        return True

    # -- dispatch ------------------------------------------------------------------------
    def blob(self, location: str, f: BinaryIO, size: int, depth: int, *, raw_ok: bool = False, persistent_ok: bool = False, path: str | None = None) -> None:
        """Read one piece of content (a file or a member) as whatever its bytes say it is."""
        try:
            head = f.read(HEAD)
            f.seek(0)
        except READ_ERRORS as exc:
            self.item(location, "unreadable", size)
            self.add("medium", "incomplete", location, 0, "read", f"the content could not be read ({exc})")
            return
        kind = sniff(head, size)
        if not self.item(location, kind, size):
            return
        if depth > MAX_DEPTH and kind in ("zip", "tar") or kind.startswith("compressed:") and depth > MAX_DEPTH:
            self.add("medium", "archive-limit", location, 0, kind, f"{kind} nested more than {MAX_DEPTH} deep")
            return
        try:
            self._dispatch(kind, location, f, size, depth, raw_ok, persistent_ok, path)
        except READ_ERRORS as exc:
            self.add("medium", "incomplete", location, None, kind, f"the {kind} content broke off while being "
                     f"read ({type(exc).__name__}: {exc})")

    def _dispatch(self, kind: str, location: str, f: BinaryIO, size: int, depth: int, raw_ok: bool,
                  persistent_ok: bool, path: str | None) -> None:
        if kind in ("pickle", "maybe-pickle"):
            index, first = len(self.items) - 1, len(self.streams)
            if self.pickle_file(location, f, persistent_ok=persistent_ok, tolerant=kind == "maybe-pickle"):
                joblib = any(g.name in FORMAT_GLOBALS for s in self.streams[first:] for g in s.globals)
                self.items[index] = ItemRecord(location, "joblib" if joblib else "pickle", size)
                return
            kind = text_kind(f.read(HEAD))
            f.seek(0)
            self.items[-1] = ItemRecord(location, kind, size)
        if kind == "torch-legacy":
            self.torch_legacy(location, f, size)
        elif kind == "zip":
            self.archives.scan_zip(self, location, f, size, depth, path=path)
        elif kind == "tar":
            self.archives.scan_tar(self, location, f, depth, streaming=False)
        elif kind == "npy":
            self.npy(location, f, size)
        elif kind == "hdf5":
            self.hdf5(location, path or f)
        elif kind == "safetensors":
            self.safetensors(location, f, size)
        elif kind.startswith("compressed:"):
            self.compressed(location, f, size, kind.split(":", 1)[1], depth)
        elif kind == "json":
            self.json_doc(location, f, size)
        elif kind == "empty":
            if not raw_ok:
                self.add("medium", "unknown-format", location, 0, "empty", "the file is empty: there is no model in it")
        elif not raw_ok:
            label = kind.split(":", 1)[1] if kind.startswith("other:") else ("plain text" if kind == "text"
                                                                             else "unrecognized binary data")
            self.add("medium", "unknown-format", location, 0, kind, f"{label} is not a model format modelsafe can "
                     "analyse")

    # -- pickles -------------------------------------------------------------------------
    def pickle_file(self, location: str, f: BinaryIO, *, persistent_ok: bool = False, tolerant: bool = False,
                    reopen: Callable[[], BinaryIO] | None = None) -> bool:
        """Every consecutive pickle stream in ``f``; False if a tolerant start proves not to be a pickle.

        Streams are read in the fast mode first; a joblib file (its wrapper global appears) is read
        again from the start in value mode, which steps over its raw array data. ``reopen`` gives a
        fresh stream for that second pass (default: seek ``f`` to 0); a stream that can be read only
        once (not seekable, no ``reopen``) is read in value mode from the start.
        """
        seekable = reopen is not None or f.seekable()
        summaries, limited = _streams(f, None if seekable else skip_array_data)
        if seekable and any(g.qualname in FORMAT_GLOBALS for s in summaries for g in s.globals):
            if reopen is None:
                f.seek(0)
            summaries, limited = _streams(f if reopen is None else reopen(), skip_array_data)
        if summaries and tolerant and not summaries[0].complete and not summaries[0].globals:
            if seekable and reopen is None:
                f.seek(0)
            return False
        for index, summary in enumerate(summaries):
            self.record_stream(location, summary, persistent_ok, trailing=index > 0)
        if limited:
            self.add("medium", "archive-limit", location, summaries[-1].end_offset, "streams",
                     f"more than {MAX_STREAMS} consecutive pickle streams; the rest was not read")
        return True

    def record_stream(self, location: str, s: PickleSummary, persistent_ok: bool, *, trailing: bool = False) -> None:
        records = []
        for g in sorted(s.globals, key=lambda g: g.offset):
            (module, name), kind = _judge(g.module, g.name, g.invoked, s.protocol)
            records.append(GlobalRecord(name, g.invoked, kind, g.offset, module))
            how = "called while loading" if g.invoked else "referenced as a value"
            alias = f", written as {g.qualname}" if name != g.qualname else ""
            if kind == "dangerous":
                self.add("critical", "dangerous-global", location, g.offset, name,
                         f"the pickle stream names {name} ({how}{alias})")
            elif kind == "unknown":
                self.add("high", "unknown-global", location, g.offset, name,
                         f"the pickle stream names {name} ({how}{alias})")
        if s.problems:
            what = "data after the last pickle stream is not a pickle" if trailing and not s.globals else \
                "the pickle stream could not be read to its end"
            self.add("medium", "incomplete", location, s.end_offset, "stream", f"{what} ({'; '.join(s.problems)})")
        if s.persistent_ids and not persistent_ok:
            self.add("medium", "persistent-id", location, s.start_offset, "persistent id",
                     f"the pickle stream uses {s.persistent_ids} persistent id(s)")
        if s.protocol > pickle.HIGHEST_PROTOCOL:
            self.add("medium", "incomplete", location, s.start_offset, f"protocol {s.protocol}",
                     f"the stream uses pickle protocol {s.protocol}, newer than this Python's "
                     f"{pickle.HIGHEST_PROTOCOL}")
        self.streams.append(StreamRecord(location, s.start_offset, s.protocol, s.n_opcodes, s.complete,
                                         tuple(records), s.persistent_ids))

    def torch_legacy(self, location: str, f: BinaryIO, size: int) -> None:
        """torch.save's pre-zip format: five pickles (magic, version, sys info, object, keys), then raw storage."""
        reader = StreamReader(f)
        for index in range(5):
            if reader.at_end():
                self.add("medium", "incomplete", location, reader.offset, "legacy torch file",
                         f"the legacy torch file ends after {index} of its 5 pickle streams")
                return
            summary = reader.next_stream()
            self.record_stream(location, summary, persistent_ok=index == 3)
            if not summary.complete:
                return
        self.items[-1] = ItemRecord(location, "torch-legacy", size, {"tensor_data_bytes": size - reader.offset})

    # -- arrays and weights --------------------------------------------------------------
    def npy(self, location: str, f: BinaryIO, size: int) -> None:
        """An .npy array: its header, and the pickle stream an object array holds."""
        import ast

        import numpy as np

        head = f.read(10)
        major = head[6] if len(head) > 6 else 0
        if major not in (1, 2, 3) or len(head) < 10:
            self.add("medium", "unknown-format", location, 6, "npy", f".npy format version {major} is unknown")
            return
        length = int.from_bytes(head[8:10] + (f.read(2) if major > 1 else b""), "little")
        start = 10 if major == 1 else 12
        if length > MAX_NPY_HEADER:
            self.add("medium", "archive-limit", location, 8, "npy header", f"the .npy header claims {length} bytes")
            return
        raw = f.read(length)
        try:
            header = ast.literal_eval(raw.decode("utf-8" if major == 3 else "latin-1"))
            dtype = np.lib.format.descr_to_dtype(header["descr"])
            shape = tuple(int(n) for n in header["shape"])
        except (ValueError, SyntaxError, TypeError, KeyError, RecursionError, MemoryError, UnicodeDecodeError) as exc:
            self.add("medium", "incomplete", location, start, "npy header", f"the .npy header is malformed ({exc!r:.200})")
            return
        data_start = start + length
        if dtype.hasobject:
            self.items[-1] = ItemRecord(location, "npy", size, {"dtype": str(dtype), "object_array": True})
            sub = SliceFile(f, data_start, size - data_start)
            if not self.pickle_file(join(location, "object-array-data"), sub):
                self.add("medium", "incomplete", location, data_start, "object array", "the object array holds no "
                         "readable pickle stream")
            return
        expected = int(np.prod(shape, dtype=np.uint64)) * dtype.itemsize
        if size - data_start != expected:
            self.add("medium", "incomplete", location, data_start, "npy data",
                     f"the array {dtype} {shape} needs {expected} bytes of data but the file holds {size - data_start}")

    def safetensors(self, location: str, f: BinaryIO, size: int) -> None:
        (length,) = struct.unpack("<Q", f.read(8))
        try:
            header = json.loads(f.read(length))
            ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            self.add("medium", "incomplete", location, 8, "safetensors header", f"the safetensors header is "
                     f"malformed ({exc})")
            return
        if max(ends, default=0) > size - 8 - length:
            self.add("medium", "incomplete", location, 8 + length, "safetensors data",
                     f"tensors need {max(ends)} bytes but the file holds {size - 8 - length}")

    def hdf5(self, location: str, source: Any) -> None:
        """HDF5: a Keras model config (attributes only; no dataset is read)."""
        try:
            import h5py
        except ImportError:
            self.add("medium", "unknown-format", location, 0, "hdf5", "HDF5 content cannot be analysed without h5py")
            return
        try:
            with h5py.File(source, "r") as h5:
                attrs = {k: h5.attrs[k] for k in ("model_config", "training_config", "keras_version", "backend")
                         if k in h5.attrs}
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            self.add("medium", "incomplete", location, 0, "hdf5", f"the HDF5 file could not be read ({exc})")
            return
        texts = {k: v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for k, v in attrs.items()}
        self.items[-1] = ItemRecord(location, "hdf5", self.items[-1].size,
                                    {k: texts[k] for k in ("keras_version", "backend") if k in texts})
        for key in ("model_config", "training_config"):
            if key in texts:
                self.keras_config(join(location, key), texts[key])

    def keras_config(self, location: str, raw: str | bytes) -> None:
        try:
            config = json.loads(raw)
        except ValueError as exc:
            self.add("medium", "incomplete", location, 0, "config", f"the model config is not valid JSON ({exc})")
            return
        for issue in check_config(config, keras3=True):
            self.add(issue.severity, "keras-code", f"{location}:{issue.where}", None, issue.subject,
                     f"{issue.subject} at {issue.where}: {issue.message}")

    def json_doc(self, location: str, f: BinaryIO, size: int) -> None:
        if size > 64 << 20:
            return
        raw = f.read()
        if b'"class_name"' in raw:
            self.keras_config(location, raw)

    def compressed(self, location: str, f: BinaryIO, size: int, kind: str, depth: int) -> None:
        """A compressed stream: decompress forward and read the pickle (or tar) inside."""
        if not available(kind):
            self.add("medium", "unknown-format", location, 0, kind, f"the file is {kind}-compressed, which this "
                     "Python cannot decompress")
            return
        def reopen() -> BinaryIO:
            f.seek(0)
            return io.BufferedReader(Decompressed(f, kind, size), 1 << 20)

        stream = reopen()
        inner = sniff(stream.peek(HEAD)[:HEAD], 1 << 62)
        self.items[-1] = ItemRecord(location, f"compressed:{kind}", size, {"content": inner})
        if inner in ("pickle", "maybe-pickle"):
            if self.pickle_file(location, stream, tolerant=inner == "maybe-pickle", reopen=reopen):
                return
        elif inner == "tar":
            self.archives.scan_tar(self, location, stream, depth + 1, streaming=True)
            return
        self.add("medium", "unknown-format", location, 0, kind, f"{kind}-compressed {inner} content is not a "
                 "format modelsafe can analyse")


def _judge(module: str, name: str, invoked: bool, protocol: int) -> tuple[tuple[str, str], str]:
    """((module, full name) as Python resolves it, verdict). Below protocol 3 pickle maps Python 2
    names (``__builtin__.eval``, ``commands.Popen``) to Python 3 ones; the allowlist judges those."""
    if f"{module}.{name}" in FORMAT_GLOBALS:
        return (module, f"{module}.{name}"), "safe"
    mapped = canonical(module, name) if protocol < 3 else (module, name)
    return (mapped[0], f"{mapped[0]}.{mapped[1]}"), verdict(module, name, invoked=invoked)


def _streams(f: BinaryIO, hook: Any) -> tuple[list[PickleSummary], bool]:
    """Consecutive streams of ``f`` (until its end or an incomplete one); True if MAX_STREAMS cut it."""
    reader = StreamReader(f, raw_data=hook)
    out: list[PickleSummary] = []
    while not reader.at_end():
        if len(out) >= MAX_STREAMS:
            return out, True
        out.append(reader.next_stream())
        if not out[-1].complete:
            break
    return out, False


def open_path(path: str) -> BinaryIO:
    """Open a regular file for reading without following it into a FIFO or device."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    return os.fdopen(fd, "rb")
