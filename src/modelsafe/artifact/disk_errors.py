"""What a local file system's refusal means, as a :class:`~modelsafe.errors.ModelsafeError`.

The operating system says ``PermissionError: [Errno 13]`` or ``OSError: [Errno 28]``; a
user needs to hear which artifact, what the disk refused, why it matters and what to do.
:func:`write_error` and :func:`read_error` build those errors (``save`` wraps its
writing in :func:`saving_to`). Both keep :class:`OSError`
in their bases (with its ``errno``, ``strerror`` and ``filename``), so ``except OSError``
still works. (A remote store's failures are explained by :mod:`.storage_errors`.)
"""

from __future__ import annotations

import contextlib
import errno
import os
from typing import Iterator

from modelsafe.errors import ArtifactReadError, ArtifactWriteError, ModelsafeError

__all__ = ["write_error", "read_error", "saving_to"]

#: errno -> (what the file system refused, how to fix it) when writing.
_WRITE: dict[int, tuple[str, str]] = {
    errno.EACCES: ("permission denied: this user may not write in that folder",
                   "Save to a folder you can write to, or ask its owner to let you write there (chmod/chown)"),
    errno.EPERM: ("the operation is not permitted there",
                  "Save to a folder you can write to, or ask its owner to let you write there (chmod/chown)"),
    errno.EROFS: ("the folder is on a read-only file system",
                  "Save to a writable disk, or remount this one read-write"),
    errno.ENOSPC: ("the disk is full",
                   "Free space on that disk (df -h shows how much is left), or save to another disk"),
    errno.EDQUOT: ("this user's disk quota is used up",
                   "Free space within your quota, ask for a larger one, or save to another disk"),
    errno.EFBIG: ("the file grew past the largest file allowed (the process's file-size limit, ulimit -f, "
                  "or the file system's)", "Raise the limit, or save to a file system that allows larger files"),
    errno.EIO: ("the disk reported an input/output error",
                "Check the disk (dmesg, its SMART status) and save to another one meanwhile"),
}

#: errno -> (what the file system refused, how to fix it) when reading.
_READ: dict[int, tuple[str, str]] = {
    errno.EACCES: ("permission denied: this user may not read it",
                   "Give this user read permission on the artifact's files (chmod -R a+rX on a folder "
                   "artifact), or copy the artifact somewhere you can read"),
    errno.EPERM: ("the operation is not permitted",
                  "Give this user read permission on the artifact's files, or copy it somewhere you can read"),
    errno.EIO: ("the disk reported an input/output error",
                "Check the disk (dmesg, its SMART status), and copy the artifact again from its source"),
}


def _strerror(exc: OSError) -> str:
    return exc.strerror or (os.strerror(exc.errno) if exc.errno else str(exc))


def write_error(exc: OSError, path: str, *, written: int | None = None) -> ArtifactWriteError:
    """The error for ``exc``, raised while saving the artifact at ``path`` (nothing is left there)."""
    if isinstance(exc, ArtifactWriteError):
        return exc
    what, fix = _WRITE.get(exc.errno or 0, (_strerror(exc), "Check the path and the disk, then save again"))
    where = f" (writing {exc.filename!r})" if exc.filename and str(exc.filename) != path else ""
    size = f" after {written:,} bytes" if written else ""
    return ArtifactWriteError(
        f"Cannot save the artifact {path!r}: {what}{where}{size} ([Errno {exc.errno}] {_strerror(exc)}). The save "
        f"was stopped and nothing was left at {path!r}: its temporary files were removed, and an artifact that "
        f"was there before is unchanged. {fix}.",
        path=path, errno=exc.errno, strerror=_strerror(exc), filename=exc.filename)


def read_error(exc: OSError, path: str, member: str | None = None) -> ArtifactReadError:
    """The error for ``exc``, raised while reading the artifact at ``path`` (or its ``member``)."""
    if isinstance(exc, ArtifactReadError):
        return exc
    what, fix = _READ.get(exc.errno or 0, (_strerror(exc), "Check the path and the disk"))
    subject = f"member {member!r} of the artifact {path!r}" if member else f"the artifact {path!r}"
    return ArtifactReadError(
        f"Cannot read {subject}: {what} ([Errno {exc.errno}] {_strerror(exc)}). A model is loaded only from "
        f"members that were read whole and checked, so nothing was loaded. {fix}.",
        path=path, member=member, errno=exc.errno, strerror=_strerror(exc), filename=exc.filename)


@contextlib.contextmanager
def saving_to(path: str) -> Iterator[None]:
    """Turn an OSError raised while saving ``path`` into :func:`write_error`'s ArtifactWriteError.

    ModelsafeErrors (whatever their bases) pass unchanged: they already say what happened.
    """
    try:
        yield
    except OSError as exc:
        if isinstance(exc, ModelsafeError):
            raise
        raise write_error(exc, path) from exc
