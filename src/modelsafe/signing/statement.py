"""The OMS statement: an in-toto Statement v1 listing every signed file with its SHA-256.

This is the layout ``model_signing`` (OpenSSF Model Signing, v1.x) writes and reads::

    {"_type": "https://in-toto.io/Statement/v1",
     "subject": [{"name": "<model dir or file name>",
                  "digest": {"sha256": "<sha256 over the raw bytes of every resource digest, in order>"}}],
     "predicateType": "https://model_signing/signature/v1.0",
     "predicate": {"serialization": {"method": "files", "hash_type": "sha256", "allow_symlinks": false,
                                     "ignore_paths": [".git", ".gitattributes", ".github", ".gitignore"]},
                   "resources": [{"name": "model/weights.safetensors", "algorithm": "sha256", "digest": "..."}],
                   "modelsafe_provenance": {...}}}

Resources are sorted by path component (``a/x`` before ``a-b``), as ``PurePosixPath``
sorts. Verifiers of predicate v1.0 ignore predicate fields they do not know, so modelsafe's
provenance travels in ``predicate.modelsafe_provenance`` (:data:`PROVENANCE_KEY`), inside
the signed bytes. Standard library only: building and comparing statements needs no
cryptography.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

__all__ = ["STATEMENT_TYPE", "PREDICATE_TYPE", "DEFAULT_IGNORE_PATHS", "PROVENANCE_KEY", "SignatureProblem",
           "ResourceDiff", "statement_for", "validate_statement", "subject_digest", "compare_resources",
           "signed_resources", "is_ignored", "check_json_value"]

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
#: The v0.2 predicate model_signing still reads; modelsafe refuses it (its PAE was buggy).
LEGACY_PREDICATE_TYPE = "https://model_signing/Digests/v0.1"
#: Paths model_signing skips in a folder by default (top level; a folder covers what is below it).
DEFAULT_IGNORE_PATHS: tuple[str, ...] = (".git", ".gitattributes", ".github", ".gitignore")
#: The predicate field holding modelsafe's provenance (other verifiers ignore it).
PROVENANCE_KEY = "modelsafe_provenance"
#: Integers beyond this are rounded by protobuf ``Struct`` parsers, which other OMS verifiers may use.
MAX_SAFE_INT = 2**53
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX = re.compile(r"[0-9a-fA-F]+")


class SignatureProblem(Exception):
    """Why a signature cannot be accepted, before the caller adds the artifact's facts.

    ``kind`` is ``"malformed"`` (not an OMS bundle), ``"untrusted"`` (no trusted key or
    certificate matches), ``"invalid"`` (the signature does not verify) or
    ``"unsupported"`` (a valid OMS form modelsafe does not verify, e.g. keyless Sigstore).
    ``fingerprint`` is the signer's key fingerprint when known.
    """

    def __init__(self, kind: str, detail: str, fingerprint: str | None = None) -> None:
        super().__init__(detail)
        self.kind, self.detail, self.fingerprint = kind, detail, fingerprint


def sort_key(path: str) -> tuple[str, ...]:
    """``PurePosixPath`` order: by component, so ``a/x`` sorts before ``a-b``."""
    return tuple(path.split("/"))


def is_ignored(path: str, ignore_paths: Iterable[str]) -> bool:
    """Whether model_signing skips ``path``: it equals an ignore entry or lies below one."""
    return any(path == entry or path.startswith(entry + "/") for entry in ignore_paths)


def check_json_value(value: Any, where: str) -> None:
    """Raise ValueError unless ``value`` survives any JSON or protobuf ``Struct`` round trip."""
    if value is None or isinstance(value, (str, bool)):
        return
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INT:
            raise ValueError(f"{where} is the integer {value}, beyond 2**53, which JSON readers round: "
                             "store it as a string")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where} is {value!r}, which JSON cannot hold")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where} has the key {key!r}, not a string")
            check_json_value(item, f"{where}.{key}")
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            check_json_value(item, f"{where}[{index}]")
        return
    raise ValueError(f"{where} has the type {type(value).__name__}, not a JSON type (str, int, float, bool, None, "
                     "list or dict)")


def subject_digest(digests: Iterable[str]) -> str:
    """SHA-256 over the concatenated raw bytes of ``digests`` (hex), in the order given."""
    hasher = hashlib.sha256()
    for digest in digests:
        hasher.update(bytes.fromhex(digest))
    return hasher.hexdigest()


def statement_for(resources: Iterable[tuple[str, str]], *, model_name: str,
                  provenance: Mapping[str, Any] | None = None,
                  ignore_paths: Sequence[str] = DEFAULT_IGNORE_PATHS) -> dict[str, Any]:
    """The statement model_signing builds for a folder holding ``resources`` (path, SHA-256 hex).

    Raises ValueError for a duplicate, non-canonical or ignored path, a digest that is not
    64 hex digits, or provenance that is not JSON.
    """
    entries: dict[str, str] = {}
    for path, digest in resources:
        if not path or "\\" in path or "\x00" in path or any(p in ("", ".", "..") for p in path.split("/")):
            raise ValueError(f"{path!r} is not a canonical relative POSIX path")
        if path in entries:
            raise ValueError(f"{path!r} is listed twice")
        if is_ignored(path, (*ignore_paths, *DEFAULT_IGNORE_PATHS)):
            raise ValueError(f"{path!r} lies under a path model_signing ignores ({', '.join(DEFAULT_IGNORE_PATHS)})")
        digest = digest.lower()
        if not _HEX64.fullmatch(digest):
            raise ValueError(f"the digest of {path!r} is not 64 hex digits: {digest!r}")
        entries[path] = digest
    if not entries:
        raise ValueError("a statement needs at least one resource")
    ordered = sorted(entries, key=sort_key)
    predicate: dict[str, Any] = {
        "serialization": {"method": "files", "hash_type": "sha256", "allow_symlinks": False,
                          **({"ignore_paths": list(ignore_paths)} if ignore_paths else {})},
        "resources": [{"name": name, "algorithm": "sha256", "digest": entries[name]} for name in ordered],
    }
    if provenance is not None:
        check_json_value(provenance, PROVENANCE_KEY)
        predicate[PROVENANCE_KEY] = json.loads(json.dumps(provenance))  # a copy the caller cannot change
    return {"_type": STATEMENT_TYPE,
            "subject": [{"name": model_name, "digest": {"sha256": subject_digest(entries[n] for n in ordered)}}],
            "predicateType": PREDICATE_TYPE, "predicate": predicate}


def validate_statement(statement: Any) -> dict[str, Any]:
    """Return ``statement`` if it is an OMS v1.0 statement as model_signing reads it, else raise.

    Checks every field model_signing reads, refuses duplicate resource names (model_signing
    would keep the last), and recomputes the subject digest. Raises SignatureProblem("malformed").
    """
    def fail(detail: str) -> SignatureProblem:
        return SignatureProblem("malformed", f"its statement {detail}")

    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
        raise fail(f"is not an in-toto Statement v1 (_type {_get(statement, '_type')!r})")
    if statement.get("predicateType") == LEGACY_PREDICATE_TYPE:
        raise fail("uses the pre-1.0 model_signing predicate (v0.2), which modelsafe does not accept")
    if statement.get("predicateType") != PREDICATE_TYPE:
        raise fail(f"has predicateType {statement.get('predicateType')!r}, not {PREDICATE_TYPE!r}")
    subjects = statement.get("subject")
    if not isinstance(subjects, list) or len(subjects) != 1 or not isinstance(subjects[0], dict):
        raise fail("must have exactly one subject")
    digest = subjects[0].get("digest")
    if not isinstance(subjects[0].get("name"), str) or not isinstance(digest, dict) \
            or not isinstance(digest.get("sha256"), str):
        raise fail("has no subject name or sha256 digest")
    predicate = statement.get("predicate")
    if not isinstance(predicate, dict):
        raise fail("has no predicate object")
    serialization = predicate.get("serialization")
    if not isinstance(serialization, dict) or serialization.get("method") not in ("files", "shards") \
            or not isinstance(serialization.get("hash_type"), str) \
            or not isinstance(serialization.get("allow_symlinks"), bool):
        raise fail("has no valid predicate.serialization (method, hash_type, allow_symlinks)")
    ignores = serialization.get("ignore_paths", [])
    if not isinstance(ignores, list) or not all(isinstance(p, str) for p in ignores):
        raise fail("has serialization.ignore_paths that is not a list of strings")
    resources = predicate.get("resources")
    if not isinstance(resources, list):
        raise fail("has no predicate.resources list")
    seen: set[str] = set()
    for index, resource in enumerate(resources):
        if not isinstance(resource, dict) or not isinstance(resource.get("name"), str) \
                or not isinstance(resource.get("algorithm"), str):
            raise fail(f"has a resource #{index} without name or algorithm")
        value = resource.get("digest")
        if not isinstance(value, str) or len(value) % 2 or not _HEX.fullmatch(value):
            raise fail(f"has a digest for {resource['name']!r} that is not hex")
        if resource["name"] in seen:
            raise fail(f"lists {resource['name']!r} twice")
        seen.add(resource["name"])
    if subject_digest(r["digest"] for r in resources) != digest["sha256"]:
        raise fail("has a subject digest that does not match its resources")
    return statement


def _get(value: Any, key: str) -> Any:
    return value.get(key) if isinstance(value, dict) else None


@dataclass(frozen=True)
class ResourceDiff:
    """How the signed files differ from the artifact.

    ``missing``: signed, but not in the artifact's manifest (removed after signing);
    ``added``: in the manifest, but not signed (added after signing); ``changed``:
    ``(name, signed digest, digest now)``; ``unlisted``: files in the artifact that neither
    the manifest lists nor the signed ``ignore_paths`` cover.
    """

    missing: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    changed: tuple[tuple[str, str, str], ...] = ()
    unlisted: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not (self.missing or self.added or self.changed or self.unlisted)

    def describe(self) -> str:
        parts = [f"{label}: {', '.join(names)}" for label, names in
                 (("signed but no longer in the artifact", self.missing), ("in the artifact but not signed", self.added),
                  ("in the artifact but not in its manifest", self.unlisted)) if names]
        parts += [f"{name} changed (signed sha256 {signed[:16]}…, now {now[:16]}…)" for name, signed, now in self.changed]
        return "; ".join(parts) or "the signed files match"


def signed_resources(statement: Mapping[str, Any]) -> dict[str, str]:
    """``{name: sha256}`` of a valid statement; SignatureProblem("unsupported") for what cannot be
    compared with the manifest's SHA-256 digests without re-hashing (shards, other hashes)."""
    predicate = statement["predicate"]
    method = predicate["serialization"]["method"]
    if method != "files":
        raise SignatureProblem("unsupported", f"it signs {method!r} (file pieces), which cannot be compared with "
                                              "the manifest's per-file digests")
    signed: dict[str, str] = {}
    for resource in predicate["resources"]:
        if resource["algorithm"] != "sha256":
            raise SignatureProblem("unsupported", f"it signs {resource['name']!r} with {resource['algorithm']}, "
                                                  "and the manifest records SHA-256")
        signed[resource["name"]] = resource["digest"].lower()
    return signed


def compare_resources(statement: Mapping[str, Any], expected: Mapping[str, str], present: Iterable[str]) -> ResourceDiff:
    """Compare the signed files with ``expected`` (the manifest's ``{name: sha256}``, the manifest itself
    included) and with the files ``present`` in the artifact. A file the manifest does not list is
    ``unlisted`` unless the signed ``ignore_paths`` cover it, as model_signing skips those."""
    signed = signed_resources(statement)
    ignores = statement["predicate"]["serialization"].get("ignore_paths", [])
    present = set(present)
    return ResourceDiff(
        missing=tuple(sorted(set(signed) - set(expected) - present, key=sort_key)),
        added=tuple(sorted(set(expected) - set(signed), key=sort_key)),
        changed=tuple((name, signed[name], expected[name]) for name in sorted(set(signed) & set(expected), key=sort_key)
                      if signed[name] != expected[name].lower()),
        unlisted=tuple(sorted((name for name in present if name not in expected and not is_ignored(name, ignores)),
                              key=sort_key)),
    )
