"""The verified-hash cache: an unchanged artifact that passed its check is not re-hashed.

Checking an artifact costs a full read and SHA-256 of every
byte. After a check passes, an artifact of at least :data:`CACHE_MIN_BYTES` is recorded
in a small cache keyed by the identity of its file(s) (real path, device, inode, size,
``mtime_ns``, ``ctime_ns``) and the manifest's table of member hashes. A later load of
the *unchanged* file skips re-hashing; any write, copy, rename over or replacement
changes the identity and the check runs again (the kernel sets ``ctime`` on every
change, and no user call can set it back).

An artifact on a remote store is keyed by its URL, size and the store's ETag or version
id (of the object, or of every object of a folder); a replaced object has a new one, and
is hashed again. A store that gives neither is never cached.

Timestamps have a coarse clock tick, so a write in the same tick as the check could
leave the identity unchanged. As git does for its index, a file changed less than
:data:`RACY_NS` before its check is not recorded: it is checked again next time.

The cache lives in ``$MODELSAFE_CACHE_DIR`` (default ``$XDG_CACHE_HOME/modelsafe`` or
``~/.cache/modelsafe``); ``MODELSAFE_HASH_CACHE=0`` turns it off, and :func:`modelsafe.verify`
never uses it (it always re-hashes).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Mapping

from modelsafe.artifact.manifest import MemberRecord
from modelsafe.artifact.reader import ArtifactReader

__all__ = ["cache_dir", "cache_key", "is_verified", "record", "read_entry", "write_entry", "switched_off",
           "CACHE_MIN_BYTES", "RACY_NS"]

#: Artifacts smaller than this are always re-hashed (as cheap as a cache lookup); larger ones use the cache.
CACHE_MIN_BYTES = 1 << 20
#: A file changed less than this before its check is not recorded (its timestamps may not show a later write).
RACY_NS = 1_000_000_000


def cache_dir() -> Path:
    """Where verified artifact identities are recorded."""
    explicit = os.environ.get("MODELSAFE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "modelsafe"


def switched_off() -> bool:
    """Whether ``MODELSAFE_HASH_CACHE=0`` turns the caches off (this one, and the audit cache beside it)."""
    return os.environ.get("MODELSAFE_HASH_CACHE", "1") == "0"


def _identity(fd: int, path: Path) -> list[int | str]:
    st = os.fstat(fd)  # the file this reader holds open, not whatever the path names now
    return [os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def cache_key(reader: ArtifactReader, members: Mapping[str, MemberRecord]) -> tuple[str | None, int]:
    """The cache key of this artifact as it is on disk now (None when the cache does not apply),
    and the time its newest file last changed."""
    if switched_off() or not hasattr(os, "preadv"):
        return None, 0
    if sum(r.size for r in members.values()) < CACHE_MIN_BYTES:
        return None, 0
    table = sorted((name, r.size, r.sha256) for name, r in members.items())
    remote = getattr(reader, "identity", None)
    if remote is not None:  # an object on a store: its URL, size and ETag or version id (see remote_read)
        rows = remote()
        if rows is None:  # the store gives no version: nothing tells a changed object apart
            return None, 0
        raw = json.dumps({"remote": rows, "members": table}, separators=(",", ":"))
        return hashlib.sha256(raw.encode("utf-8")).hexdigest(), 0
    root = Path(reader.path)
    single = root.is_file()  # one file holds every member
    try:
        identity = []
        for name in sorted(members):
            located = reader.locate(name)
            if located is None:
                return None, 0
            identity.append(_identity(located[0], root if single else root / name))
            if single:
                break
    except OSError:
        return None, 0
    raw = json.dumps({"files": identity, "members": table}, separators=(",", ":"))
    changed = max(max(int(entry[4]), int(entry[5])) for entry in identity) if identity else 0
    return hashlib.sha256(raw.encode("utf-8")).hexdigest(), changed


def _cache_path(key: str, kind: str = "verified") -> Path:
    return cache_dir() / kind / key[:2] / key


def is_verified(key: str) -> bool:
    """Whether an artifact with this key passed its check before."""
    return _cache_path(key).is_file()


def read_entry(kind: str, key: str) -> str | None:
    """The text recorded under ``kind/key`` by :func:`write_entry`, or None."""
    try:
        return _cache_path(key, kind).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def write_entry(kind: str, key: str, text: str) -> None:
    """Record ``text`` under ``kind/key``, atomically (best effort: a read-only home just skips it)."""
    target = _cache_path(key, kind)
    with contextlib.suppress(OSError):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{key}.{os.getpid()}")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)


def record(key: str, changed_ns: int, reader: ArtifactReader) -> None:
    """Remember that this identity was verified (best effort: a read-only home just skips it).

    Not when its newest file changed less than :data:`RACY_NS` ago: a write in the same clock
    tick as the check could leave the identity unchanged.
    """
    if time.time_ns() - changed_ns < RACY_NS:
        return
    write_entry("verified", key, json.dumps({"path": str(reader.path)}))
