"""Where an artifact's member bytes go: entries of one zip file, or files of one folder.

Both targets have one interface for :class:`modelsafe.artifact.writer.ArtifactWriter`: ``begin`` a
member, ``write`` buffers to it, ``end`` it, ``finish`` it once its CRC-32 is known (a zip
header is patched then), ``syncer`` for a background fsync of what is written so far,
``close`` (the zip directory; every byte fsynced) and ``release`` (the descriptors).
:func:`check_target` and :func:`replace_target` decide whether a path may be replaced, and
swap a finished temporary in.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from modelsafe.artifact.manifest import MANIFEST_NAME
from modelsafe.artifact.reader import SINGLE_FILE_SUFFIX
from modelsafe.artifact.zipwrite import StoredZipWriter, write_all
from modelsafe.errors import SaveError


class Writeback:
    """Hands what was written so far to the disk, without waiting, and drops it from the page cache.

    ``posix_fadvise(DONTNEED)`` starts the write-out of the dirty range (Linux); the final
    fsync then has little left to wait for, and a multi-GiB artifact does not fill the
    page cache. Used for checkpoints (``ArtifactWriter(writeback=True)``), which are read
    back rarely.
    """

    STEP = 64 << 20

    def __init__(self, fd: int, start: int = 0) -> None:
        self._fd = fd
        self._done = start

    def __call__(self, position: int) -> None:
        if position - self._done >= self.STEP:
            with contextlib.suppress(OSError):
                os.posix_fadvise(self._fd, self._done, position - self._done, os.POSIX_FADV_DONTNEED)
            self._done = position


class ZipTarget:
    """Members as entries of one zip file (the single-file form)."""

    crc = True

    def __init__(self, fd: int, writeback: bool) -> None:
        self._zip = StoredZipWriter(fd)
        self._writeback = Writeback(fd) if writeback else None

    def begin(self, name: str, size: int | None) -> Any:
        return self._zip.begin(name, size)

    def write(self, handle: Any, views: list[memoryview]) -> int:
        n = self._zip.write(views)
        if self._writeback is not None:
            self._writeback(self._zip.offset)
        return n

    def end(self, handle: Any) -> None:
        pass  # the header is finished once the CRC is known (finish)

    def finish(self, handle: Any, size: int, crc: int) -> None:
        self._zip.finish(handle, size, crc)

    def syncer(self) -> Callable[[], None]:
        fd = self._zip.fd
        return lambda: os.fsync(fd)

    def close(self) -> None:
        self._zip.close()
        os.fsync(self._zip.fd)

    def release(self) -> None:
        fd, self._zip.fd = self._zip.fd, -1  # once only: the number may be reused after close
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


@dataclass
class _File:
    fd: int
    written: int = 0
    writeback: Writeback | None = None


class DirTarget:
    """Members as files of one folder (the folder form)."""

    crc = False

    def __init__(self, root: Path, writeback: bool) -> None:
        self._root = root
        self._writeback = writeback
        self._paths: list[Path] = []

    def begin(self, name: str, size: int | None) -> _File:
        path = self._root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o644)
        self._paths.append(path)
        return _File(fd, writeback=Writeback(fd) if self._writeback else None)

    def write(self, handle: _File, views: list[memoryview]) -> int:
        n = write_all(handle.fd, views)
        handle.written += n
        if handle.writeback is not None:
            handle.writeback(handle.written)
        return n

    def end(self, handle: _File) -> None:
        os.close(handle.fd)

    def finish(self, handle: _File, size: int, crc: int) -> None:
        pass

    def syncer(self) -> Callable[[], None]:
        written = list(self._paths)
        return lambda: [fsync_path(path) for path in written]  # type: ignore[func-returns-value]

    def close(self) -> None:
        for path in self._paths:
            fsync_path(path)

    def release(self) -> None:
        pass


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_directory(path: Path) -> None:
    """Make a rename or new entry in folder ``path`` durable (a no-op where folders cannot be fsynced)."""
    with contextlib.suppress(OSError):
        fsync_path(path)


#: Suffixes of other tools' model files: a folder artifact under such a name would pass for one.
FOREIGN_SUFFIXES = {
    ".pkl": "a pickle", ".pickle": "a pickle", ".joblib": "a joblib file", ".pt": "a PyTorch file",
    ".pth": "a PyTorch file", ".ckpt": "a checkpoint file", ".bin": "a weights file", ".h5": "an HDF5 (Keras) file",
    ".hdf5": "an HDF5 file", ".keras": "a Keras archive", ".onnx": "an ONNX model",
    ".safetensors": "a safetensors file", ".pb": "a TensorFlow graph", ".tflite": "a TensorFlow Lite model",
    ".npy": "a numpy array file", ".npz": "a numpy archive", ".zip": "a zip archive", ".json": "a JSON file",
    ".ubj": "an XGBoost model", ".gguf": "a GGUF model", ".mlmodel": "a Core ML model", ".pmml": "a PMML model",
}


def check_target(path: Path, overwrite: bool) -> None:
    """Refuse a path named like another tool's file; refuse to replace an existing path unless
    ``overwrite``, and refuse to replace anything but an artifact (or an empty file or folder) always."""
    existing = path.exists() or path.is_symlink()
    _check_suffix(path, existing)
    if not existing:
        return
    if not overwrite:
        raise SaveError(
            f"{str(path)!r} already exists and overwrite=False: saving would replace it. "
            "Pass overwrite=True to replace it, or choose a new path.",
            path=str(path),
        )
    if path.is_dir() and any(path.iterdir()) and not (path / MANIFEST_NAME).is_file():
        raise SaveError(
            f"{str(path)!r} is a non-empty folder that is not a modelsafe artifact; overwrite=True "
            "only replaces artifacts, so nothing was deleted. Choose another path.",
            path=str(path),
        )
    if not path.is_dir() and not _replaceable_file(path):
        raise SaveError(
            f"{str(path)!r} is a file that is not a modelsafe artifact; overwrite=True only replaces artifacts, so it "
            "was left as it is (replacing it would lose whatever it holds). Choose another path, or delete the file "
            "first if you mean to replace it.",
            path=str(path),
        )


def _check_suffix(path: Path, existing: bool) -> None:
    what = FOREIGN_SUFFIXES.get(path.suffix.lower())
    if what is None or (existing and path.is_dir() and (path / MANIFEST_NAME).is_file()):
        return  # an artifact folder saved under that name before is the user's own choice
    suggestion = str(path.with_suffix(SINGLE_FILE_SUFFIX))
    raise SaveError(
        f"Cannot save to {str(path)!r}: it ends in {path.suffix}, the suffix of {what}, but modelsafe would write a "
        f"folder artifact there (only a name ending in {SINGLE_FILE_SUFFIX} is written as one file), and every tool "
        f"(and person) seeing {path.name!r} would take it for {what}. Save to {suggestion!r} for a single file, or "
        f"to {str(path.with_suffix(''))!r} for a folder.",
        path=str(path), suffix=path.suffix, suggestion=suggestion)


def _replaceable_file(path: Path) -> bool:
    """An empty file (nothing to lose), or a zip holding a manifest: a single-file artifact."""
    try:
        if path.stat().st_size == 0:
            return True
        with zipfile.ZipFile(path) as archive:
            return MANIFEST_NAME in archive.namelist()
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


def replace_target(tmp: Path, target: Path) -> None:
    """Move ``tmp`` to ``target``; an existing target is swapped out only after tmp is complete."""
    if target.is_dir() and not target.is_symlink():
        backup = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, backup)
        try:
            os.replace(tmp, target)
        except BaseException:
            os.replace(backup, target)
            raise
        shutil.rmtree(backup, ignore_errors=True)
    else:
        if tmp.is_dir() and (target.exists() or target.is_symlink()):
            target.unlink()
        os.replace(tmp, target)
