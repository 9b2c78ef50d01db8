"""``ms.scan`` of a URL: the same walk over a remote object, streamed in bounded memory.

The object is read through a file object of its store with a read-ahead block of
:data:`BLOCK` bytes (s3fs pins every range to the object's ETag), so memory stays bounded
whatever its size, as for a local file. A prefix is scanned object by object like a local
folder. A modelsafe artifact also has its integrity checked, each member hashed as it
streams past and never kept.
"""

from __future__ import annotations

from typing import Any

from modelsafe.artifact.location import RemotePath, resolve
from modelsafe.artifact.storage_errors import storage_error
from modelsafe.errors import ModelsafeError
from modelsafe.security import _walk_archives
from modelsafe.security._walk import MAX_MEMBERS, Walker

__all__ = ["walk_remote", "BLOCK"]

#: Read-ahead of the streamed object (the scan's memory for the file itself).
BLOCK = 8 << 20


def walk_remote(url: Any, storage_options: Any = None) -> tuple[str, str, Walker]:
    """The scanner's walk over the object or prefix at ``url``: ``(url, kind, walker)``."""
    remote = resolve(url, storage_options)
    assert isinstance(remote, RemotePath)
    try:
        info = remote.fs.info(remote.path)
    except Exception as exc:  # noqa: BLE001 - every store failure becomes a ModelsafeError
        raise storage_error(exc, remote.url) from exc
    walker = Walker(_walk_archives)
    if info.get("type") == "directory":
        kind = _scan_prefix(walker, remote)
    else:
        _scan_object(walker, remote, "", int(info["size"]), 0, raw_ok=False)
        kind = walker.items[0].kind if walker.items else "unknown"
    if kind.startswith("zip:modelsafe") or kind == "modelsafe-directory":
        _check_artifact(walker, remote)
    return remote.url, kind, walker


def _scan_object(walker: Walker, remote: RemotePath, location: str, size: int, depth: int, *, raw_ok: bool) -> None:
    try:
        handle = remote.fs.open(remote.path, "rb", block_size=BLOCK, cache_type="readahead")
    except Exception as exc:  # noqa: BLE001
        raise storage_error(exc, remote.url) from exc
    with handle:
        walker.blob(location, handle, size, depth, raw_ok=raw_ok)


def _scan_prefix(walker: Walker, remote: RemotePath) -> str:
    try:
        listing = remote.fs.find(remote.path, detail=True, withdirs=False)
    except Exception as exc:  # noqa: BLE001
        raise storage_error(exc, remote.url) from exc
    root = remote.path.strip("/") + "/"
    objects = {key.strip("/")[len(root):]: info for key, info in listing.items() if key.strip("/").startswith(root)}
    artifact = "modelsafe.json" in objects
    code = _bundled_code(remote) if artifact else set()
    if not objects:
        walker.add("medium", "unknown-format", "", None, "directory", "the prefix is empty: there is no model in it")
    for count, (rel, info) in enumerate(sorted(objects.items()), 1):
        if count > MAX_MEMBERS:
            walker.add("medium", "archive-limit", "", None, "directory", f"the prefix holds more than {MAX_MEMBERS} "
                       "objects; the rest was not read")
            break
        if rel in code:
            walker.item(rel, "code", int(info.get("size", 0)))
            walker.add("medium", "bundled-code", rel, None, rel, f"bundled Python source {rel!r} is stored in the "
                       "artifact")
            continue
        _scan_object(walker, remote.join(rel), rel, int(info.get("size", 0)), 1, raw_ok=artifact)
    return "modelsafe-directory" if artifact else "directory"


def _bundled_code(remote: RemotePath) -> set[str]:
    import json

    try:
        manifest = json.loads(remote.fs.cat_file(remote.join("modelsafe.json").path))
        return {str(r.get("member")) for r in manifest.get("code", ()) if isinstance(r, dict)}
    except (ValueError, OSError, AttributeError):
        return set()


def _check_artifact(walker: Walker, remote: RemotePath) -> None:
    """A modelsafe artifact: its manifest, and every member's size and SHA-256 (streamed, not kept)."""
    from modelsafe.artifact.reader import MANIFEST_NAME, open_artifact, read_manifest

    try:
        with open_artifact(remote) as reader:
            manifest = read_manifest(reader)
            walker.facts["modelsafe_version"] = manifest.modelsafe_version
            for name, record in manifest.members.items():
                problem = None
                if not reader.has(name):
                    problem = f"member {name!r} is missing"
                elif reader.size(name) != record.size:
                    problem = f"member {name!r} is {reader.size(name)} bytes, the manifest records {record.size}"
                elif reader.digest(name) != record.sha256:  # type: ignore[attr-defined]
                    problem = f"member {name!r} has a SHA-256 other than the manifest records"
                if problem:
                    walker.add("high", "integrity", name, None, name, problem)
    except ModelsafeError as exc:
        walker.add("high", "integrity", MANIFEST_NAME, None, "artifact", f"the artifact cannot be opened as "
                   f"modelsafe reads it ({type(exc).__name__}: {exc})")
