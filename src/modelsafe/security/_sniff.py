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
#: Images, documents and audio: never a model, and never a pickle either (checked by :func:`sniff`).
_MEDIA = (
    (b"\x89PNG\r\n\x1a\n", "PNG image"), (b"\xff\xd8\xff", "JPEG image"), (b"GIF87a", "GIF image"),
    (b"GIF89a", "GIF image"), (b"%PDF-", "PDF document"), (b"II*\x00", "TIFF image"), (b"MM\x00*", "TIFF image"),
    (b"ID3", "MP3 audio"), (b"OggS", "Ogg media"), (b"fLaC", "FLAC audio"), (b"SQLite format 3\x00", "SQLite database"),
)
#: First opcodes a protocol 0/1 pickle plausibly starts with.
_OLD_PICKLE_START = frozenset(b"(c)]}ILFSVNTUXJKMGPdlip")


def sniff(head: bytes, size: int) -> str:
    """The kind of a file whose first bytes are ``head`` (at least :data:`HEAD` when available).

    One of: ``empty``, ``zip``, ``tar``, ``npy``, ``hdf5``, ``torch-legacy``, ``pickle``,
    ``maybe-pickle`` (protocol 0/1 start: confirm by reading), ``safetensors``, ``json``,
    ``text``, ``compressed:<kind>``, ``media:<description>`` (an image, document or audio file),
    ``other:<description>`` (an archive or program modelsafe does not read) or ``unknown``.
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
    if head[0] == 0x80:
        return "pickle"  # PROTO (alone, it is a pickle cut after its first byte)
    for magic, description in _OTHER_ARCHIVES:
        if head.startswith(magic):
            return f"other:{description}"
    media = _media(head)
    if media:
        return f"media:{media}"
    compressed = compression_of(head)
    if compressed is not None:
        return f"compressed:{compressed}"
    if _is_safetensors(head, size):
        return "safetensors"
    if head[0] in _OLD_PICKLE_START:
        return "maybe-pickle"
    return text_kind(head)


def _media(head: bytes) -> str | None:
    """The media format ``head`` starts with, unless the same bytes could also start a pickle (a
    GIF's first opcodes, for instance, can be followed by a pickle payload: that stays a pickle)."""
    from modelsafe.security._opcodes import summarize_pickle

    description = next((d for magic, d in _MEDIA if head.startswith(magic)), None)
    if description is None:
        return None
    probe = summarize_pickle(head)
    return None if probe.complete or probe.globals else description


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
        if any(n == "constants.pkl" or n.endswith("/constants.pkl") for n in names):
            return "torchscript"  # what torch.load itself checks before handing the file to torch.jit.load
        return "torch"
    if "config.json" in name_set and ("metadata.json" in name_set or "model.weights.h5" in name_set):
        return "keras"
    if names and all(n.endswith(".npy") for n in names):
        return "npz"
    return "zip"
