"""Where a signature lives (``P.sig`` beside the artifact ``P``) and which keys are trusted here.

The signature of a single-file artifact ``model.msafe`` is ``model.msafe.sig``; of a folder
``model/``, ``model.sig`` beside it (outside the folder, so a ``model_signing`` verifier
hashing the folder does not see it); of ``s3://bucket/model.msafe``, ``s3://bucket/model.msafe.sig``.
No cryptography here: an unsigned artifact loaded without trusted keys never imports it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterable

from modelsafe.artifact.location import RemotePath, local_or_url
from modelsafe.errors import ArtifactWriteError

__all__ = ["SIGNATURE_SUFFIX", "TRUSTED_KEYS_VARIABLE", "signature_path", "read_signature", "write_signature",
           "trusted_sources"]

SIGNATURE_SUFFIX = ".sig"
#: A list of trusted public keys, certificates or folders of them (``os.pathsep``-separated).
TRUSTED_KEYS_VARIABLE = "MODELSAFE_TRUSTED_KEYS"
#: A signature file larger than this is refused unread (10,000 members make about 2 MB).
MAX_BUNDLE_BYTES = 64 << 20


def signature_path(artifact: Path | RemotePath) -> Path | RemotePath:
    """``P.sig`` for the artifact at ``P``."""
    if isinstance(artifact, RemotePath):
        return artifact.sibling(artifact.name + SIGNATURE_SUFFIX)
    path = Path(artifact)
    if path.name in ("", ".."):  # "." or "..": the folder's own name
        path = Path(os.path.abspath(path))
    return path.with_name(path.name + SIGNATURE_SUFFIX)


def read_signature(path: Path | RemotePath) -> bytes | None:
    """The signature file's bytes, or None when there is none (a larger file is cut at
    :data:`MAX_BUNDLE_BYTES` + 1, which :func:`modelsafe.signing.envelope.parse_bundle` refuses)."""
    try:
        if isinstance(path, RemotePath):
            if not path.fs.exists(path.path):
                return None
            with path.fs.open(path.path, "rb") as f:
                return bytes(f.read(MAX_BUNDLE_BYTES + 1))
        with open(path, "rb") as f:
            return f.read(MAX_BUNDLE_BYTES + 1)
    except FileNotFoundError:
        return None


def write_signature(path: Path | RemotePath, data: bytes) -> None:
    """Write the signature atomically (a temporary file beside it, renamed), replacing an older one."""
    if isinstance(path, RemotePath):
        try:
            path.fs.pipe_file(path.path, data)
        except OSError as exc:
            raise _write_error(path, exc) from exc
        return
    import tempfile

    fd, temporary = -1, ""
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.write(fd, data)
        os.fchmod(fd, 0o644)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(temporary, path)
        temporary = ""
    except OSError as exc:
        raise _write_error(path, exc) from exc
    finally:
        if fd >= 0:
            os.close(fd)
        if temporary:
            with contextlib.suppress(OSError):
                os.unlink(temporary)


def _write_error(path: Path | RemotePath, exc: OSError) -> ArtifactWriteError:
    where = local_or_url(path)
    return ArtifactWriteError(
        f"Cannot write the signature {where!r}: {exc.strerror or exc}. The signature goes beside the artifact, "
        "so its folder must be writable. Check the permissions and the free space.",
        path=where, errno=exc.errno, strerror=exc.strerror, filename=where)


def trusted_sources(given: Any) -> list[Any]:
    """The trusted keys: ``given`` (a path, PEM bytes, a key, or a list of them), else the paths
    listed in ``MODELSAFE_TRUSTED_KEYS``. An explicit list replaces the variable; it never adds to it,
    so a caller who names the keys it trusts gets exactly those."""
    if given is None or (isinstance(given, (list, tuple, set, frozenset)) and not given):
        listed = os.environ.get(TRUSTED_KEYS_VARIABLE, "")
        return [entry for entry in listed.split(os.pathsep) if entry.strip()]
    if isinstance(given, (str, bytes, os.PathLike)) or not isinstance(given, Iterable):
        return [given]
    return list(given)
