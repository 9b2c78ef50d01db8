"""The scanner's reading of content that is not a pickle or an archive, but may hold one or code.

``.npy`` arrays (an object array holds a pickle), safetensors headers, HDF5 and JSON
Keras model configs, compressed streams (a pickle or a tar inside), and TensorFlow
SavedModel graphs. Nothing is imported from the file, executed or unpickled.
"""

from __future__ import annotations

import io
import json
import struct
from typing import Any, BinaryIO

from modelsafe.security._compressed import Decompressed, available
from modelsafe.security._findings import ItemRecord
from modelsafe.security._keras_config import check_config
from modelsafe.security._members import SliceFile, join
from modelsafe.security._sniff import HEAD, sniff

#: The scan's walker (:class:`._walk.Walker`), which imports this module.
Walker = Any

MAX_NPY_HEADER = 1 << 20
MAX_GRAPH = 2 << 30


def npy(w: Walker, location: str, f: BinaryIO, size: int) -> None:
    """An .npy array: its header, and the pickle stream an object array holds."""
    import ast

    import numpy as np

    head = f.read(10)
    major = head[6] if len(head) > 6 else 0
    if major not in (1, 2, 3) or len(head) < 10:
        w.add("medium", "unknown-format", location, 6, "npy", f".npy format version {major} is unknown")
        return
    length = int.from_bytes(head[8:10] + (f.read(2) if major > 1 else b""), "little")
    start = 10 if major == 1 else 12
    if length > MAX_NPY_HEADER:
        w.add("medium", "archive-limit", location, 8, "npy header", f"the .npy header claims {length} bytes")
        return
    raw = f.read(length)
    try:
        header = ast.literal_eval(raw.decode("utf-8" if major == 3 else "latin-1"))
        dtype = np.lib.format.descr_to_dtype(header["descr"])
        shape = tuple(int(n) for n in header["shape"])
    except (ValueError, SyntaxError, TypeError, KeyError, RecursionError, MemoryError, UnicodeDecodeError) as exc:
        w.add("medium", "incomplete", location, start, "npy header", f"the .npy header is malformed ({exc!r:.200})")
        return
    data_start = start + length
    if dtype.hasobject:
        w.items[-1] = ItemRecord(location, "npy", size, {"dtype": str(dtype), "object_array": True})
        sub = SliceFile(f, data_start, size - data_start)
        if not w.pickle_file(join(location, "object-array-data"), sub):
            w.add("medium", "incomplete", location, data_start, "object array", "the object array holds no "
                  "readable pickle stream")
        return
    expected = int(np.prod(shape, dtype=np.uint64)) * dtype.itemsize
    if size - data_start != expected:
        w.add("medium", "incomplete", location, data_start, "npy data",
              f"the array {dtype} {shape} needs {expected} bytes of data but the file holds {size - data_start}")


def safetensors(w: Walker, location: str, f: BinaryIO, size: int) -> None:
    (length,) = struct.unpack("<Q", f.read(8))
    try:
        header = json.loads(f.read(length))
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        w.add("medium", "incomplete", location, 8, "safetensors header", f"the safetensors header is "
              f"malformed ({exc})")
        return
    if max(ends, default=0) > size - 8 - length:
        w.add("medium", "incomplete", location, 8 + length, "safetensors data",
              f"tensors need {max(ends)} bytes but the file holds {size - 8 - length}")


def hdf5(w: Walker, location: str, source: Any) -> None:
    """HDF5: a Keras model config (attributes only; no dataset is read)."""
    try:
        import h5py
    except ImportError:
        w.add("medium", "unknown-format", location, 0, "hdf5", "HDF5 content cannot be analysed without h5py")
        return
    try:
        with h5py.File(source, "r") as h5:
            attrs = {k: h5.attrs[k] for k in ("model_config", "training_config", "keras_version", "backend")
                     if k in h5.attrs}
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        w.add("medium", "incomplete", location, 0, "hdf5", f"the HDF5 file could not be read ({exc})")
        return
    texts = {k: v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for k, v in attrs.items()}
    w.items[-1] = ItemRecord(location, "hdf5", w.items[-1].size,
                             {k: texts[k] for k in ("keras_version", "backend") if k in texts})
    for key in ("model_config", "training_config"):
        if key in texts:
            keras_config(w, join(location, key), texts[key])


def keras_config(w: Walker, location: str, raw: str | bytes) -> None:
    try:
        config = json.loads(raw)
    except ValueError as exc:
        w.add("medium", "incomplete", location, 0, "config", f"the model config is not valid JSON ({exc})")
        return
    for issue in check_config(config, keras3=True):
        w.add(issue.severity, "keras-code", f"{location}:{issue.where}", None, issue.subject,
              f"{issue.subject} at {issue.where}: {issue.message}")


def json_doc(w: Walker, location: str, f: BinaryIO, size: int) -> None:
    if size > 64 << 20:
        return
    raw = f.read()
    if b'"class_name"' in raw:
        keras_config(w, location, raw)


def compressed(w: Walker, location: str, f: BinaryIO, size: int, kind: str, depth: int) -> None:
    """A compressed stream: decompress forward and read the pickle (or tar) inside."""
    if not available(kind):
        w.add("medium", "unknown-format", location, 0, kind, f"the file is {kind}-compressed, which this "
              "Python cannot decompress")
        return

    def reopen() -> BinaryIO:
        f.seek(0)
        return io.BufferedReader(Decompressed(f, kind, size), 1 << 20)  # type: ignore[arg-type]

    stream = reopen()
    inner = sniff(stream.peek(HEAD)[:HEAD], 1 << 62)
    w.items[-1] = ItemRecord(location, f"compressed:{kind}", size, {"content": inner})
    if inner in ("pickle", "maybe-pickle"):
        if w.pickle_file(location, stream, tolerant=inner == "maybe-pickle", reopen=reopen):
            return
    elif inner == "tar":
        w.archives.scan_tar(w, location, stream, depth + 1, streaming=True)
        return
    w.add("medium", "unknown-format", location, 0, kind, f"{kind}-compressed {inner} content is not a "
          "format modelsafe can analyse")


def savedmodel_graph(w: Walker, location: str, f: BinaryIO, size: int) -> None:
    """A SavedModel's ``saved_model.pb``: the ops loading or calling it could run (see :mod:`._savedmodel`)."""
    from modelsafe.security._savedmodel import PYTHON_OPS, GraphUnreadable, effect_ops

    if size > MAX_GRAPH:
        w.add("medium", "archive-limit", location, None, "SavedModel", f"the graph holds {size} bytes")
        return
    try:
        found = effect_ops(f.read())
    except GraphUnreadable as exc:
        w.add("medium", "incomplete", location, None, "SavedModel", f"the SavedModel graph cannot be analysed: {exc}")
        return
    w.items[-1] = ItemRecord(location, "savedmodel-graph", size, {"effect_ops": sorted(found)})
    for op, places in sorted(found.items()):
        w.add("critical" if op in PYTHON_OPS else "high", "graph-op", location, None, op,
              f"the SavedModel's graph runs the {op} op ({', '.join(places[:3])}"
              f"{f' and {len(places) - 3} more' if len(places) > 3 else ''})")


def keras_metadata(w: Walker, location: str, f: BinaryIO, size: int) -> None:
    """Keras 2's ``keras_metadata.pb`` in a SavedModel: every layer config, checked like a model config."""
    from modelsafe.security._savedmodel import GraphUnreadable
    from modelsafe.security._savedmodel import keras_metadata as layers

    try:
        configs = layers(f.read(min(size, MAX_GRAPH)))
    except GraphUnreadable as exc:
        w.add("medium", "incomplete", location, None, "keras metadata", f"the Keras metadata cannot be read: {exc}")
        return
    w.items[-1] = ItemRecord(location, "keras-metadata", size, {"layers": len(configs)})
    for where, raw in configs:
        keras_config(w, f"{location}:{where}", raw)
