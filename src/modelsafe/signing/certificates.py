"""Certificate mode: check a bundle's X.509 chain as ``model_signing verify certificate`` does.

model_signing puts the trusted certificates in an OpenSSL store, passes the bundle's
certificates after the first as untrusted intermediates, verifies at the signing
certificate's ``notBefore`` (so a certificate that expired after signing still verifies),
and requires KeyUsage ``digitalSignature`` or ExtendedKeyUsage ``codeSigning`` on the
signing certificate. OpenSSL's defaults mean the path must end at a *self-signed* trusted
certificate. This module does the same with :mod:`cryptography.x509.verification`, with
one deliberate difference: there is no default trust store (model_signing falls back to
certifi's web roots); only the certificates the caller trusts count.
"""

from __future__ import annotations

import datetime
from typing import Any, Sequence

from cryptography import exceptions as crypto_exceptions
from cryptography import x509
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID

from modelsafe.signing.statement import SignatureProblem

__all__ = ["can_sign", "verify_chain"]


def can_sign(certificate: x509.Certificate) -> bool:
    """Whether the certificate allows signing: KeyUsage digitalSignature or EKU codeSigning."""
    extensions = certificate.extensions
    try:
        if extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature:
            return True
    except x509.ExtensionNotFound:
        pass
    try:
        return ExtendedKeyUsageOID.CODE_SIGNING in extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False


def _self_signed(certificate: x509.Certificate) -> bool:
    if certificate.subject != certificate.issuer:
        return False
    try:
        certificate.verify_directly_issued_by(certificate)
    except (ValueError, TypeError, crypto_exceptions.InvalidSignature):
        return False
    return True


def _ca_constraints(_policy: Any, certificate: x509.Certificate, value: x509.BasicConstraints) -> None:
    if not value.ca:
        raise ValueError(f"{certificate.subject.rfc4514_string()} is not a CA")


def _ca_key_usage(_policy: Any, certificate: x509.Certificate, value: x509.KeyUsage | None) -> None:
    if value is not None and not value.key_cert_sign:
        raise ValueError(f"{certificate.subject.rfc4514_string()} may not sign certificates (no keyCertSign)")


def verify_chain(chain: Sequence[x509.Certificate], trusted: Sequence[tuple[x509.Certificate, str]],
                 at: datetime.datetime | None = None) -> str:
    """Check that ``chain[0]`` (the signing certificate) leads to a trusted self-signed root.

    Returns the label of the root that anchors it; raises SignatureProblem("untrusted").
    """
    leaf = chain[0]
    anchors = [(cert, label) for cert, label in trusted if _self_signed(cert)]
    if not anchors:
        raise SignatureProblem("untrusted", "no trusted root certificate (self-signed) was given to check its "
                                            "certificate chain against")
    pool = [*chain[1:], *(cert for cert, _ in trusted if not _self_signed(cert))]
    agnostic = verification.Criticality.AGNOSTIC
    ca_policy = (verification.ExtensionPolicy.permit_all()
                 .require_present(x509.BasicConstraints, agnostic, _ca_constraints)
                 .may_be_present(x509.KeyUsage, agnostic, _ca_key_usage))
    verifier = (verification.PolicyBuilder()
                .store(verification.Store([cert for cert, _ in anchors]))
                .time(at or leaf.not_valid_before_utc)
                .extension_policies(ca_policy=ca_policy, ee_policy=verification.ExtensionPolicy.permit_all())
                .build_client_verifier())
    try:
        path = verifier.verify(leaf, pool)
    except verification.VerificationError as exc:
        raise SignatureProblem("untrusted", f"its certificate chain ({leaf.subject.rfc4514_string()}) does not lead "
                                            f"to a trusted root: {exc}") from None
    if not can_sign(leaf):
        raise SignatureProblem("untrusted", f"its signing certificate ({leaf.subject.rfc4514_string()}) does not "
                                            "allow signing (no KeyUsage digitalSignature nor EKU codeSigning)")
    root = path.chain[-1]
    return next(label for cert, label in anchors if cert == root)
