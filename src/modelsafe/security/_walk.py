"""The scanner's walk over one file: sniff each piece of content and read it as what it is.

:class:`Walker` collects findings, pickle streams and items, and dispatches each piece of
content by its kind: pickles (:mod:`._walk_pickles`), arrays, configs, compressed streams
and SavedModel graphs (:mod:`._walk_leaves`), containers (zip, tar: :mod:`._walk_archives`).
Whatever goes wrong inside the scanner while reading one piece (a decompressor error, a
corrupt container, a bug) becomes an "incomplete, not clean" finding for that piece, and the
walk goes on with the next one. Nothing is imported from the file, executed or unpickled.
"""

from __future__ import annotations

import io
import os
import struct
from typing import Any, BinaryIO, Protocol

from modelsafe.security import _onnx, _walk_leaves, _walk_pickles
from modelsafe.security._compressed import ExpansionLimit
from modelsafe.security._findings import Finding, ItemRecord, StreamRecord, message
from modelsafe.security._joblib import FORMAT_GLOBALS
from modelsafe.security._members import SliceFile, join
from modelsafe.security._opcodes import PickleSummary
from modelsafe.security._sniff import HEAD, sniff, text_kind
from modelsafe.security._window import Truncated

#: Limits that keep a scan bounded in time and memory.
MAX_DEPTH = 4
MAX_ITEMS = 200_000
MAX_STREAMS = _walk_pickles.MAX_STREAMS
#: Members of one archive, or entries of one folder (the same limit artifacts have).
MAX_MEMBERS = 100_000
#: Decompression errors and the like: the content ends or breaks while being read.
READ_ERRORS = (EOFError, ExpansionLimit, OSError, Truncated, ValueError, struct.error)
#: Content that is harmless wherever it sits: images, documents, audio (never a pickle, see _sniff).
_MEDIA = "media:"


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
        self.findings.append(Finding(severity, kind, location, offset, subject, message(kind, what, subject), what))

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
    def blob(self, location: str, f: BinaryIO, size: int, depth: int, *, raw_ok: bool = False,
             persistent_ok: bool = False, path: str | None = None, container: str = "", role: str = "") -> None:
        """Read one piece of content (a file or a member) as whatever its bytes say it is.

        ``container``: the flavor of the archive it is in (``torchscript`` names its own classes);
        ``role``: what its container says it is (a SavedModel's ``saved_model.pb``).
        """
        try:
            head = f.read(HEAD)
            f.seek(0)
        except READ_ERRORS as exc:
            self.item(location, "unreadable", size)
            self.add("medium", "incomplete", location, 0, "read", f"the content could not be read ({exc})")
            return
        kind = role or sniff(head, size)
        if not self.item(location, kind, size):
            return
        if depth > MAX_DEPTH and kind in ("zip", "tar") or kind.startswith("compressed:") and depth > MAX_DEPTH:
            self.add("medium", "archive-limit", location, 0, kind, f"{kind} nested more than {MAX_DEPTH} deep")
            return
        try:
            self._dispatch(kind, location, f, size, depth, raw_ok, persistent_ok, path, container)
        except READ_ERRORS as exc:
            self.add("medium", "incomplete", location, None, kind, f"the {kind} content broke off while being "
                     f"read ({type(exc).__name__}: {exc})")
        except Exception as exc:  # noqa: BLE001 - a scanner failure must not end the scan, nor pass as clean
            self.add("medium", "incomplete", location, None, kind, f"the scanner could not read this {kind} "
                     f"content ({type(exc).__name__}: {exc}), so it was not read completely")

    def _dispatch(self, kind: str, location: str, f: BinaryIO, size: int, depth: int, raw_ok: bool,
                  persistent_ok: bool, path: str | None, container: str) -> None:
        if kind in ("pickle", "maybe-pickle"):
            index, first = len(self.items) - 1, len(self.streams)
            if self.pickle_file(location, f, persistent_ok=persistent_ok, tolerant=kind == "maybe-pickle",
                                container=container):
                joblib = any(g.name in FORMAT_GLOBALS for s in self.streams[first:] for g in s.globals)
                self.items[index] = ItemRecord(location, "joblib" if joblib else "pickle", size)
                return
            kind = text_kind(f.read(HEAD))
            f.seek(0)
            self.items[-1] = ItemRecord(location, kind, size)
        if kind in ("unknown", "text") and _onnx.scan_onnx(self, location, f, size):
            return  # an ONNX model (a protobuf, with no magic of its own): see security._onnx
        readers = {"npy": _walk_leaves.npy, "safetensors": _walk_leaves.safetensors,
                   "savedmodel-graph": _walk_leaves.savedmodel_graph, "keras-metadata": _walk_leaves.keras_metadata,
                   "json": _walk_leaves.json_doc, "torch-legacy": _walk_pickles.torch_legacy}
        if kind in readers:
            readers[kind](self, location, f, size)
        elif kind == "zip":
            self.archives.scan_zip(self, location, f, size, depth, path=path)
        elif kind == "tar":
            self.archives.scan_tar(self, location, f, depth, streaming=False)
        elif kind == "hdf5":
            _walk_leaves.hdf5(self, location, path or f)
        elif kind.startswith("compressed:"):
            _walk_leaves.compressed(self, location, f, size, kind.split(":", 1)[1], depth)
        elif kind == "empty":
            if not raw_ok:
                self.add("medium", "unknown-format", location, 0, "empty", "the file is empty: there is no model in it")
        elif not raw_ok and not kind.startswith(_MEDIA):
            label = kind.split(":", 1)[1] if kind.startswith("other:") else ("plain text" if kind == "text"
                                                                             else "unrecognized binary data")
            self.add("medium", "unknown-format", location, 0, kind, f"{label} is not a model format modelsafe can "
                     "analyse")

    # -- the readers, each in its module (the archives call them on the walker) -------------
    def pickle_file(self, location: str, f: BinaryIO, **options: Any) -> bool:
        return _walk_pickles.pickle_file(self, location, f, **options)

    def record_stream(self, location: str, s: PickleSummary, persistent_ok: bool, **options: Any) -> None:
        _walk_pickles.record_stream(self, location, s, persistent_ok, **options)

    def keras_config(self, location: str, raw: str | bytes) -> None:
        _walk_leaves.keras_config(self, location, raw)


def open_path(path: str) -> BinaryIO:
    """Open a regular file for reading without following it into a FIFO or device."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    return os.fdopen(fd, "rb")
