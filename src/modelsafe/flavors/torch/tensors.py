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
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from modelsafe.errors import SaveError

if TYPE_CHECKING:
    import torch

    from modelsafe.flavors._base import ComponentStore

#: torch dtype name -> safetensors dtype code.
DTYPE_CODES: dict[str, str] = {
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "int64": "I64", "int32": "I32",
    "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL", "uint16": "U16", "uint32": "U32",
    "uint64": "U64", "complex64": "C64", "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2",
    "float8_e4m3fnuz": "F8_E4M3FNUZ", "float8_e5m2fnuz": "F8_E5M2FNUZ",
}
CODE_DTYPES = {code: name for name, code in DTYPE_CODES.items()}
ITEMSIZE = {"F64": 8, "I64": 8, "U64": 8, "C64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2,
             "I16": 2, "U16": 2, "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E4M3FNUZ": 1,
             "F8_E5M2FNUZ": 1}
#: The safetensors format's own limit on the JSON header.
HEADER_LIMIT = 100 << 20
ALIGN = 64
ALIASES_KEY = "modelsafe.aliases"
READ_PIECE = 1 << 30  # one pread call reads at most this much


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

        return getattr(torch, CODE_DTYPES[self.dtype])


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
