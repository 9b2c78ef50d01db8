"""Integrity: every member's size and SHA-256 are checked before anything is deserialized.

Hashes are computed while members are written (see :mod:`modelsafe._archive`); here they
are checked on read. Members are hashed in parallel (``hashlib`` releases the GIL), each
from a memory-mapped view, so checking costs one read of the data and no copy.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Mapping

from modelsafe._archive import CHUNK, MANIFEST_NAME, ArtifactReader, ProgressCallback, check_member_name
from modelsafe._manifest import MemberRecord
from modelsafe.errors import IntegrityError

_PARALLEL_THRESHOLD = 4 << 20  # below this, threads cost more than they save


def sha256_of(view: memoryview, progress: ProgressCallback | None = None) -> str:
    h = hashlib.sha256()
    for start in range(0, len(view), CHUNK):
        chunk = view[start : start + CHUNK]
        h.update(chunk)
        if progress is not None:
            progress(len(chunk))
    return h.hexdigest()


def check_member(reader: ArtifactReader, name: str, record: MemberRecord,
                 progress: ProgressCallback | None = None) -> None:
    """Raise IntegrityError unless member ``name`` has the recorded size and hash."""
    size = reader.size(name)
    if size != record.size:
        raise IntegrityError(
            f"Member {name!r} is {size} bytes but the manifest records {record.size}: the file was "
            "truncated or changed after saving (corruption or tampering). Copy the artifact again "
            "from its source, or re-export the model.",
            member=name, expected=record.size, actual=size,
        )
    actual = sha256_of(reader.view(name), progress)
    if actual != record.sha256:
        raise IntegrityError(
            f"Member {name!r} has sha256 {_short(actual)} but the manifest records "
            f"{_short(record.sha256)}: the file changed after saving (corruption or tampering). "
            "Re-export the model from its source.",
            member=name, expected=record.sha256, actual=actual,
        )


def check_members(reader: ArtifactReader, members: Mapping[str, MemberRecord],
                  progress: ProgressCallback | None = None) -> None:
    """Check every recorded member, and that the artifact holds no unrecorded member.

    ``progress(n_bytes)`` is called as data is hashed (for a progress bar).
    """
    for name in members:
        check_member_name(name)
        if not reader.has(name):
            raise IntegrityError(
                f"Member {name!r} is missing from {str(reader.path)!r}: the manifest lists it, so the "
                "artifact is incomplete (a partial copy or a tampered file). Copy the artifact again "
                "from its source, or re-export the model.",
                member=name, expected="present", actual="missing",
            )
    extra = sorted(set(reader.names()) - set(members) - {MANIFEST_NAME})
    if extra:
        raise IntegrityError(
            f"{str(reader.path)!r} holds members the manifest does not record: {', '.join(extra[:10])}. "
            "Files were added after saving (tampering, or a copy merged into the folder). Remove them "
            "or re-export the model.",
            member=extra[0], expected="absent", actual="present",
        )
    big = [n for n, r in members.items() if r.size >= _PARALLEL_THRESHOLD]
    small = [n for n in members if n not in set(big)]
    for name in small:
        check_member(reader, name, members[name], progress)
    _check_parallel(reader, big, members, progress)


def _check_parallel(reader: ArtifactReader, names: Iterable[str], members: Mapping[str, MemberRecord],
                    progress: ProgressCallback | None) -> None:
    names = list(names)
    if len(names) <= 1:
        for name in names:
            check_member(reader, name, members[name], progress)
        return
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="modelsafe-verify") as pool:
        for future in [pool.submit(check_member, reader, n, members[n], progress) for n in names]:
            future.result()


def _short(digest: str) -> str:
    return f"{digest[:8]}…{digest[-4:]}" if len(digest) > 12 else digest
