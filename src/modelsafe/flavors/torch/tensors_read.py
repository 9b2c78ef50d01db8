"""Reading safetensors members without pickle: the header validated first, then the tensors.

:func:`read_tensors` validates the header (dtypes, shapes, offsets that tile the data
exactly, size limits) before reading anything. Then either each tensor is read with
``pread`` directly into its own memory (no map stays resident, no temporary copy), or,
with ``mmap=True``, each tensor views a private copy-on-write map of the file through the
reader's own descriptor: nothing is copied, pages are read when first used, and writes
stay in the process. A member that is not a plain stretch of a local file (one downloaded
from a remote store) is taken whole as the private buffer it was read and hashed into, and
the tensors view it: it is held once. Aliases recorded at save (tied weights) get the very same tensor back.
The writing side and the format's constants are in :mod:`.tensors`.
"""

from __future__ import annotations

import json
import os
import struct
from typing import TYPE_CHECKING, Any, Iterable

from modelsafe.errors import FormatError
from modelsafe.flavors.torch.tensors import (
    HEADER_LIMIT,
    ITEMSIZE,
    READ_PIECE,
    Header,
    TensorEntry,
)

if TYPE_CHECKING:
    import torch

    from modelsafe.flavors._base import ComponentSource

__all__ = ["parse_header", "read_header", "read_tensors"]


def _bad(where: str, problem: str) -> FormatError:
    return FormatError(
        f"The tensor member {where!r} is not a valid safetensors file: {problem}. Its bytes match the manifest, so "
        "it was written this way (a bug or a crafted file); nothing was loaded from it. Re-export the model.",
        member=where, problem=problem)


def parse_header(view: memoryview | bytes, where: str) -> Header:
    """Read and validate the header of a safetensors member held in ``view`` (only its start is read)."""
    size = len(view)
    if size < 8:
        raise _bad(where, f"it is {size} bytes, shorter than the 8-byte header length")
    (length,) = struct.unpack("<Q", bytes(view[:8]))
    if length > HEADER_LIMIT or 8 + length > size:
        raise _bad(where, f"its header claims {length} bytes but the member holds {size}")
    try:
        raw = json.loads(bytes(view[8 : 8 + length]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(where, f"its header is not JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise _bad(where, "its header is not a JSON object")
    metadata = raw.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _bad(where, "its __metadata__ is not a mapping of strings")
    entries = {name: _entry(name, spec, where) for name, spec in raw.items()}
    data_len = size - 8 - length
    _check_tiling(entries.values(), data_len, where)
    header = Header(entries, metadata, 8 + length)
    _check_aliases(header, where)
    return header


def _entry(name: str, spec: Any, where: str) -> TensorEntry:
    if not isinstance(spec, dict) or set(spec) - {"dtype", "shape", "data_offsets"}:
        raise _bad(where, f"entry {name!r} is malformed")
    dtype, shape, offsets = spec.get("dtype"), spec.get("shape"), spec.get("data_offsets")
    if dtype not in ITEMSIZE:
        raise _bad(where, f"entry {name!r} has unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise _bad(where, f"entry {name!r} has an invalid shape {shape!r}")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets)):
        raise _bad(where, f"entry {name!r} has invalid data_offsets {offsets!r}")
    start, end = offsets
    count = 1
    for dim in shape:
        count *= dim
    if end < start or end - start != count * ITEMSIZE[dtype]:
        raise _bad(where, f"entry {name!r} spans {end - start} bytes but shape {shape} of {dtype} needs "
                          f"{count * ITEMSIZE[dtype]}")
    return TensorEntry(name, dtype, tuple(shape), start, end)


def _check_tiling(entries: Iterable[TensorEntry], data_len: int, where: str) -> None:
    position = 0
    for entry in sorted(entries, key=lambda e: (e.start, e.end)):
        if entry.start != position:
            raise _bad(where, f"entry {entry.name!r} starts at byte {entry.start}, expected {position} "
                              "(tensors must tile the data without gaps or overlaps)")
        position = entry.end
    if position != data_len:
        raise _bad(where, f"the tensors cover {position} bytes but the data section holds {data_len}")


def _check_aliases(header: Header, where: str) -> None:
    try:
        aliases = header.aliases
    except json.JSONDecodeError:
        raise _bad(where, "its alias table is not JSON") from None
    if not isinstance(aliases, dict) or not all(
            isinstance(a, str) and isinstance(t, str) and t in header.entries and a not in header.entries
            for a, t in aliases.items()):
        raise _bad(where, "its alias table names tensors it does not hold")


def read_header(source: "ComponentSource", relname: str) -> Header:
    """The validated header of member ``relname`` (reads only the header bytes)."""
    view = source.view(relname)
    return parse_header(view, source.prefix + "/" + relname)


def read_tensors(source: "ComponentSource", relname: str, device: "str | torch.device | None" = None, *,
                 header: Header | None = None, names: Iterable[str] | None = None,
                 mmap: bool = False) -> dict[str, "torch.Tensor"]:
    """Read the tensors of member ``relname`` (all, or ``names``) onto ``device`` (default CPU).

    ``mmap=True`` gives CPU tensors backed by a private, copy-on-write map of the file (no
    copy is made; pages are read when first used, and writes stay in this process), each
    tensor with a storage of its own. Otherwise each tensor is read into its own memory.
    Aliases recorded at write come back as the same tensor object under each name.
    """
    header = header or read_header(source, relname)
    wanted = header.entries if names is None else {n: header.entries[n] for n in names if n in header.entries}
    located = source.locate(relname)
    base = _file_map(source, located[0]) if located is not None and mmap else None
    if base is not None:
        tensors = {e.name: _mapped(base, located[1] + header.data_start, e) for e in wanted.values()}
    elif located is not None:
        tensors = _pread_all(located[0], located[1] + header.data_start, wanted.values())
    elif names is None:  # a remote member: the tensors are views of the verified buffer it was downloaded into
        import numpy as np

        base = np.frombuffer(source.private(relname), dtype=np.uint8)
        tensors = {e.name: _mapped(base, header.data_start, e) for e in wanted.values()}
    else:
        view = source.view(relname)
        tensors = {e.name: _from_view(view, header.data_start, e) for e in wanted.values()}
    if device is not None and str(device) != "cpu":
        tensors = {name: t.to(device) for name, t in tensors.items()}
    for alias, target in header.aliases.items():
        if target in tensors:
            tensors[alias] = tensors[target]
    return tensors


def _file_map(source: "ComponentSource", fd: int) -> Any:
    """One private (copy-on-write) map of the file behind ``fd`` as a writable uint8 array (None: cannot map)."""
    import mmap as _mmap

    import numpy as np

    key = f"map:{fd}"
    if key not in source.cache:
        size = os.fstat(fd).st_size
        try:
            mapping = _mmap.mmap(fd, size, access=_mmap.ACCESS_COPY) if size else None
        except (OSError, ValueError):  # a file system that cannot map: read the tensors instead
            return None
        source.cache[key] = np.frombuffer(mapping, dtype=np.uint8) if mapping is not None else np.empty(0, np.uint8)
    return source.cache[key]


def _mapped(base: Any, start: int, entry: TensorEntry) -> "torch.Tensor":
    import torch

    offset = start + entry.start
    if offset % max(ITEMSIZE[entry.dtype], 1):  # never for files modelsafe writes: widest items come first
        import numpy as np

        tensor = _empty(entry)
        np.copyto(np.frombuffer(_writable_bytes(tensor), dtype=np.uint8), base[offset : start + entry.end])
        return tensor
    return torch.from_numpy(base[offset : start + entry.end]).view(entry.torch_dtype).reshape(entry.shape)


def _empty(entry: TensorEntry) -> "torch.Tensor":
    import torch

    return torch.empty(entry.shape, dtype=entry.torch_dtype)


def _writable_bytes(tensor: "torch.Tensor") -> memoryview:
    import torch

    return memoryview(tensor.reshape(-1).view(torch.uint8).numpy())


def _pread_all(fd: int, base: int, entries: Iterable[TensorEntry]) -> dict[str, "torch.Tensor"]:
    out: dict[str, "torch.Tensor"] = {}
    for entry in sorted(entries, key=lambda e: e.start):
        tensor = _empty(entry)
        if entry.end > entry.start:
            _pread_into(fd, _writable_bytes(tensor), base + entry.start, entry.name)
        out[entry.name] = tensor
    return out


def _pread_into(fd: int, buffer: memoryview, offset: int, name: str) -> None:
    done = 0
    total = len(buffer)
    while done < total:
        piece = buffer[done : min(total, done + READ_PIECE)]
        if hasattr(os, "preadv"):
            n = os.preadv(fd, [piece], offset + done)
        else:  # pragma: no cover - platforms without preadv (Windows): one copy per piece
            os.lseek(fd, offset + done, os.SEEK_SET)
            data = os.read(fd, len(piece))
            piece[: len(data)] = data
            n = len(data)
        if n <= 0:
            raise FormatError(f"The file ended while reading tensor {name!r}: it was truncated after it was checked. "
                              "Copy the artifact again from its source.", member=name)
        done += n


def _from_view(view: memoryview, data_start: int, entry: TensorEntry) -> "torch.Tensor":
    import numpy as np

    tensor = _empty(entry)
    if entry.end > entry.start:
        src = np.frombuffer(view, dtype=np.uint8, count=entry.end - entry.start, offset=data_start + entry.start)
        np.copyto(np.frombuffer(_writable_bytes(tensor), dtype=np.uint8), src)
    return tensor
