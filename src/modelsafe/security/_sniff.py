"""What a model file is, decided by its content (magic bytes), never by its name.

``.bin``, ``.ckpt``, ``.pth``, ``.data`` or no extension at all: the first bytes say
whether a file is a pickle, a zip (torch, Keras, npz, modelsafe, other), a tar, an
``.npy`` array, HDF5, safetensors, a compressed stream, or something unknown.
"""

from __future__ import annotations

import json
import struct

from modelsafe.security._compressed import compression_of

#: Bytes read from the start of a file to decide its kind.
HEAD = 4096
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
#: HDF5 files may start with a user block of 512, 1024, 2048... bytes.
HDF5_OFFSETS = (0, 512, 1024, 2048)
NPY_MAGIC = b"\x93NUMPY"
TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
#: The first pickle of a legacy (non-zip, non-tar) torch.save file: the magic number.
TORCH_LEGACY_PREFIX = b"\x80\x02\x8a\x0a" + TORCH_LEGACY_MAGIC.to_bytes(10, "little") + b"."
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
_OTHER_ARCHIVES = (
    (b"7z\xbc\xaf\x27\x1c", "7z archive"),
    (b"Rar!\x1a\x07", "RAR archive"),
    (b"MSCF", "CAB archive"),
    (b"!<arch>", "ar archive"),
    (b"\xca\xfe\xba\xbe", "Java class / fat binary"),
    (b"\x7fELF", "ELF executable"),
    (b"MZ", "Windows executable"),
    (b"ONNX", "ONNX"),
)
#: First opcodes a protocol 0/1 pickle plausibly starts with.
_OLD_PICKLE_START = frozenset(b"(c)]}ILFSVNTUXJKMGPdlip")


def sniff(head: bytes, size: int) -> str:
    """The kind of a file whose first bytes are ``head`` (at least :data:`HEAD` when available).

    One of: ``empty``, ``zip``, ``tar``, ``npy``, ``hdf5``, ``torch-legacy``, ``pickle``,
    ``maybe-pickle`` (protocol 0/1 start: confirm by reading), ``safetensors``, ``json``,
    ``text``, ``compressed:<kind>``, ``other:<description>`` or ``unknown``.
    """
    if not head:
        return "empty"
    if head.startswith(_ZIP_MAGICS):
        return "zip"
    if head.startswith(NPY_MAGIC):
        return "npy"
    if any(head[o : o + 8] == HDF5_MAGIC for o in HDF5_OFFSETS):
        return "hdf5"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    if head.startswith(TORCH_LEGACY_PREFIX):
        return "torch-legacy"
    if head[0] == 0x80 and len(head) > 1:
        return "pickle"
    for magic, description in _OTHER_ARCHIVES:
        if head.startswith(magic):
            return f"other:{description}"
    compressed = compression_of(head)
    if compressed is not None:
        return f"compressed:{compressed}"
    if _is_safetensors(head, size):
        return "safetensors"
    if head[0] in _OLD_PICKLE_START:
        return "maybe-pickle"
    return text_kind(head)


def _is_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 10:
        return False
    (length,) = struct.unpack("<Q", head[:8])
    return 2 <= length <= size - 8 and head[8:9] == b"{"


def text_kind(head: bytes) -> str:
    """``json``, ``text`` or ``unknown`` (binary) for content that is no known format."""
    if b"\x00" in head:
        return "unknown"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a character cut at the end of the sample
            return "unknown"
        text = head[: exc.start].decode("utf-8")
    stripped = text.lstrip()
    if stripped[:1] in ("{", "["):
        try:
            json.loads(text)
            return "json"
        except ValueError:
            pass
    return "text"


def zip_flavor(names: list[str]) -> str:
    """What a zip holds, from its member names: modelsafe, torch, torchscript, keras, npz or zip."""
    name_set = set(names)
    if "modelsafe.json" in name_set:
        return "modelsafe"
    if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
        if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            return "torchscript"
        return "torch"
    if "config.json" in name_set and ("metadata.json" in name_set or "model.weights.h5" in name_set):
        return "keras"
    if names and all(n.endswith(".npy") for n in names):
        return "npz"
    return "zip"
