"""The container's shared rules: member names, alignment, hostile-archive limits, zip local headers.

Both the local readers (:mod:`.reader`) and the remote ones (:mod:`.remote_read`) apply them.
"""

from __future__ import annotations

import struct
import zipfile
from typing import Any

from modelsafe.errors import IntegrityError, UnsafeArchiveError

#: Alignment of member data inside a single-file artifact (bytes).
ALIGNMENT = 64
#: Size of the pieces members are written and hashed in.
CHUNK = 8 << 20
#: Hostile-archive limits.
MAX_MEMBERS = 100_000
MAX_COMPRESSION_RATIO = 100
MAX_TOTAL_UNCOMPRESSED = 1 << 40  # 1 TiB
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")
#: Files and folders operating systems leave in any folder they show (Finder, Explorer, Spotlight).
#: A folder artifact ignores them: they are outside the manifest, never read, and ``inspect`` lists them.
OS_DROPPINGS = frozenset({".DS_Store", "Thumbs.db", "ehthumbs.db", "desktop.ini", "Desktop.ini", "Icon\r",
                          "__MACOSX", ".Spotlight-V100", ".Trashes", ".fseventsd", ".TemporaryItems"})


def is_os_dropping(name: str) -> bool:
    """Whether a file or folder ``name`` (one path component) is an OS dropping (``._x`` included:
    the resource forks macOS writes beside files on foreign file systems)."""
    return name in OS_DROPPINGS or name.startswith("._")


def check_member_name(name: str) -> str:
    """Return ``name`` if it is a safe relative POSIX path, else raise UnsafeArchiveError."""
    reason = None
    if not name or "\x00" in name:
        reason = "it is empty or contains a NUL byte"
    elif name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        reason = "it is an absolute path"
    elif "\\" in name:
        reason = "it contains a backslash, which some systems read as a path separator"
    elif any(part in ("..", ".", "") for part in name.split("/")):  # not PurePosixPath: it drops "." and ""
        reason = "it has a '..', '.' or empty path component (path traversal)"
    if reason:
        raise UnsafeArchiveError(
            f"Refusing member {name!r}: {reason}. An artifact member must stay inside the "
            "artifact, or reading it could overwrite or expose other files. Do not use this "
            "file; re-export the model from a trusted source.",
            member=name,
        )
    return name


def local_header_length(info: zipfile.ZipInfo, head: bytes | memoryview | Any, where: str) -> int:
    """Bytes from a member's local header to its data, from ``head`` (the header and the name at least).

    Refuses a damaged header (IntegrityError) and one naming another file than the central
    directory does (UnsafeArchiveError: two readers would see different files).
    """
    if len(head) < _LOCAL_HEADER.size or head[:4] != b"PK\x03\x04":
        raise IntegrityError(
            f"Member {info.filename!r} has a damaged zip header in {where!r}: the file is "
            "corrupted or truncated. Copy the artifact again from its source.",
            member=info.filename, expected="zip local header", actual=bytes(head[:4]).hex(),
        )
    fields = _LOCAL_HEADER.unpack(head[: _LOCAL_HEADER.size])
    name_len, extra_len = fields[-2], fields[-1]
    stored_name = bytes(head[30 : 30 + name_len]).decode("utf-8", "replace")
    if stored_name != info.filename:
        raise UnsafeArchiveError(
            f"Member {info.filename!r} is named {stored_name!r} in its local header: two readers "
            "would see different files. Do not use this file.",
            member=info.filename,
        )
    return 30 + name_len + extra_len
