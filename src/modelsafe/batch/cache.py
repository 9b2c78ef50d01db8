"""One load per worker process: bundles kept by artifact URL and manifest digest.

The client builds an :class:`ArtifactRef` (where the artifact is, the SHA-256 of its
manifest, the load keywords): a few hundred bytes, which is all a Dask task or a Spark UDF
carries. The model is never pickled into the job. In each worker process the first task to
need the artifact loads it with every check of :func:`modelsafe.load` (under a lock, so
concurrent threads wait for that one load) and the others reuse it. A worker that the job
outlives (restarted by its nanny, a new Python worker) loads it once again.

:func:`cache_info` says how many loads and reuses this process made, like
:func:`functools.lru_cache`'s ``cache_info``.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from modelsafe.artifact.location import is_url
from modelsafe.errors import BatchError

__all__ = ["ArtifactRef", "cache_info", "clear", "manifest_digest"]

_LOCK = threading.Lock()
_BUNDLES: dict[tuple[str, str, str], _Slot] = {}
_COUNTS = {"loads": 0, "hits": 0}


class _Slot:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.bundle: Any = None


@dataclass(frozen=True)
class ArtifactRef:
    """What a task needs to find the artifact: its location, manifest digest and load keywords."""

    location: str
    digest: str
    load_kwargs: Mapping[str, Any] = field(default_factory=dict)
    #: The manifest as the client read it (for output types); not part of the key.
    manifest: Any = field(default=None, compare=False, repr=False)

    @classmethod
    def prepare(cls, artifact: Any, verb: str, load_kwargs: Mapping[str, Any]) -> ArtifactRef:
        """On the client: read the manifest, check the keywords and the signature, and make a local path
        absolute."""
        from modelsafe.artifact.location import resolve
        from modelsafe._load import refuse_unknown_keywords
        from modelsafe.artifact.reader import open_artifact, read_manifest
        from modelsafe.signing.gate import check_before_load

        location = os.fspath(artifact) if not isinstance(artifact, str) else artifact
        if not is_url(location):
            location = os.path.abspath(location)
        storage_options = load_kwargs.get("storage_options")
        with open_artifact(location, storage_options) as reader:
            manifest = read_manifest(reader)
            refuse_unknown_keywords(load_kwargs, manifest, verb)
            # A refused signature is said here, before any task runs; each worker's load checks it again.
            check_before_load(resolve(location, storage_options), reader, manifest, load_kwargs)
        return cls(location, manifest_digest(manifest), dict(load_kwargs), manifest)

    def __reduce__(self) -> Any:  # the manifest stays on the client: tasks carry the key only
        return (ArtifactRef, (self.location, self.digest, dict(self.load_kwargs)))

    def bundle(self) -> Any:
        """The loaded bundle, loaded in this process on first use and kept."""
        key = (self.location, self.digest, json.dumps(self.load_kwargs, sort_keys=True, default=repr))
        with _LOCK:
            slot = _BUNDLES.setdefault(key, _Slot())
        with slot.lock:
            if slot.bundle is None:
                slot.bundle = self._load()
                with _LOCK:
                    _COUNTS["loads"] += 1
                return slot.bundle
        with _LOCK:
            _COUNTS["hits"] += 1
        return slot.bundle

    def _load(self) -> Any:
        from modelsafe._api import load

        if not is_url(self.location) and not os.path.exists(self.location):
            raise BatchError(
                f"The worker on {socket.gethostname()} (pid {os.getpid()}) cannot read the artifact {self.location!r}: "
                "there is no such path there. Workers load the artifact themselves (it is never pickled into the "
                "job), so a path on the client's disk only is not enough. Put the artifact on a file system every "
                "worker mounts at the same path, or on a remote store (s3://bucket/model.msafe, with "
                "storage_options=...), and pass that path.", artifact=self.location, host=socket.gethostname())
        bundle = load(self.location, **self.load_kwargs)
        found = manifest_digest(bundle.manifest)
        if found != self.digest:
            bundle.close()
            raise BatchError(
                f"The artifact at {self.location!r} changed after the job was built: its manifest's SHA-256 is "
                f"{found[:12]}... on {socket.gethostname()}, {self.digest[:12]}... on the client. Workers would score "
                "with another model than the one the job was planned for. Build the job again, and do not replace an "
                "artifact while jobs use it (save new versions under new paths).",
                artifact=self.location, expected=self.digest, actual=found)
        return bundle


def manifest_digest(manifest: Any) -> str:
    """SHA-256 of the manifest as the artifact records it (``modelsafe.json``, which names every member's
    digest, so the whole artifact); never what a reader added (``inspect``'s signature report)."""
    return hashlib.sha256(manifest.to_json()).hexdigest()


def cache_info() -> dict[str, int]:
    """``{"loads": ..., "hits": ..., "artifacts": ...}`` of this process."""
    with _LOCK:
        return {**_COUNTS, "artifacts": sum(1 for s in _BUNDLES.values() if s.bundle is not None)}


def clear() -> None:
    """Close and forget every bundle of this process (the counts start again at zero)."""
    with _LOCK:
        slots = list(_BUNDLES.values())
        _BUNDLES.clear()
        _COUNTS.update(loads=0, hits=0)
    for slot in slots:
        if slot.bundle is not None:
            slot.bundle.close()


atexit.register(clear)  # close the bundles while the interpreter can still run their close()
