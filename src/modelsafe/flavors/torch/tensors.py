"""Tensors as safetensors members: streamed and hashed while written, read without pickle.

:func:`write_tensors` writes one member in the `safetensors <https://github.com/huggingface/
safetensors>`_ layout (8-byte header length, JSON header, raw little-endian data) straight
from each tensor's memory into :meth:`ComponentStore.open`, so the member is hashed while
it is written and no second copy of the weights is made (a non-contiguous or GPU tensor is
copied alone, one at a time). Tensors sharing storage (tied weights) are stored once and
recorded as aliases in the header's ``__metadata__``; :func:`read_tensors` gives the alias
the very same tensor back. The header is padded so the data starts 64-byte aligned.

:func:`read_tensors` validates the header (dtypes, shapes, offsets that tile the data
exactly, size limits) before reading anything. Then either each tensor is read with
``pread`` directly into its own memory (no map stays resident, no temporary copy), or,
with ``mmap=True``, each tensor views a private copy-on-write map of the file through the
reader's own descriptor: nothing is copied, pages are read when first used, and writes
stay in the process. The member is a valid safetensors file: ``safetensors.safe_open``
reads it.

This module is reused by :mod:`modelsafe.flavors.torch.flavor` and by checkpoints.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from modelsafe.errors import FormatError, SaveError

if TYPE_CHECKING:
    import torch

    from modelsafe.flavors._base import ComponentSource, ComponentStore

#: torch dtype name -> safetensors dtype code.
DTYPE_CODES: dict[str, str] = {
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "int64": "I64", "int32": "I32",
    "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL", "uint16": "U16", "uint32": "U32",
    "uint64": "U64", "complex64": "C64", "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2",
    "float8_e4m3fnuz": "F8_E4M3FNUZ", "float8_e5m2fnuz": "F8_E5M2FNUZ",
}
_CODE_DTYPES = {code: name for name, code in DTYPE_CODES.items()}
_ITEMSIZE = {"F64": 8, "I64": 8, "U64": 8, "C64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2,
             "I16": 2, "U16": 2, "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E4M3FNUZ": 1,
             "F8_E5M2FNUZ": 1}
#: The safetensors format's own limit on the JSON header.
HEADER_LIMIT = 100 << 20
ALIGN = 64
ALIASES_KEY = "modelsafe.aliases"
_READ_PIECE = 1 << 30  # one pread call reads at most this much


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a safetensors member: where its bytes are, relative to the data start."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def torch_dtype(self) -> "torch.dtype":
        import torch

        return getattr(torch, _CODE_DTYPES[self.dtype])


@dataclass(frozen=True)
class Header:
    entries: dict[str, TensorEntry]
    metadata: dict[str, str]
    data_start: int

    @property
    def aliases(self) -> dict[str, str]:
        raw = self.metadata.get(ALIASES_KEY)
        return json.loads(raw) if raw else {}


# ---------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------


def named_dtype(name: Any) -> "torch.dtype | None":
    """The torch dtype called ``name`` (``"float32"``), or None when torch has no such dtype."""
    import torch

    dtype = getattr(torch, str(name), None)
    return dtype if isinstance(dtype, torch.dtype) else None


def dtype_code(tensor: "torch.Tensor", name: str) -> str:
    """The safetensors code of ``tensor``'s dtype; SaveError for dtypes safetensors cannot hold."""
    dtype = str(tensor.dtype).removeprefix("torch.")
    code = DTYPE_CODES.get(dtype)
    if code is None:
        raise SaveError(
            f"Tensor {name!r} has dtype torch.{dtype}, which the safetensors format cannot store, so the weights "
            f"cannot be saved without pickle. Convert it first (e.g. tensor.to(torch.float32)).",
            key=name, dtype=dtype)
    return code


def _storage_key(tensor: "torch.Tensor") -> tuple[Any, ...]:
    return (tensor.device, tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape),
            tuple(tensor.stride()), tensor.dtype)


def split_aliases(tensors: Mapping[str, "torch.Tensor"]) -> tuple[dict[str, "torch.Tensor"], dict[str, str]]:
    """Tensors that are exactly the same view of one storage (tied weights) are kept once.

    Returns the unique tensors (first name wins, order kept) and ``{alias: kept name}``.
    """
    unique: dict[str, "torch.Tensor"] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[Any, ...], str] = {}
    for name, tensor in tensors.items():
        _check_storable(name, tensor)
        key = _storage_key(tensor) if tensor.numel() else None
        if key is not None and key in seen:
            aliases[name] = seen[key]
            continue
        if key is not None:
            seen[key] = name
        unique[name] = tensor
    return unique, aliases


def _check_storable(name: str, tensor: Any) -> None:
    import torch

    if not isinstance(tensor, torch.Tensor):
        raise SaveError(f"{name!r} is a {type(tensor).__name__}, not a tensor; only tensors go into a weights member. "
                        "Pass a mapping of names to tensors.", key=name)
    if tensor.layout != torch.strided or tensor.is_quantized:
        raise SaveError(
            f"Tensor {name!r} has layout {tensor.layout}{' (quantized)' if tensor.is_quantized else ''}; only dense "
            "tensors can be stored without pickle. Convert it with tensor.to_dense() (or dequantize()) first.",
            key=name)
    if tensor.device.type == "meta":
        raise SaveError(f"Tensor {name!r} is on the meta device, so it has no values to save. Materialize the model "
                        "(load or initialize its weights) before saving.", key=name)


def _in_place(tensor: "torch.Tensor") -> bool:
    """Whether :func:`host_bytes` of ``tensor`` is a view of its memory (no copy)."""
    return (tensor.device.type == "cpu" and tensor.is_contiguous() and not tensor.is_conj()
            and not tensor.is_neg())


def host_bytes(tensor: "torch.Tensor") -> memoryview:
    """The tensor's bytes in C order on the CPU: zero-copy when it is already contiguous there."""
    import torch

    t = tensor.detach()
    if t.device.type != "cpu":
        t = t.to("cpu")
    if t.is_conj():
        t = t.resolve_conj()
    if t.is_neg():
        t = t.resolve_neg()
    if not t.is_contiguous():
        t = t.contiguous()
    if t.numel() == 0:
        return memoryview(b"")
    return memoryview(t.reshape(-1).view(torch.uint8).numpy())


def layout(tensors: Mapping[str, "torch.Tensor"], metadata: Mapping[str, str] | None = None
           ) -> tuple[bytes, list[tuple[str, "torch.Tensor"]]]:
    """The padded header and the tensors in data order (widest items first, so all stay aligned)."""
    order = sorted(tensors.items(), key=lambda kv: -kv[1].element_size())
    header: dict[str, Any] = {"__metadata__": {"format": "pt", **(metadata or {})}}
    offset = 0
    for name, tensor in order:
        size = tensor.numel() * tensor.element_size()
        header[name] = {"dtype": dtype_code(tensor, name), "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-(8 + len(raw)) % ALIGN)
    return struct.pack("<Q", len(raw)) + raw, order


def write_tensors(store: "ComponentStore", relname: str, tensors: Mapping[str, "torch.Tensor"], *,
                  metadata: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Write ``tensors`` as safetensors member ``relname`` of ``store``, hashed while written.

    Returns a JSON-able record: the member name, ``aliases`` (tied names), tensor count and bytes.
    """
    unique, aliases = split_aliases(tensors)
    meta = dict(metadata or {})
    if aliases:
        meta[ALIASES_KEY] = json.dumps(aliases, separators=(",", ":"))
    head, order = layout(unique, meta)
    total = len(head) + sum(t.numel() * t.element_size() for _, t in order)
    with store.open(relname, size=total) as out:
        if all(_in_place(tensor) for _, tensor in order):
            # Zero-copy views: hashed by one background job while the main thread writes them.
            out.write_pieces([head, *(host_bytes(tensor) for _, tensor in order)])
        else:
            out.write(head)
            for _, tensor in order:  # host copies are made (and dropped) one tensor at a time
                out.write(host_bytes(tensor))
    return {"member": relname, "aliases": aliases, "tensors": len(unique), "bytes": total}


#: Tensors at least this large in all are split into two members, hashed on two cores.
SHARD_BYTES = 64 << 20


def split_for_hashing(tensors: Mapping[str, "torch.Tensor"]
                      ) -> tuple[list[dict[str, "torch.Tensor"]], dict[str, str], int]:
    """The unique tensors in one group, or two of similar size when large (two cores hash them);
    the aliases (see :func:`split_aliases`); and the bytes of the unique tensors."""
    unique, aliases = split_aliases(tensors)
    total = sum(t.numel() * t.element_size() for t in unique.values())
    return shard(unique, 2 if total >= SHARD_BYTES else 1), aliases, total


def shard(tensors: Mapping[str, "torch.Tensor"], parts: int) -> list[dict[str, "torch.Tensor"]]:
    """Split into ``parts`` groups of similar byte size (insertion order kept), so two cores can hash them."""
    sizes = [t.numel() * t.element_size() for t in tensors.values()]
    target = sum(sizes) / max(parts, 1)
    groups: list[dict[str, "torch.Tensor"]] = [{}]
    filled = 0
    for (name, tensor), size in zip(tensors.items(), sizes):
        if filled >= target and len(groups) < parts:
            groups.append({})
            filled = 0
        groups[-1][name] = tensor
        filled += size
    return [g for g in groups if g]


# ---------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------


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
    if dtype not in _ITEMSIZE:
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
    if end < start or end - start != count * _ITEMSIZE[dtype]:
        raise _bad(where, f"entry {name!r} spans {end - start} bytes but shape {shape} of {dtype} needs "
                          f"{count * _ITEMSIZE[dtype]}")
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
    if offset % max(_ITEMSIZE[entry.dtype], 1):  # never for files modelsafe writes: widest items come first
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
        piece = buffer[done : min(total, done + _READ_PIECE)]
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
