"""Sign a statement into an OMS bundle, and verify one, with ``cryptography``.

The signature is ECDSA (hash by curve) over the DSSE pre-authentication encoding of the
statement's bytes. Verification dispatches on the bundle's verification material:

* ``"key"``: the bundle's unauthenticated ``hint`` picks the trusted key to try (every
  trusted key, when the bundle has no hint);
* ``"certificate"``: the chain must lead to a trusted root (:mod:`.certificates`), and the
  signing certificate's key is used;
* ``"sigstore"`` (keyless: a short-lived Fulcio certificate plus transparency-log entries)
  needs the public Sigstore services, which modelsafe does not contact: it is refused as
  unsupported. A verifier for it would be one more entry in :data:`_VERIFIERS`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from cryptography import exceptions as crypto_exceptions
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from modelsafe.signing.envelope import (
    BUNDLE_MEDIA_TYPE,
    PAYLOAD_TYPE,
    Envelope,
    b64,
    pae,
)
from modelsafe.signing.keys import TrustedKeys, fingerprint, hash_for
from modelsafe.signing.statement import SignatureProblem, validate_statement

if TYPE_CHECKING:  # X.509 (and the chain checks) are imported in certificate mode only
    from cryptography import x509

__all__ = ["Verified", "sign_statement", "verify_bundle", "claimed_signer"]


@dataclass(frozen=True)
class Verified:
    """A bundle whose signature verified: its statement, and who signed it."""

    statement: dict[str, Any]
    fingerprint: str
    #: The trusted key (its file) or root certificate that vouches for the signer.
    trusted_by: str
    mode: str
    #: The signing certificate's subject, in certificate mode.
    certificate: str | None = None


def sign_statement(statement: Mapping[str, Any], key: ec.EllipticCurvePrivateKey,
                   chain: Sequence[x509.Certificate] = ()) -> dict[str, Any]:
    """The bundle of ``statement`` signed by ``key``: key mode, or certificate mode when ``chain``
    (the signing certificate first, then its intermediates) is given. Raises ValueError for a
    certificate that does not belong to ``key`` or does not allow signing."""
    public = key.public_key()
    algorithm = hash_for(public)
    assert algorithm is not None, "load_private_key refuses keys OMS cannot use"
    validate_statement(statement)
    if chain:
        from modelsafe.signing.certificates import can_sign

        if fingerprint(chain[0].public_key()) != fingerprint(public):
            raise ValueError("the first certificate of the chain is not the certificate of the signing key")
        if not can_sign(chain[0]):
            raise ValueError("the signing certificate does not allow signing (no KeyUsage digitalSignature nor "
                             "ExtendedKeyUsage codeSigning), so every verifier would refuse the signature")
        material: dict[str, Any] = {"x509CertificateChain": {"certificates": [
            {"rawBytes": b64(cert.public_bytes(serialization.Encoding.DER))} for cert in chain]}, "tlogEntries": []}
    else:
        material = {"publicKey": {"hint": fingerprint(public)}, "tlogEntries": []}
    payload = json.dumps(statement, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    signature = key.sign(pae(payload), ec.ECDSA(algorithm))
    return {"mediaType": BUNDLE_MEDIA_TYPE, "verificationMaterial": material,
            "dsseEnvelope": {"payload": b64(payload), "payloadType": PAYLOAD_TYPE,
                             "signatures": [{"sig": b64(signature), "keyid": ""}]}}


def _verifies(key: Any, envelope: Envelope) -> bool:
    algorithm = hash_for(key)
    if algorithm is None:
        return False
    try:
        key.verify(envelope.signature, pae(envelope.payload), ec.ECDSA(algorithm))
    except crypto_exceptions.InvalidSignature:
        return False
    return True


def _key_mode(envelope: Envelope, trusted: TrustedKeys) -> Verified:
    if not trusted.keys:
        raise SignatureProblem("untrusted", "no trusted public key was given", envelope.hint)
    candidates = [(key, label) for key, label in trusted.keys if envelope.hint in (None, fingerprint(key))]
    if not candidates:
        raise SignatureProblem("untrusted", "its signer's key is not among the trusted keys", envelope.hint)
    for key, label in candidates:
        if _verifies(key, envelope):
            return Verified(_statement(envelope), fingerprint(key), label, "key")
    raise SignatureProblem("invalid", f"its signature does not verify with the trusted key {candidates[0][1]!r}",
                           envelope.hint or fingerprint(candidates[0][0]))


def _certificate_mode(envelope: Envelope, trusted: TrustedKeys) -> Verified:
    from cryptography import x509

    from modelsafe.signing.certificates import verify_chain

    try:
        chain = [x509.load_der_x509_certificate(der) for der in envelope.certificates]
    except ValueError:
        raise SignatureProblem("malformed", "its certificate chain holds something that is not DER X.509") from None
    signer = fingerprint(chain[0].public_key())
    try:
        root = verify_chain(chain, trusted.certificates)
    except SignatureProblem as problem:
        raise SignatureProblem(problem.kind, problem.detail, signer) from None
    if not _verifies(chain[0].public_key(), envelope):
        raise SignatureProblem("invalid", "its signature does not verify with its signing certificate", signer)
    return Verified(_statement(envelope), signer, root, "certificate", chain[0].subject.rfc4514_string())


def _sigstore_mode(envelope: Envelope, trusted: TrustedKeys) -> Verified:
    raise SignatureProblem(
        "unsupported", "it is a Sigstore keyless signature, whose check needs the public Sigstore services "
                       "(Fulcio, Rekor), which modelsafe does not contact. Check it with `model_signing verify "
                       "sigstore`, or have the model signed with a key or a certificate chain")


_VERIFIERS: dict[str, Callable[[Envelope, TrustedKeys], Verified]] = {
    "key": _key_mode, "certificate": _certificate_mode, "sigstore": _sigstore_mode}


def _statement(envelope: Envelope) -> dict[str, Any]:
    return validate_statement(envelope.statement())


def verify_bundle(envelope: Envelope, trusted: TrustedKeys) -> Verified:
    """Verify the signature of ``envelope`` against ``trusted``; raises SignatureProblem."""
    return _VERIFIERS[envelope.mode](envelope, trusted)


def claimed_signer(envelope: Envelope) -> tuple[str | None, str | None]:
    """``(fingerprint, certificate subject)`` the bundle claims, unverified (for ``inspect``)."""
    if envelope.mode == "certificate":
        from cryptography import x509

        try:
            leaf = x509.load_der_x509_certificate(envelope.certificates[0])
        except ValueError:
            return None, None
        return fingerprint(leaf.public_key()), leaf.subject.rfc4514_string()
    return envelope.hint, None
