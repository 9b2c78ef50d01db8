"""Reading ``torch.save`` files without ``torch.load``, for ``ms.convert``.

Both layouts ``torch.save`` has written are read:

* the zip layout (PyTorch >= 1.6): ``<dir>/data.pkl`` plus one ``<dir>/data/<key>`` member
  per storage;
* the legacy stream (``_use_new_zipfile_serialization=False``): four pickles (magic number,
  protocol, system info, the object), the list of storage keys, then each storage's bytes.

The object's pickle goes through :func:`modelsafe.security.restricted_loads` and nothing
else. This reader resolves only its own set of names: stand-ins of its own for torch's
rebuild helpers (they check every offset, size and stride against the storage before a
tensor views it), markers for the storage types, torch dtypes, ``OrderedDict`` and ``set``,
and the module classes of ``torch.nn`` (for whole pickled models). Everything else, such
as ``argparse.Namespace``, numpy scalars or the model's own class, is listed in an
:class:`~modelsafe.errors.UntrustedContentError` and needs ``trusted=[...]``: unlike the
scikit-learn allowlist, nothing else is accepted by default. Storages are always built
on the CPU: a checkpoint saved on a GPU loads on a machine without one.
"""

from __future__ import annotations

import contextlib
import mmap
import struct
import warnings
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Collection

from modelsafe.errors import FormatError, UntrustedContentError
from modelsafe.flavors.torch.legacy_rebuild import StorageType, crafted, rebuild_standins

if TYPE_CHECKING:
    import torch

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

# ---------------------------------------------------------------------------------------
# storages and the restricted read
# ---------------------------------------------------------------------------------------


class _Storages:
    """Builds the CPU storages persistent ids name, from ``read(key, nbytes) -> bytes-like``."""

    def __init__(self, read: Callable[[str, int, "torch.Tensor"], None] | None) -> None:
        self._read = read
        self.by_key: dict[str, Any] = {}
        self.devices: set[str] = set()

    def __call__(self, pid: Any) -> Any:
        import torch

        if isinstance(pid, tuple) and pid and pid[0] == "module" and len(pid) == 4 and isinstance(pid[1], type):
            return pid[1]  # legacy whole-model pickles name the class (already audited) this way
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                and isinstance(pid[1], StorageType) and isinstance(pid[2], str) and isinstance(pid[3], str)
                and isinstance(pid[4], int) and pid[4] >= 0):
            raise crafted(f"an unexpected persistent id {str(pid)[:100]!r}")
        if len(pid) == 6 and pid[5] is not None:
            raise crafted("a storage view (format of PyTorch < 0.4), which this reader does not support")
        storage_type, key, location, numel = pid[1], pid[2], pid[3], pid[4]
        if key in self.by_key:
            return self.by_key[key]
        dtype = getattr(torch, storage_type.dtype)
        nbytes = numel * _itemsize(dtype)
        raw = torch.empty(nbytes, dtype=torch.uint8)
        if self._read is not None:
            self._read(key, nbytes, raw)
        if location != "cpu":
            self.devices.add(location)
        typed = torch.storage.TypedStorage(wrap_storage=raw.untyped_storage(), dtype=dtype, _internal=True)
        self.by_key[key] = typed
        return typed


def _restricted(data: Any, trusted: tuple[str, ...], storages: _Storages, where: str) -> Any:
    from modelsafe.security import audit_pickle, restricted_loads, summarize_pickle

    summary = summarize_pickle(data)
    standins = rebuild_standins(summary.names())
    refused = sorted(n for n in summary.names() if n not in standins and not _is_trusted(n, trusted))
    if refused:
        shown = "\n".join(f"  - {n}" for n in refused)
        raise UntrustedContentError(
            f"{where} needs {len(refused)} global(s) beyond tensors and torch.nn modules:\n{shown}\nUnpickling could "
            "run any of them, so a checkpoint from an untrusted source could execute code. Nothing was loaded. If you "
            "trust the file's source, pass exactly these names: trusted=[" + ", ".join(repr(n) for n in refused)
            + "].", globals=refused)
    audit_pickle(summary, trusted=trusted, standins=standins, allow_persistent=True)  # complete, every name allowed
    return restricted_loads(data, trusted=trusted, standins=standins, persistent_load=storages, audited=summary)


def _is_trusted(name: str, trusted: tuple[str, ...]) -> bool:
    return name in trusted or f"{name.rpartition('.')[0]}.*" in trusted


# ---------------------------------------------------------------------------------------
# the two layouts
# ---------------------------------------------------------------------------------------


def read_checkpoint(path: str | Path, *, trusted: Collection[str] = ()) -> Any:
    """The object a ``torch.save`` file holds, read without ``torch.load`` (see the module docstring).

    Examples
    --------
    >>> import torch, modelsafe.flavors.torch.legacy as legacy
    >>> torch.save({"w": torch.ones(2)}, "/tmp/doc-ckpt.pt")
    >>> legacy.read_checkpoint("/tmp/doc-ckpt.pt")["w"]
    tensor([1., 1.])
    """
    path = Path(path)
    trusted = tuple(trusted)
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(b"PK\x03\x04"):
        obj, storages = _read_zip(path, trusted)
    elif head[:1] == b"\x80":
        obj, storages = _read_stream(path, trusted)
    else:
        raise FormatError(f"{str(path)!r} is not a torch.save file (it starts with {head[:4]!r}): neither the zip "
                          "layout nor the legacy pickle stream. Check that it is a PyTorch checkpoint.", path=str(path))
    if storages.devices:
        from modelsafe.flavors.torch.flavor import DeviceChangedWarning

        warnings.warn(f"{str(path)!r} holds tensors saved on {', '.join(sorted(storages.devices))}; they were read "
                      "onto the CPU (load the converted artifact with device='auto' to use a GPU).",
                      DeviceChangedWarning, stacklevel=2)
    return obj


def _read_zip(path: Path, trusted: tuple[str, ...]) -> tuple[Any, _Storages]:
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise FormatError(f"{str(path)!r} looks like a torch zip checkpoint but is not a readable zip ({exc}): it is "
                          "truncated or corrupted. Copy it again from its source.", path=str(path)) from exc
    with archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise FormatError(f"{str(path)!r} is a zip but not a torch.save checkpoint (no single <dir>/data.pkl). "
                              "If it is a modelsafe artifact, use ms.load.", path=str(path))
        prefix = pickles[0][: -len("data.pkl")]
        if prefix + "byteorder" in archive.namelist() and archive.read(prefix + "byteorder").strip() != b"little":
            raise FormatError(f"{str(path)!r} was saved on a big-endian machine; this reader handles little-endian "
                              "checkpoints only. Re-save it on a little-endian machine.", path=str(path))

        def read(key: str, nbytes: int, out: "torch.Tensor") -> None:
            name = f"{prefix}data/{key}"
            try:
                info = archive.getinfo(name)
            except KeyError:
                raise crafted(f"storage {key!r} has no member {name!r}") from None
            if info.file_size != nbytes:
                raise crafted(f"storage {key!r} should hold {nbytes} bytes but its member holds {info.file_size}")
            if nbytes:
                with archive.open(info) as stream:
                    _read_exact(stream, out.numpy(), name)

        storages = _Storages(read)
        obj = _restricted(archive.read(pickles[0]), trusted, storages, f"Checkpoint {str(path)!r}")
    return obj, storages


def _read_exact(stream: Any, out: Any, name: str) -> None:
    view = memoryview(out).cast("B")
    done = 0
    while done < len(view):
        n = stream.readinto(view[done:])
        if not n:
            raise crafted(f"member {name!r} ended early")
        done += n


def _read_stream(path: Path, trusted: tuple[str, ...]) -> tuple[Any, _Storages]:
    with open(path, "rb") as f:
        data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        return _parse_stream(memoryview(data), path, trusted)
    finally:
        with contextlib.suppress(BufferError):  # views held by a traceback: the map closes when they go
            data.close()


class _Pickles:
    """Consecutive pickles of a legacy stream, each audited on its own."""

    def __init__(self, view: memoryview, path: Path) -> None:
        self.view, self.path, self.offset = view, path, 0

    def next(self, trusted: tuple[str, ...] = (), storages: _Storages | None = None) -> Any:
        from modelsafe.security import restricted_loads, summarize_pickle

        summary = summarize_pickle(self.view[self.offset :])
        if not summary.complete:
            raise crafted(f"the pickle at byte {self.offset} is truncated or corrupted")
        end = self.offset + summary.end_offset
        part, self.offset = self.view[self.offset : end], end
        if storages is not None:
            return _restricted(part, trusted, storages, f"Checkpoint {str(self.path)!r}")
        return restricted_loads(part)


def _parse_stream(view: memoryview, path: Path, trusted: tuple[str, ...]) -> tuple[Any, _Storages]:
    pickles = _Pickles(view, path)
    if pickles.next() != _LEGACY_MAGIC:
        raise FormatError(f"{str(path)!r} is a pickle but not a torch.save file (no torch magic number). If it is a "
                          "plain pickle or joblib file, convert it with ms.convert as such.", path=str(path))
    if pickles.next() != _LEGACY_PROTOCOL:
        raise crafted("the legacy protocol version is not 1001")
    system = pickles.next()
    if isinstance(system, dict) and not system.get("little_endian", True):
        raise FormatError(f"{str(path)!r} was saved on a big-endian machine; this reader handles little-endian "
                          "checkpoints only. Re-save it on a little-endian machine.", path=str(path))
    storages = _Storages(None)
    obj = pickles.next(trusted, storages)
    keys = pickles.next()
    _fill_stream(view, pickles.offset, keys, storages)
    return obj, storages


def _fill_stream(view: memoryview, offset: int, keys: Any, storages: _Storages) -> None:
    if not isinstance(keys, list) or set(keys) != set(storages.by_key):
        raise crafted("the list of storage keys does not match the storages the object uses")
    for key in keys:
        storage = storages.by_key[key]
        if offset + 8 > len(view):
            raise crafted(f"the file ends before storage {key!r}")
        (numel,) = struct.unpack("<q", view[offset : offset + 8])
        nbytes = storage._untyped_storage.nbytes()
        if numel * _itemsize(storage.dtype) != nbytes or offset + 8 + nbytes > len(view):
            raise crafted(f"storage {key!r} declares {numel} elements but {nbytes} bytes are expected")
        _copy_into(storage, view[offset + 8 : offset + 8 + nbytes])
        offset += 8 + nbytes


def _itemsize(dtype: Any) -> int:
    import torch

    return torch.empty((), dtype=dtype).element_size()


def _copy_into(storage: Any, data: memoryview) -> None:
    import numpy as np
    import torch

    raw = torch.empty((0,), dtype=torch.uint8).set_(storage._untyped_storage)
    if len(data):
        np.copyto(raw.numpy(), np.frombuffer(data, dtype=np.uint8))
