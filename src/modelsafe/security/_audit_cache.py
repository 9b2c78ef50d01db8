"""The audit cache: the reading of a verified pickle stream, remembered by the stream's SHA-256.

Auditing a stream reads it twice (:func:`._inert.summarize_buffer`: the symbolic reader, then
CPython's unpickler replaying it inertly); for a large scikit-learn model that is most of
what ``load`` spends on its own. What the readers find is a pure function of the stream's
bytes, so once a stream of a verified member has been read, its summary (the globals it
names, which it calls, its persistent ids) is kept beside the verified-hash cache, keyed by:

* the SHA-256 the member was verified against (its bytes were hashed and matched the
  manifest, or the verified-hash cache knows the unchanged file);
* the readers themselves: the source of every module that reads a stream, the modelsafe
  version and CPython's full version (the replay is CPython's own unpickler). A changed
  reader never trusts what an older one found.

The policy is never cached: the summary is checked against the allowlist, the caller's
``trusted=`` names and the manifest's record on every load, as on a first load. Only
complete readings are kept (a refused or truncated stream is read again, and refused
again, with its full explanation). Streams under :data:`MIN_BYTES` are read every time
(reading them costs less than the lookup). The cache follows the verified-hash cache's
switch (``MODELSAFE_HASH_CACHE=0``, ``load(hash_cache=False)``).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import re
import sys
from pathlib import Path

from modelsafe._version import __version__
from modelsafe.artifact.hash_cache import read_entry, switched_off, write_entry
from modelsafe.security._inert import summarize_buffer
from modelsafe.security._summary import GlobalRef, PickleSummary

__all__ = ["summarize_verified", "MIN_BYTES"]

#: Streams shorter than this are read on every load.
MIN_BYTES = 1 << 12
_KIND = "audits"
_SHA256 = re.compile(r"[0-9a-f]{64}")
#: The modules whose code decides what a stream's reading is (and the C reader, when it is built).
_READERS = ("_opcodes", "_opcode_table", "_inert", "_bounds", "_summary", "_window", "_names", "_fast_reader",
            "_audit_cache")


@functools.lru_cache(maxsize=1)
def _readers_digest() -> str:
    digest = hashlib.sha256(f"{__version__}\0{sys.version}\0{sys.implementation.cache_tag}".encode())
    here = Path(__file__).parent
    files = [here / f"{name}.py" for name in _READERS]
    native = importlib.util.find_spec("modelsafe._native")  # finds the file; imports nothing
    if native is not None and native.origin:
        files.append(Path(native.origin))
    else:
        digest.update(b"no C reader")
    for path in files:
        try:
            digest.update(path.read_bytes())
        except OSError:  # no source (a frozen or compiled install): never share readings across builds
            digest.update(os.urandom(16))
    return digest.hexdigest()


def _key(sha256: str) -> str:
    return hashlib.sha256(f"{_readers_digest()}\0{sha256}".encode()).hexdigest()


def _encode(summary: PickleSummary) -> str:
    return json.dumps({"protocol": summary.protocol, "n_opcodes": summary.n_opcodes,
                       "end_offset": summary.end_offset, "persistent_ids": summary.persistent_ids,
                       "globals": [[g.module, g.name, g.invoked, g.offset] for g in summary.globals]},
                      separators=(",", ":"))


def _decode(text: str) -> PickleSummary | None:
    try:
        raw = json.loads(text)
        refs = tuple(GlobalRef(str(m), str(n), bool(i), int(o)) for m, n, i, o in raw["globals"])
        return PickleSummary(globals=refs, protocol=int(raw["protocol"]), complete=True, problems=(),
                             n_opcodes=int(raw["n_opcodes"]), end_offset=int(raw["end_offset"]),
                             persistent_ids=int(raw["persistent_ids"]))
    except (ValueError, KeyError, TypeError):  # a damaged entry: read the stream again
        return None


def summarize_verified(data: bytes | bytearray | memoryview, sha256: str | None, *, cache: bool = True) -> PickleSummary:
    """:func:`._inert.summarize_buffer` of ``data``, whose bytes were verified to have ``sha256``.

    With ``cache`` (and a well-formed digest, and a stream of at least :data:`MIN_BYTES`) a
    reading of the same bytes by the same readers is reused, and a new complete one recorded.
    """
    usable = (cache and sha256 is not None and _SHA256.fullmatch(sha256) is not None
              and len(data) >= MIN_BYTES and not switched_off())
    if not usable:
        return summarize_buffer(data)
    key = _key(sha256)
    text = read_entry(_KIND, key)
    known = _decode(text) if text is not None else None
    if known is not None and known.end_offset <= len(data):
        return known
    summary = summarize_buffer(data)
    if summary.complete and not summary.exhausted and not summary.problems:
        write_entry(_KIND, key, _encode(summary))
    return summary
