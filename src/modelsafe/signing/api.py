"""``ms.sign`` and ``ms.verify_signature``: OMS signatures of artifacts, from the manifest's digests."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Iterable, Mapping

from modelsafe._keywords import checked
from modelsafe.artifact.location import local_or_url, resolve
from modelsafe.artifact.manifest import MANIFEST_NAME, Manifest
from modelsafe.artifact.reader import open_artifact, read_manifest
from modelsafe.errors import FlavorNotInstalledError, SigningError
from modelsafe.signing.location import (
    read_signature,
    signature_path,
    trusted_sources,
    write_signature,
)
from modelsafe.signing.provenance import statement_provenance
from modelsafe.signing.report import SignatureReport, unchecked_report, unsigned_report
from modelsafe.signing.statement import DEFAULT_IGNORE_PATHS, is_ignored, statement_for

__all__ = ["sign", "verify_signature", "inspect_signature", "require_cryptography"]

PathLike = str | os.PathLike[str]
EXTRA_HINT = "pip install 'modelsafe[signing]'"


def require_cryptography() -> None:
    """Raise FlavorNotInstalledError naming the extra when ``cryptography`` is missing."""
    try:
        import cryptography  # noqa: F401
    except ImportError:
        raise FlavorNotInstalledError(
            "Signatures are made and checked with the package 'cryptography', which is not installed here. "
            f"Nothing was signed or loaded. Install it: {EXTRA_HINT}.", flavor="signing", hint=EXTRA_HINT) from None


@checked("sign")
def sign(path: PathLike, *, key: Any, password: str | bytes | None = None, certificate_chain: Iterable[Any] = (),
         provenance: Mapping[str, Any] | None = None,
         storage_options: Mapping[str, Any] | None = None) -> SignatureReport:
    """Sign the artifact at ``path`` in the OpenSSF Model Signing format, writing ``path + ".sig"``.

    The signature lists every member with the SHA-256 its manifest records, plus
    ``modelsafe.json``: nothing is re-hashed, so a 10 GB artifact signs in milliseconds. A
    ``model_signing verify`` of the folder form (or of the single file unzipped to a folder)
    accepts it. An older signature at ``path + ".sig"`` is replaced.

    Parameters
    ----------
    path
        A ``.msafe`` file, an artifact folder, or an fsspec URL of one.
    key
        The ECDSA private key (P-256, P-384 or P-521): a PEM file path, PEM bytes, or a
        ``cryptography`` key object. It is used in memory only; it never enters the artifact,
        the signature or a message.
    password
        The key's password, when its PEM is encrypted.
    certificate_chain
        Certificate mode: the key's certificate first, then its intermediates (PEM files,
        PEM bytes or certificate objects). Without it, key mode (``model_signing sign key``).
    provenance
        What produced the model, signed into the statement (see
        :mod:`modelsafe.signing.provenance`): ``{"git": True, "datasets": [...], ...}``.
    storage_options
        For a URL: options of the store's fsspec filesystem.

    Returns
    -------
    SignatureReport
        The signer's fingerprint, the signed provenance and the number of files covered.

    Examples
    --------
    >>> import tempfile, modelsafe as ms
    >>> from modelsafe.signing import keygen
    >>> private, public, fingerprint = keygen(tempfile.mkdtemp())
    >>> report = ms.sign("/tmp/doc-model.msafe", key=private, provenance={"team": "risk"})
    >>> report.signer == fingerprint, report.signature
    (True, '/tmp/doc-model.msafe.sig')
    """
    require_cryptography()
    from modelsafe.signing.bundle import sign_statement
    from modelsafe.signing.keys import fingerprint, load_certificates, load_private_key

    artifact = resolve(path, storage_options)
    private = load_private_key(key, password)
    chain = load_certificates(certificate_chain)
    with open_artifact(artifact) as reader:
        raw = reader.read(MANIFEST_NAME)
        manifest = Manifest.from_json(raw, where=f"{local_or_url(artifact)}/{MANIFEST_NAME}")
        names = reader.names()
    _refuse_unlisted(artifact, manifest, names)
    resources = [(name, record.sha256) for name, record in manifest.members.items()]
    resources.append((MANIFEST_NAME, hashlib.sha256(raw).hexdigest()))
    record = statement_provenance(manifest, provenance, error=SigningError)
    try:
        statement = statement_for(resources, model_name=artifact.name, provenance=record)
        bundle = sign_statement(statement, private, chain)
    except ValueError as exc:
        raise SigningError(f"Cannot sign {local_or_url(artifact)!r}: {exc}. Check the certificates given with the "
                           "key (the key's own certificate first).", reason="certificate", path=None) from None
    target = signature_path(artifact)
    write_signature(target, json.dumps(bundle, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    subject = chain[0].subject.rfc4514_string() if chain else None
    return SignatureReport(path=local_or_url(artifact), signature=local_or_url(target), signed=True, verified=True,
                           signer=fingerprint(private.public_key()), trusted_by="the signing key",
                           mode="certificate" if chain else "key", certificate=subject, provenance=record,
                           files=len(resources))


def _refuse_unlisted(artifact: Any, manifest: Manifest, names: Iterable[str]) -> None:
    unlisted = sorted(name for name in names if name != MANIFEST_NAME and name not in manifest.members
                      and not is_ignored(name, DEFAULT_IGNORE_PATHS))
    if unlisted:
        shown = ", ".join(unlisted[:10]) + (f" and {len(unlisted) - 10} more" if len(unlisted) > 10 else "")
        raise SigningError(
            f"Cannot sign {local_or_url(artifact)!r}: it holds files its manifest does not list ({shown}). They are "
            "not part of the model, nothing checks them, and a model_signing verifier of the folder would refuse "
            "them. Remove them (or save the model again), then sign.", reason="unlisted files", path=None,
            unlisted=unlisted)


@checked("verify_signature")
def verify_signature(path: PathLike, *, trusted_keys: Any,
                     storage_options: Mapping[str, Any] | None = None) -> SignatureReport:
    """Check the signature beside the artifact (``path + ".sig"``) against ``trusted_keys``.

    Reads the manifest and the artifact's file list only, re-hashing nothing: the report
    says whether a trusted key signed exactly this manifest and these files. ``load``
    checks each member's bytes against the manifest when it reads them.

    Parameters
    ----------
    path
        A ``.msafe`` file, an artifact folder, or an fsspec URL of one.
    trusted_keys
        Public keys (PEM files, folders of them, PEM bytes or key objects) and, for certificate
        mode, root certificates. Empty: the paths in ``MODELSAFE_TRUSTED_KEYS``.
    storage_options
        For a URL: options of the store's fsspec filesystem.

    Returns
    -------
    SignatureReport
        ``ok`` when a trusted signer signed exactly this artifact; ``raise_if_failed()`` raises
        the SignatureError subclass that says what failed.

    Examples
    --------
    >>> import tempfile, modelsafe as ms
    >>> from modelsafe.signing import keygen
    >>> private, public, fingerprint = keygen(tempfile.mkdtemp())
    >>> _ = ms.sign("/tmp/doc-model.msafe", key=private)
    >>> ms.verify_signature("/tmp/doc-model.msafe", trusted_keys=[public]).ok
    True
    """
    artifact = resolve(path, storage_options)
    with open_artifact(artifact) as reader:
        manifest = read_manifest(reader)
        raw = read_signature(signature_path(artifact))
        if raw is None:
            return unsigned_report(artifact)
        require_cryptography()
        return _check(artifact, reader, manifest, raw, trusted_keys)


def inspect_signature(artifact: Any, reader: Any, manifest: Manifest, trusted_keys: Any = None) -> SignatureReport:
    """The signature of the open artifact as ``ms.inspect`` reports it (``manifest.signature``).

    As :func:`verify_signature`, but a report in every case: no signature, an untrusted signer
    or an altered signature is what the report says, never an exception (``load(signature=
    "require")`` is what refuses). Without ``cryptography`` a signature that is there is reported
    unchecked, and nothing is imported for an unsigned artifact. ``trusted_keys`` empty or None:
    the paths in ``MODELSAFE_TRUSTED_KEYS``; keys that cannot be read still raise.
    """
    raw = read_signature(signature_path(artifact))
    if raw is None:
        return unsigned_report(artifact)
    try:
        require_cryptography()
    except FlavorNotInstalledError as missing:
        return unchecked_report(artifact, missing)
    return _check(artifact, reader, manifest, raw, trusted_keys)


def _check(artifact: Any, reader: Any, manifest: Manifest, raw: bytes, trusted_keys: Any) -> SignatureReport:
    from modelsafe.signing.check import check_signature
    from modelsafe.signing.keys import load_trusted

    return check_signature(artifact, reader, manifest, raw, load_trusted(trusted_sources(trusted_keys)))
