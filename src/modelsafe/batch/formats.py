"""Which table format a path holds, told by its name: CSV, Parquet, JSON lines; a folder or glob of Parquet.

A path is local or an fsspec URL (resolved by :func:`modelsafe.artifact.location.resolve`,
so ``storage_options`` reach the store the way they do for artifacts). A folder, or a
pattern with ``*``, ``?`` or ``[``, is a set of Parquet files read in the order of their
sorted names.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelsafe.artifact.location import RemotePath, resolve
from modelsafe.errors import BatchError

__all__ = ["FORMATS", "Location", "format_of", "locate"]

#: File name suffix -> format.
_SUFFIXES = {
    ".csv": "csv", ".tsv": "csv",
    ".parquet": "parquet", ".pq": "parquet", ".parq": "parquet",
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
}
FORMATS = ("csv", "parquet", "jsonl")
_GLOB = frozenset("*?[")


@dataclass(frozen=True)
class Location:
    """A table to read or write: where it is, which format, and (for a set of Parquet files) its files."""

    text: str
    format: str
    #: A local path, or a RemotePath with its fsspec filesystem.
    target: Path | RemotePath
    #: For a folder or a glob: the Parquet files, in order; empty for a single file.
    files: tuple[str, ...] = ()

    @property
    def remote(self) -> bool:
        return isinstance(self.target, RemotePath)

    @property
    def fs(self) -> Any:
        """The fsspec filesystem of a remote location (None for a local one)."""
        return self.target.fs if isinstance(self.target, RemotePath) else None

    @property
    def path(self) -> str:
        """The path on its filesystem (local path, or the store's path without the scheme)."""
        return self.target.path if isinstance(self.target, RemotePath) else str(self.target)

    @property
    def delimiter(self) -> str:
        return "\t" if self.path.lower().endswith(".tsv") else ","

    def sibling(self, name: str) -> Location:
        """The file ``name`` beside this one, in the same format (the rejects file)."""
        if isinstance(self.target, RemotePath):
            return Location(self.target.sibling(name).url, self.format, self.target.sibling(name))
        return Location(str(self.target.with_name(name)), self.format, self.target.with_name(name))


def format_of(name: str, role: str) -> str:
    """The format a file name says (BatchError for any other suffix)."""
    suffix = posixpath.splitext(name.lower())[1]
    found = _SUFFIXES.get(suffix)
    if found is None:
        known = ", ".join(sorted(_SUFFIXES))
        raise BatchError(
            f"Cannot tell the format of the {role} {name!r} from its name (suffix {suffix or 'none'!r}): modelsafe "
            f"reads and writes CSV, Parquet and JSON lines, told by the suffix ({known}). Rename the file, or "
            "convert it to one of these formats.", path=name, suffix=suffix)
    return found


def locate(path: Any, role: str, storage_options: Mapping[str, Any] | None = None, *,
           reading: bool = True) -> Location:
    """``path`` resolved and its format told: a file, or (to read) a folder or glob of Parquet files."""
    text = os.fspath(path) if not isinstance(path, str) else path
    target = resolve(text, storage_options)
    if not reading:
        return Location(text, format_of(_name(target), role), target)
    if any(ch in _GLOB for ch in _name(target)) or any(ch in _GLOB for ch in _parent(target)):
        return _parquet_set(text, target, role, _glob(target))
    if _is_dir(target):
        return _parquet_set(text, target, role, _folder_files(target))
    if not _exists(target):
        raise BatchError(f"No {role} at {text!r}: the path does not exist. Check the path (or URL and storage "
                         "options).", path=text)
    return Location(text, format_of(_name(target), role), target)


def _name(target: Path | RemotePath) -> str:
    return target.name


def _parent(target: Path | RemotePath) -> str:
    return posixpath.dirname(target.path) if isinstance(target, RemotePath) else str(target.parent)


def _is_dir(target: Path | RemotePath) -> bool:
    return target.fs.isdir(target.path) if isinstance(target, RemotePath) else target.is_dir()


def _exists(target: Path | RemotePath) -> bool:
    return target.fs.exists(target.path) if isinstance(target, RemotePath) else target.exists()


def _glob(target: Path | RemotePath) -> list[str]:
    if isinstance(target, RemotePath):
        return sorted(target.fs.glob(target.path))
    import glob

    return sorted(glob.glob(str(target), recursive=True))


def _folder_files(target: Path | RemotePath) -> list[str]:
    if isinstance(target, RemotePath):
        found = target.fs.find(target.path)
    else:
        found = [str(p) for p in target.rglob("*") if p.is_file()]
    return sorted(f for f in found if _SUFFIXES.get(posixpath.splitext(f.lower())[1]) == "parquet")


def _parquet_set(text: str, target: Path | RemotePath, role: str, files: list[str]) -> Location:
    if not files:
        raise BatchError(f"No Parquet files in the {role} {text!r}: a folder or a glob is read as a set of Parquet "
                         "files (.parquet, .pq, .parq). Check the path, or name a single CSV or JSON lines file.",
                         path=text)
    others = [f for f in files if _SUFFIXES.get(posixpath.splitext(f.lower())[1]) != "parquet"]
    if others:
        raise BatchError(f"The {role} {text!r} matches files that are not Parquet ({others[:3]}): a folder or glob "
                         "is read as one set of Parquet files. Narrow the pattern (e.g. '*.parquet').",
                         path=text, files=others)
    return Location(text, "parquet", target, tuple(files))
