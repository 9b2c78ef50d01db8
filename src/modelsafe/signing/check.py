"""Check a signature against an open artifact: the signature, then the files it covers, re-hashing nothing.

What a signature covers is every member with the SHA-256 the manifest records, plus
``modelsafe.json`` itself (hashed here: it is small). Since the manifest's digest is signed,
so is everything it records: sizes, flavors, environment, sample. The check compares

* the signed files with the manifest's members and the manifest's own digest, and
* the files the artifact holds (its zip directory or folder listing) with the manifest,

so an edited manifest, an added or removed member, a stray file and another artifact's (or
an older save's) signature are all refused. Whether each member's bytes match the manifest
is the integrity check's job, when ``load`` reads them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from modelsafe.artifact.location import RemotePath, local_or_url
from modelsafe.artifact.manifest import MANIFEST_NAME, Manifest
from modelsafe.errors import (
    InvalidSignatureError,
    SignatureError,
    SignatureMismatchError,
    UntrustedSignerError,
)
from modelsafe.signing.bundle import Verified, claimed_signer, verify_bundle
from modelsafe.signing.envelope import Envelope, parse_bundle
from modelsafe.signing.keys import TrustedKeys
from modelsafe.signing.location import TRUSTED_KEYS_VARIABLE, signature_path
from modelsafe.signing.report import SignatureReport
from modelsafe.signing.statement import (
    PROVENANCE_KEY,
    ResourceDiff,
    SignatureProblem,
    compare_resources,
    is_ignored,
)

__all__ = ["check_files_signature", "check_signature"]

_CLASSES: dict[str, type[SignatureError]] = {"malformed": InvalidSignatureError, "invalid": InvalidSignatureError,
                                             "unsupported": InvalidSignatureError, "untrusted": UntrustedSignerError}
_FIXES = {
    "malformed": "Fetch the signature again from the model's publisher; if you signed it, sign it again with "
                 "`modelsafe sign`",
    "invalid": "Do not use the artifact: the signature or what it signs was altered. Fetch both again from the "
               "model's publisher",
    "unsupported": "Verify it with the tool that made it, or have the model signed with a key or a certificate chain",
    "untrusted": f"If you trust this signer, add their public key (or root certificate) to trusted_keys= or "
                 f"{TRUSTED_KEYS_VARIABLE} (modelsafe verify --trusted-key PUB.pem); otherwise do not use the artifact",
}


def check_signature(artifact: Path | RemotePath, reader: Any, manifest: Manifest, raw: bytes,
                    trusted: TrustedKeys) -> SignatureReport:
    """Verify the signature file ``raw`` of the open artifact ``reader`` (whose manifest is ``manifest``)."""
    def expected(verified: Verified) -> tuple[dict[str, str], Iterable[str]]:
        where = local_or_url(artifact)
        manifest_bytes = reader.read(MANIFEST_NAME)  # the bytes whose digest is compared are the bytes parsed
        if Manifest.from_json(manifest_bytes, where=f"{where}/{MANIFEST_NAME}") != manifest:
            raise SignatureProblem("invalid", f"{MANIFEST_NAME} changed while it was being read (two reads gave two "
                                              "manifests)", verified.fingerprint)
        found = {name: record.sha256 for name, record in manifest.members.items()}
        found[MANIFEST_NAME] = hashlib.sha256(manifest_bytes).hexdigest()
        return found, reader.names()

    return _checked(artifact, raw, trusted, expected,
                    lambda where, signature, verified, diff: _mismatch(where, signature, verified, diff, manifest))


def check_files_signature(source: Path | RemotePath, local: Path, raw: bytes, trusted: TrustedKeys) -> SignatureReport:
    """Verify the signature file ``raw`` of a plain model file or folder (one to convert, signed with
    ``model_signing``), hashing the files at ``local`` (``source`` itself, or its local copy): such a model
    has no manifest whose digests could stand for its bytes."""
    def expected(verified: Verified) -> tuple[dict[str, str], Iterable[str]]:
        found = file_digests(local, verified.statement["predicate"]["serialization"].get("ignore_paths", []))
        return found, found

    return _checked(source, raw, trusted, expected, _files_mismatch)


def _checked(artifact: Path | RemotePath, raw: bytes, trusted: TrustedKeys,
             expected: Callable[[Verified], tuple[dict[str, str], Iterable[str]]],
             mismatch: Callable[[str, str, Verified, ResourceDiff], SignatureMismatchError]) -> SignatureReport:
    """The signature checked, then the signed files compared with ``expected(verified)`` (``{name: sha256}``
    and the names present)."""
    where, signature = local_or_url(artifact), local_or_url(signature_path(artifact))
    envelope: Envelope | None = None
    try:
        envelope = parse_bundle(raw)
        verified = verify_bundle(envelope, trusted)
    except SignatureProblem as problem:
        return _refused(where, signature, problem, envelope, trusted)
    try:
        diff = compare_resources(verified.statement, *expected(verified))
    except SignatureProblem as problem:
        return _refused(where, signature, SignatureProblem(problem.kind, problem.detail, verified.fingerprint),
                        envelope, trusted)
    provenance = verified.statement["predicate"].get(PROVENANCE_KEY)
    error = None if diff.ok else mismatch(where, signature, verified, diff)
    return SignatureReport(path=where, signature=signature, signed=True, verified=error is None,
                           signer=verified.fingerprint, trusted_by=verified.trusted_by, mode=verified.mode,
                           certificate=verified.certificate,
                           provenance=provenance if isinstance(provenance, dict) else None,
                           files=len(verified.statement["predicate"]["resources"]),
                           problem="" if error is None else f"{getattr(error, 'reason', '')}: {diff.describe()}",
                           error=error)


def _files_mismatch(where: str, signature: str, verified: Verified, diff: ResourceDiff) -> SignatureMismatchError:
    return SignatureMismatchError(
        f"{signature!r} is a valid signature by trusted key {verified.fingerprint} ({verified.trusted_by}), but it "
        f"does not match {where!r}: the files are not the ones that were signed: {diff.describe()}. The model was "
        "changed after it was signed (or the signature is another model's), so the signature says nothing about it "
        "and nothing of it was read. Fetch the model and its signature again from the publisher.",
        path=where, signature=signature, fingerprint=verified.fingerprint, reason="files changed",
        missing=list(diff.missing), added=list(diff.added), changed=[list(c) for c in diff.changed], unlisted=[])


def file_digests(local: Path, ignore_paths: list[str]) -> dict[str, str]:
    """``{name: sha256}`` of a model as ``model_signing`` names its files: ``"."`` for a single file, else
    each regular file's path relative to the folder, without the signed ``ignore_paths``. A symbolic link is
    refused, as model_signing refuses one by default."""
    def digest(path: Path) -> str:
        with path.open("rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()

    paths = sorted(local.rglob("*")) if local.is_dir() else []  # the tree listed once
    if local.is_symlink() or any(p.is_symlink() for p in paths):
        raise SignatureProblem("unsupported", "the model holds a symbolic link, which a model_signing signature "
                                              "does not cover by default")
    if not local.is_dir():
        return {".": digest(local)}
    found = {}
    for path in paths:
        name = path.relative_to(local).as_posix()
        if path.is_file() and not is_ignored(name, ignore_paths):
            found[name] = digest(path)
    return found


def _refused(where: str, signature: str, problem: SignatureProblem, envelope: Envelope | None,
             trusted: TrustedKeys) -> SignatureReport:
    signer, subject = claimed_signer(envelope) if envelope is not None else (None, None)
    signer = problem.fingerprint or signer
    who = f" by key {signer}" if signer else ""
    if problem.kind == "untrusted":
        known = trusted.fingerprints()
        listed = f"; the trusted keys here are {', '.join(f[:16] + '…' for f in known)}" if known else ""
        why = (f"{signature!r} was signed{who}{f' (certificate {subject})' if subject else ''}, but {problem.detail}"
               f"{listed}. Anyone can sign an artifact: only a signer you trust tells you where the model came from")
    else:
        why = (f"{signature!r}{who} cannot be accepted as the signature of {where!r}: {problem.detail}. A signature "
               "that cannot be checked proves nothing about who wrote the artifact")
    error = _CLASSES[problem.kind](f"{why}. {_FIXES[problem.kind]}.", path=where, signature=signature,
                                   fingerprint=signer, reason=problem.kind)
    return SignatureReport(path=where, signature=signature, signed=True, signer=signer, certificate=subject,
                           mode=envelope.mode if envelope is not None else None, provenance=_claimed(envelope),
                           problem=f"{problem.kind}: {problem.detail}", error=error)


def _claimed(envelope: Envelope | None) -> dict[str, Any] | None:
    """The provenance a signature that did not verify claims (shown marked unverified)."""
    try:
        statement = envelope.statement() if envelope is not None else None
    except SignatureProblem:
        return None
    predicate = statement.get("predicate") if isinstance(statement, dict) else None
    value = predicate.get(PROVENANCE_KEY) if isinstance(predicate, dict) else None
    return value if isinstance(value, dict) else None


def _mismatch(where: str, signature: str, verified: Verified, diff: ResourceDiff,
              manifest: Manifest) -> SignatureMismatchError:
    manifest_changed = any(name == MANIFEST_NAME for name, _, _ in diff.changed)
    what = ("the manifest (modelsafe.json) is not the one that was signed" if manifest_changed
            else "the artifact's files are not the ones that were signed")
    provenance = verified.statement["predicate"].get(PROVENANCE_KEY)
    signed_created = provenance.get("artifact", {}).get("created") if isinstance(provenance, dict) else None
    when = (f" The signature was made for the artifact saved at {signed_created}; this one was saved at "
            f"{manifest.created}." if signed_created and signed_created != manifest.created else "")
    return SignatureMismatchError(
        f"{signature!r} is a valid signature by trusted key {verified.fingerprint} ({verified.trusted_by}), but it "
        f"does not match {where!r}: {what}: {diff.describe()}.{when} The artifact was changed after it was signed "
        "(an edited manifest, an added or removed file, or the signature of another artifact or of an earlier save "
        "put beside this one), so the signature says nothing about it. Fetch the artifact and its signature again "
        "from the publisher; if you re-saved it yourself, sign it again.",
        path=where, signature=signature, fingerprint=verified.fingerprint,
        reason="manifest changed" if manifest_changed else "files changed",
        missing=list(diff.missing), added=list(diff.added), changed=[list(c) for c in diff.changed],
        unlisted=list(diff.unlisted))
