"""Archives for the scanner: zip (torch, Keras, npz, modelsafe, nested) and tar (including
torch's oldest format).

Member names are checked like artifact members (no absolute paths, ``..``, links or
duplicates); member counts are read from the zip's end record before the central
directory is parsed, so a flood of members is refused cheaply.
"""

from __future__ import annotations

import json
import stat
import struct
import tarfile
import zipfile
from typing import BinaryIO

from modelsafe.artifact.reader import check_member_name
from modelsafe.errors import UnsafeArchiveError
from modelsafe.security._compressed import MAX_EXPANSION
from modelsafe.security._findings import ItemRecord
from modelsafe.security._sniff import zip_flavor
from modelsafe.security._streams import StreamReader
from modelsafe.security._walk import MAX_MEMBERS, SliceFile, Walker, join

_EOCD = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")
#: Torch's tensor storage types -> bytes per element (its oldest, tar format).
_ELEMENT_SIZE = {f"{prefix}{t}Storage": size for prefix in ("torch.", "torch.cuda.") for t, size in (
    ("Double", 8), ("Float", 4), ("Half", 2), ("Long", 8), ("Int", 4), ("Short", 2), ("Char", 1), ("Byte", 1),
    ("Bool", 1), ("BFloat16", 2), ("ComplexDouble", 16), ("ComplexFloat", 8))}
_TORCH_TAR = ("sys_info", "pickle", "storages", "tensors")
#: A member of a compressed tar is copied out before it is read: in memory up to this size, then on disk...
_SPOOL_MEMORY = 16 << 20
#: ...and at most this size.
MAX_SPOOL = 64 << 30
_TORCH_META = ("version", ".data/version", "byteorder", ".data/serialization_id", ".format_version",
               ".storage_alignment")


def zip_entry_count(f: BinaryIO, size: int) -> int | None:
    """Members a zip declares, from its end-of-central-directory record; None if it has none."""
    tail_size = min(size, 65557)
    f.seek(size - tail_size)
    tail = f.read(tail_size)
    at = tail.rfind(_EOCD)
    if at < 0 or at + 22 > len(tail):
        return None
    count = int.from_bytes(tail[at + 10 : at + 12], "little")
    locator = tail.rfind(_ZIP64_LOCATOR, 0, at)
    if count == 0xFFFF and locator >= 0:
        offset = int.from_bytes(tail[locator + 8 : locator + 16], "little")
        f.seek(offset)
        record = f.read(56)
        if record[:4] == b"PK\x06\x06":
            count = int.from_bytes(record[32:40], "little")
    return count


def _member_problem(info: zipfile.ZipInfo, seen: set[str]) -> str | None:
    name = info.filename
    try:
        check_member_name(name)
    except UnsafeArchiveError as exc:
        return str(exc).split(":", 1)[1].split(".", 1)[0].strip()
    if name in seen:
        return "the name appears twice"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "it is a symbolic link"
    return None


def _open_member(zf: zipfile.ZipFile, f: BinaryIO, info: zipfile.ZipInfo) -> BinaryIO:
    if info.compress_type == zipfile.ZIP_STORED:
        f.seek(info.header_offset)
        fields = _LOCAL_HEADER.unpack(f.read(_LOCAL_HEADER.size))
        if fields[0] == b"PK\x03\x04":
            start = info.header_offset + _LOCAL_HEADER.size + fields[-2] + fields[-1]
            return SliceFile(f, start, info.file_size)  # type: ignore[return-value]
    return zf.open(info)


def _torch_role(name: str) -> str:
    """How a torch zip member is read: tensor bytes, metadata, the pickle, or by content."""
    rest = name.split("/", 1)[1] if "/" in name else name
    if rest.startswith("data/") or rest.startswith(".data/") and rest not in _TORCH_META:
        return "raw"
    if rest in _TORCH_META:
        return "meta"
    if rest.endswith(".py") and (rest.startswith("code/") or "/" not in rest):
        return "code"
    return "pickle" if rest.endswith((".pkl", ".debug_pkl")) else "content"


def scan_zip(w: Walker, location: str, f: BinaryIO, size: int, depth: int, *, path: str | None = None) -> None:
    count = zip_entry_count(f, size)
    if count is None:
        w.add("medium", "incomplete", location, None, "zip", "the zip archive has no end record (truncated or "
              "corrupt), so its members cannot all be found")
        return
    if count > MAX_MEMBERS:
        w.add("medium", "archive-limit", location, None, "zip", f"the zip archive declares {count} members, more "
              f"than the limit of {MAX_MEMBERS}")
        return
    f.seek(0)
    try:
        zf = zipfile.ZipFile(f)
        infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
        w.add("medium", "incomplete", location, None, "zip", f"the zip archive is corrupt ({exc})")
        return
    files = [i for i in infos if not (i.filename.endswith("/") and i.file_size == 0)]
    flavor = zip_flavor([i.filename for i in files])
    w.items[-1] = ItemRecord(location, f"zip:{flavor}", size, {"members": len(files)})
    manifest_code = _modelsafe_code(zf) if flavor == "modelsafe" else set()
    seen: set[str] = set()
    for info in files:
        member = join(location, info.filename)
        problem = _member_problem(info, seen)
        seen.add(info.filename)
        if problem:
            w.add("high", "unsafe-archive", member, info.header_offset, info.filename,
                  f"zip member {info.filename!r} is unsafe: {problem}")
            continue
        if info.flag_bits & 0x1:
            w.item(member, "encrypted", info.file_size)
            w.add("medium", "incomplete", member, info.header_offset, info.filename, f"zip member "
                  f"{info.filename!r} is encrypted (password-protected), so modelsafe cannot read it")
            continue
        if info.compress_size and info.file_size / info.compress_size > MAX_EXPANSION and info.file_size > 64 << 20:
            w.add("medium", "archive-limit", member, info.header_offset, info.filename, f"zip member "
                  f"{info.filename!r} expands {info.compress_size} bytes to {info.file_size}")
            continue
        _zip_member(w, zf, f, info, member, flavor, depth, manifest_code)


def _zip_member(w: Walker, zf: zipfile.ZipFile, f: BinaryIO, info: zipfile.ZipInfo, member: str, flavor: str,
                depth: int, manifest_code: set[str]) -> None:
    name = info.filename
    role = _torch_role(name) if flavor in ("torch", "torchscript") else "content"
    if role in ("raw", "meta") or flavor in ("torch", "torchscript") and info.file_size == 0:
        w.item(member, "tensor-data" if role == "raw" else "torch-metadata", info.file_size)
        return
    if role == "code" and flavor == "torchscript":
        _torchscript_code(w, zf, info, member)
        return
    if role == "code" or name in manifest_code:
        w.item(member, "code", info.file_size)
        w.add("medium", "bundled-code", member, None, name, f"bundled Python source {name!r} is stored in the archive")
        return
    with _open_member(zf, f, info) as handle:
        if flavor == "keras" and name == "config.json":
            w.item(member, "keras-config", info.file_size)
            w.keras_config(member, handle.read())
            return
        if flavor == "keras" and name == "metadata.json":
            w.item(member, "keras-metadata", info.file_size)
            _keras_metadata(w, handle.read())
            return
        w.blob(member, handle, info.file_size, depth + 1, raw_ok=flavor in ("modelsafe", "keras"),
               persistent_ok=flavor in ("torch", "torchscript"), container=flavor)


def _torchscript_code(w: Walker, zf: zipfile.ZipFile, info: zipfile.ZipInfo, member: str) -> None:
    """A TorchScript code member: what it calls (see :mod:`._torchscript`)."""
    from modelsafe.security._torchscript import MAX_SOURCE, check_source

    w.item(member, "torchscript-code", info.file_size)
    with zf.open(info) as handle:
        source = handle.read(MAX_SOURCE + 1)
    for issue in check_source(source):
        w.add("high", "torchscript-code", member, None, issue.subject, f"{member}: {issue.message}")


def _keras_metadata(w: Walker, raw: bytes) -> None:
    try:
        meta = json.loads(raw)
    except ValueError:
        return
    if isinstance(meta, dict):
        w.facts.update({f"keras_{k}".replace("keras_keras_", "keras_"): str(v) for k, v in meta.items()
                        if k in ("keras_version", "date_saved")})


def _modelsafe_code(zf: zipfile.ZipFile) -> set[str]:
    """Members holding bundled code, as the artifact's manifest lists them."""
    try:
        manifest = json.loads(zf.read("modelsafe.json"))
        return {str(r.get("member")) for r in manifest.get("code", ()) if isinstance(r, dict)}
    except (ValueError, KeyError, OSError, AttributeError, zipfile.BadZipFile):
        return set()


# ---------------------------------------------------------------------------------------
# tar
# ---------------------------------------------------------------------------------------


def scan_tar(w: Walker, location: str, f: BinaryIO, depth: int, *, streaming: bool) -> None:
    try:
        tf = tarfile.open(fileobj=f, mode="r|" if streaming else "r:")
    except (tarfile.TarError, OSError, EOFError) as exc:
        w.add("medium", "incomplete", location, None, "tar", f"the tar archive is corrupt ({exc})")
        return
    count = 0
    seen: set[str] = set()
    try:
        for info in tf:
            count += 1
            if count > MAX_MEMBERS:
                w.add("medium", "archive-limit", location, None, "tar", f"the tar archive has more than "
                      f"{MAX_MEMBERS} members")
                return
            _tar_member(w, tf, info, join(location, info.name), depth, seen, streaming)
            seen.add(info.name)
    except (tarfile.TarError, OSError, EOFError) as exc:
        w.add("medium", "incomplete", location, None, "tar", f"the tar archive is truncated or corrupt ({exc})")


def _tar_member(w: Walker, tf: tarfile.TarFile, info: tarfile.TarInfo, member: str, depth: int, seen: set[str],
                streaming: bool) -> None:
    problem = None
    try:
        check_member_name(info.name)
    except UnsafeArchiveError:
        problem = "its path is absolute or leaves the archive"
    if info.issym() or info.islnk():
        problem = f"it is a link to {info.linkname!r}"
    elif not (info.isfile() or info.isdir()):
        problem = "it is a device, FIFO or other special file"
    elif info.name in seen:
        problem = "the name appears twice"
    if problem:
        w.add("high", "unsafe-archive", member, info.offset, info.name, f"tar member {info.name!r} is unsafe: {problem}")
        return
    if info.isdir():
        return
    handle = tf.extractfile(info)
    if handle is None:
        return
    if info.name in _TORCH_TAR[2:]:
        w.item(member, f"torch-tar-{info.name}", info.size)
        _legacy_records(w, member, handle, info.name)
    elif streaming:
        _spooled_member(w, handle, info, member, depth)
    else:
        w.blob(member, handle, info.size, depth + 1, persistent_ok=info.name == "pickle")


def _spooled_member(w: Walker, handle: BinaryIO, info: tarfile.TarInfo, member: str, depth: int) -> None:
    """A member of a compressed tar, which can only be read forward: copied to a temporary file
    (in memory while small, on disk beyond :data:`_SPOOL_MEMORY`) so it is read like any file."""
    import shutil
    import tempfile

    if info.size > MAX_SPOOL:
        w.item(member, "not-read", info.size)
        w.add("medium", "archive-limit", member, info.offset, info.name, f"tar member {info.name!r} holds "
              f"{info.size} bytes, more than the {MAX_SPOOL} a compressed tar member may hold here")
        return
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_MEMORY) as spool:
        shutil.copyfileobj(handle, spool, 1 << 20)
        spool.seek(0)
        w.blob(member, spool, info.size, depth + 1, persistent_ok=info.name == "pickle")  # type: ignore[arg-type]


def _legacy_records(w: Walker, location: str, f: BinaryIO, role: str) -> None:
    """torch's tar format: ``storages`` / ``tensors``: a count, then per record a pickle and raw bytes."""
    reader = StreamReader(f)
    count_stream = reader.next_stream(values=True)
    w.record_stream(location, count_stream, persistent_ok=False)
    count = count_stream.value
    if not count_stream.complete or not isinstance(count, int) or count < 0:
        w.add("medium", "incomplete", location, 0, role, f"the {role} record count could not be read")
        return
    for _ in range(min(count, MAX_MEMBERS)):
        record = reader.next_stream(values=True)
        w.record_stream(location, record, persistent_ok=False)
        if not record.complete:
            return
        cursor = reader.cursor()
        if role == "storages":
            sizes = [_ELEMENT_SIZE.get(g.qualname) for g in record.globals]
            if len(sizes) != 1 or sizes[0] is None:
                w.add("medium", "incomplete", location, cursor.offset, role, "a storage record names no known "
                      "storage type, so its data cannot be skipped")
                return
            cursor.skip(int.from_bytes(cursor.read(8), "little") * sizes[0])
        else:
            ndim = int.from_bytes(cursor.read(4), "little", signed=True)
            if not 0 <= ndim <= 64:
                w.add("medium", "incomplete", location, cursor.offset, role, f"a tensor record has {ndim} dimensions")
                return
            cursor.skip(4 + 16 * ndim + 8)
        reader.pos = cursor.pos
    if role == "storages":
        w.record_stream(location, reader.next_stream(), persistent_ok=False)
    if not reader.at_end():
        w.add("medium", "incomplete", location, reader.offset, role, f"data follows the last {role} record")
