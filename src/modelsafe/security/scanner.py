"""``ms.scan``: a static scanner for model files. It never imports, executes or unpickles
anything from the file.

What it reads, decided by content (magic bytes) and never by file name: plain pickles
(protocols 0-5), joblib files (raw array data and nested object-array streams stepped
over; zlib, gzip, bz2, xz, lzma and lz4 compression), torch zip checkpoints and both
legacy torch formats, ``.npy``/``.npz`` (object arrays hold pickles), Keras ``.keras``
archives and ``.h5`` model configs, safetensors headers, modelsafe artifacts (with
their integrity), and zips and tars nested in any of these.

It is an allowlist: every global a pickle names is *safe* (on the allowlist the
restricted unpickler uses), *dangerous* (runs commands, evaluates code, reaches files,
or an attribute chain such as ``numpy.__builtins__``) or *unknown*. A file is ``ok``
only when everything in it is safe and it was read completely: unknown formats,
truncated or corrupt streams and data that ends early are findings too.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from modelsafe._keywords import checked
from modelsafe._reports import Report
from modelsafe.artifact.location import is_url
from modelsafe.errors import FormatError, UntrustedContentError
from modelsafe.security import _walk_archives
from modelsafe.security._findings import SEVERITIES, Finding, ItemRecord, StreamRecord
from modelsafe.security._verdict import blocks
from modelsafe.security._walk import Walker, open_path

__all__ = ["scan", "ScanReport", "Finding"]


@dataclass(frozen=True)
class ScanReport(Report):
    """What :func:`scan` found in one path. ``ok`` when there is no finding.

    Attributes: ``path``, ``kind`` (what the path is), ``findings`` (worst first),
    ``streams`` (every pickle stream read, with each global and its verdict), ``items``
    (every file and member looked at), ``facts`` (versions and such recorded in the file).
    """

    error_class = UntrustedContentError

    path: str
    kind: str
    findings: tuple[Finding, ...]
    streams: tuple[StreamRecord, ...] = ()
    items: tuple[ItemRecord, ...] = ()
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(blocks(f) for f in self.findings)

    def globals(self, verdict: str | None = None) -> list[str]:
        """Sorted names of the globals the file's pickle streams reference (optionally by verdict)."""
        return sorted({g.name for s in self.streams for g in s.globals if verdict is None or g.verdict == verdict})

    def _lines(self) -> list[str]:
        n_globals = len(self.globals())
        head = (f"{self.path}: {self.kind}; {len(self.items)} item(s), {len(self.streams)} pickle stream(s), "
                f"{n_globals} global(s)")
        if self.ok:
            return [head, "ok: nothing that could run code, and everything was read completely"]
        counts = ", ".join(f"{sum(f.severity == s for f in self.findings)} {s}" for s in SEVERITIES
                           if any(f.severity == s for f in self.findings))
        return [head, f"NOT SAFE: {len(self.findings)} finding(s) ({counts})",
                *(f"  {f.describe()}" for f in self.findings)]

    def raise_if_failed(self) -> None:
        if not self.ok:
            raise UntrustedContentError(str(self), report=self, globals=self.globals("dangerous")
                                        + self.globals("unknown"))


@checked("scan")
def scan(path: str | os.PathLike[str], *, storage_options: Mapping[str, Any] | None = None) -> ScanReport:
    """Scan a model file or folder for anything that could run code, without running it.

    Parameters
    ----------
    path
        Any model file (pickle, joblib, torch, Keras, npy/npz, HDF5, safetensors, modelsafe
        artifact, zip or tar of these) or a folder (artifact, SavedModel, or any folder).
        An fsspec URL (``s3://...``) is streamed in bounded memory, like a local file.
    storage_options
        For a URL: options of the store's fsspec filesystem (credentials, ``endpoint_url``...).

    Returns
    -------
    ScanReport
        ``ok`` only when every global is on the allowlist and everything was read completely.

    Raises
    ------
    FormatError
        The path does not exist, is a symbolic-link loop, cannot be read, is not a file or
        folder, is not a model file at all (plain text, an image, an empty file), or is a zip
        whose every member is encrypted.

    Examples
    --------
    >>> import pickle, modelsafe as ms
    >>> with open("/tmp/doc-scan.pkl", "wb") as f:
    ...     pickle.dump({"weights": [1.0, 2.0]}, f)
    >>> ms.scan("/tmp/doc-scan.pkl").ok
    True
    """
    if is_url(path):
        from modelsafe.security._remote_scan import walk_remote

        return _report(*walk_remote(path, storage_options))
    p = Path(path)
    st = _stat(p)
    walker = Walker(_walk_archives)
    if stat.S_ISDIR(st.st_mode):
        from modelsafe.security._walk_dirs import scan_directory

        scan_directory(walker, p)
        kind = _directory_kind(p)
    elif stat.S_ISREG(st.st_mode):
        try:
            handle = open_path(str(p))
        except OSError as exc:
            raise _unreadable(p, exc) from exc
        with handle:
            walker.blob("", handle, st.st_size, 0, path=str(p))
        kind = walker.items[0].kind if walker.items else "unknown"
    else:
        raise FormatError(
            f"{str(p)!r} is not a regular file or a folder (a FIFO, socket or device): modelsafe does not open "
            "it, because reading it could block forever. Pass the model file itself.", path=str(p))
    if kind.startswith("zip:modelsafe") or kind == "modelsafe-directory":
        _check_artifact(walker, p)
    return _report(str(p), kind, walker)


def _report(path: str, kind: str, walker: Walker) -> ScanReport:
    _refuse_unreadable(path, kind, walker)
    order = {s: i for i, s in enumerate(SEVERITIES)}
    findings = sorted(walker.findings, key=lambda f: (order.get(f.severity, 9), f.location, f.offset or 0))
    return ScanReport(path=path, kind=kind, findings=tuple(findings), streams=tuple(walker.streams),
                      items=tuple(walker.items), facts=dict(walker.facts))


#: What a file that is not a model at all turns out to be.
_NOT_MODELS = {"text": "a text file", "empty": "an empty file"}


def _refuse_unreadable(path: str, kind: str, walker: Walker) -> None:
    """A file that is not a model, or a zip that is entirely encrypted, is unreadable input (exit code 2):
    no report could say anything about its safety."""
    if kind in _NOT_MODELS or kind.startswith("media:"):
        what = _NOT_MODELS.get(kind) or f"a {kind.split(':', 1)[1]}"
        raise FormatError(
            f"{path!r} is not a model file: it is {what}. modelsafe scans model files (pickle, joblib, torch, Keras, "
            "npy/npz, safetensors, SavedModel, modelsafe artifacts, and archives of these), and nothing in this file "
            "can be loaded as a model, so there is nothing to check. Pass the model file itself.", path=path,
            kind=kind)
    members = walker.items[1:]
    if kind.startswith("zip") and members and all(i.kind == "encrypted" for i in members):
        raise FormatError(
            f"{path!r} is a password-protected zip: all {len(members)} member(s) are encrypted, so modelsafe can read "
            "none of them and cannot say whether they are safe. Extract it with its password and scan the extracted "
            "files.", path=path, kind=kind)


def _stat(p: Path) -> os.stat_result:
    try:
        return p.stat()
    except OSError as exc:
        raise _unreadable(p, exc) from exc


def _unreadable(p: Path, exc: OSError) -> FormatError:
    if exc.errno == errno.ELOOP:
        why = "it is a symbolic-link loop"
        fix = "Point modelsafe at the real file."
    elif exc.errno == errno.ENOENT:
        why = "it does not exist" if not p.is_symlink() else "it is a broken symbolic link"
        fix = "Check the path."
    elif exc.errno in (errno.EACCES, errno.EPERM):
        why = "permission denied"
        fix = "Check the file's permissions."
    else:
        why = exc.strerror or str(exc)
        fix = "Check the path and the disk."
    return FormatError(f"Cannot scan {str(p)!r}: {why}. Nothing was read, so nothing can be said about its "
                       f"safety. {fix}", path=str(p))


def _directory_kind(p: Path) -> str:
    if (p / "modelsafe.json").is_file():
        return "modelsafe-directory"
    if (p / "saved_model.pb").is_file():
        return "savedmodel-directory"
    return "directory"


def _check_artifact(walker: Walker, p: Path) -> None:
    """A modelsafe artifact: its manifest and every member's size and SHA-256."""
    from modelsafe.artifact.integrity import check_member
    from modelsafe.artifact.manifest import Manifest
    from modelsafe.artifact.reader import MANIFEST_NAME, open_artifact
    from modelsafe.errors import ModelsafeError

    try:
        with open_artifact(p) as reader:
            manifest = Manifest.from_json(reader.read(MANIFEST_NAME), where=f"{p}/{MANIFEST_NAME}")
            walker.facts["modelsafe_version"] = manifest.modelsafe_version
            for name, record in manifest.members.items():
                try:
                    check_member(reader, name, record)
                except ModelsafeError as exc:
                    walker.add("high", "integrity", name, None, name, str(exc).split(":", 1)[0])
    except ModelsafeError as exc:
        walker.add("high", "integrity", MANIFEST_NAME, None, "artifact", f"the artifact cannot be opened as "
                   f"modelsafe reads it ({type(exc).__name__}: {exc})")
