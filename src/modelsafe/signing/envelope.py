"""The Sigstore bundle around the statement: its JSON layout, read without any cryptography.

An OMS signature file is a Sigstore bundle v0.3 (as ``model_signing`` writes it)::

    {"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
     "verificationMaterial": {"publicKey": {"hint": "<sha256 of the signer's PEM public key>"},
                              "tlogEntries": []},          # key mode, or
                             {"x509CertificateChain": {"certificates": [{"rawBytes": "<DER, base64>"}, ...]},
                              "tlogEntries": []},          # certificate mode
     "dsseEnvelope": {"payload": "<base64 statement JSON>", "payloadType": "application/vnd.in-toto+json",
                      "signatures": [{"sig": "<base64 DER ECDSA over the DSSE PAE>", "keyid": ""}]}}

``model_signing`` refuses any field it does not know anywhere in the bundle, so nothing is
added here: modelsafe's provenance lives inside the signed statement. This module parses
and checks the layout; :mod:`.bundle` signs and verifies (with ``cryptography``).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any, Mapping

from modelsafe.signing.location import MAX_BUNDLE_BYTES
from modelsafe.signing.statement import SignatureProblem

__all__ = ["BUNDLE_MEDIA_TYPE", "PAYLOAD_TYPE", "MAX_BUNDLE_BYTES", "Envelope", "parse_bundle", "pae", "b64"]

#: The only media type model_signing's verifier accepts (the ``+json;version=0.3`` spelling is refused).
BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
#: The verification materials, by the mode name modelsafe reports.
_MODES = {"publicKey": "key", "x509CertificateChain": "certificate", "certificate": "sigstore"}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: Any, field: str) -> bytes:
    if not isinstance(value, str):
        raise SignatureProblem("malformed", f"its {field} is not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureProblem("malformed", f"its {field} is not valid base64") from None


def pae(payload: bytes, payload_type: str = PAYLOAD_TYPE) -> bytes:
    """DSSE v1 pre-authentication encoding: the bytes the signature covers."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d " % (len(kind), kind, len(payload)) + payload


@dataclass(frozen=True)
class Envelope:
    """A parsed bundle: the signed payload and signature, and who the bundle says signed it.

    Nothing here is verified: ``hint`` and ``certificates`` are what the file claims.
    """

    bundle: Mapping[str, Any]
    payload: bytes
    signature: bytes
    #: "key", "certificate" or "sigstore" (keyless: a single Fulcio certificate plus log entries).
    mode: str
    #: Key mode: the signer's key fingerprint as the bundle states it (may be absent).
    hint: str | None
    #: Certificate mode: DER certificates, signing certificate first.
    certificates: tuple[bytes, ...]

    def statement(self) -> Any:
        """The payload as JSON (unverified until :func:`modelsafe.signing.bundle.verify_bundle` says so)."""
        try:
            return json.loads(self.payload.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise SignatureProblem("malformed", "its signed payload is not JSON") from None


def parse_bundle(raw: bytes) -> Envelope:
    """Parse a signature file as model_signing reads it; SignatureProblem("malformed") otherwise."""
    if len(raw) > MAX_BUNDLE_BYTES:
        raise SignatureProblem("malformed", f"it is {len(raw)} bytes, more than the {MAX_BUNDLE_BYTES} a signature "
                                            "file may have")
    try:
        bundle = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise SignatureProblem("malformed", "it is not JSON") from None
    if not isinstance(bundle, dict):
        raise SignatureProblem("malformed", "it is not a JSON object")
    if bundle.get("mediaType") != BUNDLE_MEDIA_TYPE:
        raise SignatureProblem("malformed", f"its mediaType is {bundle.get('mediaType')!r}, not {BUNDLE_MEDIA_TYPE!r}")
    envelope = bundle.get("dsseEnvelope")
    if not isinstance(envelope, dict):
        raise SignatureProblem("malformed", "it has no dsseEnvelope (a message signature is not a model signature)")
    if envelope.get("payloadType") != PAYLOAD_TYPE:
        raise SignatureProblem("malformed", f"its payloadType is {envelope.get('payloadType')!r}, not {PAYLOAD_TYPE!r}")
    signatures = envelope.get("signatures")
    if not isinstance(signatures, list) or len(signatures) != 1 or not isinstance(signatures[0], dict):
        raise SignatureProblem("malformed", "it must hold exactly one DSSE signature")
    material = bundle.get("verificationMaterial")
    if not isinstance(material, dict):
        raise SignatureProblem("malformed", "it has no verificationMaterial")
    kinds = [kind for kind in _MODES if material.get(kind) is not None]
    if len(kinds) != 1:
        raise SignatureProblem("malformed", "its verificationMaterial must hold exactly one of publicKey, "
                                            "x509CertificateChain or certificate")
    hint: str | None = None
    certificates: tuple[bytes, ...] = ()
    if kinds[0] == "publicKey":
        if not isinstance(material["publicKey"], dict):
            raise SignatureProblem("malformed", "its publicKey is not an object")
        hint = material["publicKey"].get("hint")
        if hint is not None and not isinstance(hint, str):
            raise SignatureProblem("malformed", "its publicKey.hint is not a string")
    elif kinds[0] == "x509CertificateChain":
        chain = material["x509CertificateChain"]
        entries = chain.get("certificates") if isinstance(chain, dict) else None
        if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
            raise SignatureProblem("malformed", "its x509CertificateChain holds no certificates")
        certificates = tuple(_unb64(e.get("rawBytes"), f"certificate #{i}") for i, e in enumerate(entries))
    return Envelope(bundle=bundle, payload=_unb64(envelope.get("payload"), "payload"),
                    signature=_unb64(signatures[0].get("sig"), "signature"), mode=_MODES[kinds[0]],
                    hint=hint.lower() if hint else None, certificates=certificates)
