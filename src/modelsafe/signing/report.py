"""``SignatureReport``: who signed an artifact, whether that key is trusted here, and what was signed."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from modelsafe._reports import Report, to_jsonable
from modelsafe.artifact.location import RemotePath, local_or_url
from modelsafe.errors import FlavorNotInstalledError, ModelsafeError, SignatureError, UnsignedArtifactError
from modelsafe.signing.location import signature_path

__all__ = ["SignatureReport", "unchecked_report", "unsigned_report"]


@dataclass(frozen=True)
class SignatureReport(Report):
    """The signature check of one artifact (``ms.sign``, ``ms.verify_signature``, and ``ms.inspect`` as
    ``manifest.signature``, which ``modelsafe inspect`` prints).

    ``ok`` means: a signature is beside the artifact, it verifies with a trusted key (or a
    certificate chain to a trusted root), and it covers exactly the artifact's manifest and
    files. Member *content* is checked against the manifest by ``load`` (integrity), not here:
    nothing is re-hashed.

    Attributes
    ----------
    path, signature
        The artifact and its signature file (``P.sig``).
    signed
        A signature file is there.
    verified
        It verified and matches the artifact (then ``ok``).
    signer
        The signer's key fingerprint (SHA-256 of its PEM public key). Unverified unless ``verified``.
    trusted_by
        The trusted key file (or root certificate) that vouches for the signer.
    mode
        ``"key"``, ``"certificate"`` or ``"sigstore"`` (keyless, not checked by modelsafe).
    certificate
        The signing certificate's subject, in certificate mode.
    provenance
        The signed provenance (``predicate.modelsafe_provenance``); unverified unless ``verified``.
    files
        How many files the signature covers (the members and ``modelsafe.json``).
    problem
        Why it is not ``ok``: empty when it is.
    error
        The error ``raise_if_failed`` raises (not part of ``to_dict``, which names its class): a
        SignatureError, or FlavorNotInstalledError for a signature not checked here for want of
        ``cryptography``.
    """

    path: str
    signature: str
    signed: bool
    verified: bool = False
    signer: str | None = None
    trusted_by: str | None = None
    mode: str | None = None
    certificate: str | None = None
    provenance: Mapping[str, Any] | None = None
    files: int = 0
    problem: str = ""
    error: SignatureError | ModelsafeError | None = field(default=None, compare=False, repr=False)

    @property
    def ok(self) -> bool:
        return self.verified

    def to_dict(self) -> dict[str, Any]:
        data = {name: to_jsonable(getattr(self, name)) for name in (
            "path", "signature", "signed", "verified", "signer", "trusted_by", "mode", "certificate", "provenance",
            "files", "problem")}
        data["error"] = type(self.error).__name__ if self.error is not None else None
        data["ok"] = self.ok
        return data

    def raise_if_failed(self) -> None:
        """Raise the SignatureError subclass that says what failed, unless ``ok``."""
        if self.error is not None:
            raise self.error

    def _lines(self) -> list[str]:
        head, details = self._finding()
        return [f"signature of {self.path}: {head}", *details]

    def section(self, indent: str = "  ") -> str:
        """The report as ``ms.inspect`` (in ``str(manifest)``), ``modelsafe inspect`` and ``modelsafe verify``
        show it: ``signature: <finding>``, then the signer, what is covered and the provenance."""
        head, details = self._finding()
        return "\n".join(indent + line for line in (f"signature: {head}", *details))

    def _finding(self) -> tuple[str, list[str]]:
        """The one-line finding, and the lines under it (indented by two spaces)."""
        if not self.signed:
            return f"none ({self.signature} does not exist)", []
        if isinstance(self.error, FlavorNotInstalledError):
            return f"present, {self.problem}", []
        who = f"key {self.signer}" if self.signer else "an unnamed key"
        if self.certificate:
            who += f" (certificate {self.certificate})"
        if self.verified:
            head = f"valid, signed by {who}, trusted here through {self.trusted_by}"
            details = [f"  covers {self.files} files: every member's SHA-256 from the manifest, and modelsafe.json"]
        else:
            head, details = f"NOT verified: {self.problem}", [f"  signed by {who} (as the signature file claims)"]
        if self.provenance:
            details.append("  provenance" + ("" if self.verified else " (unverified)") + ":")
            details += [f"    {key}: {_short(value)}" for key, value in self.provenance.items()]
        return head, details


def _short(value: Any) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_short(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "[" + "; ".join(_short(v) for v in value) + "]"
    return str(value)


def unsigned_report(artifact: Path | RemotePath) -> SignatureReport:
    """The report of an artifact without a signature file (its error is UnsignedArtifactError)."""
    where, signature = local_or_url(artifact), local_or_url(signature_path(artifact))
    error = UnsignedArtifactError(
        f"{where!r} is not signed: there is no {signature!r} beside it, and signature='require' refuses unsigned "
        "artifacts. The manifest's digests prove the files are the ones it lists; only a signature proves who "
        f"wrote it. Get the signature file from the model's publisher and put it at {signature!r}, or, if you "
        "produced the model, sign it: modelsafe sign ARTIFACT --key private.pem.",
        path=where, signature=signature, fingerprint=None, reason="unsigned")
    return SignatureReport(path=where, signature=signature, signed=False, problem="no signature", error=error)


def unchecked_report(artifact: Path | RemotePath, missing: FlavorNotInstalledError) -> SignatureReport:
    """The report of a signature that is there but cannot be checked here: ``cryptography`` is not
    installed (``missing`` says how to install it, and is what ``raise_if_failed`` raises)."""
    where, signature = local_or_url(artifact), local_or_url(signature_path(artifact))
    hint = getattr(missing, "hint", "") or "pip install 'modelsafe[signing]'"
    return SignatureReport(path=where, signature=signature, signed=True,
                           problem=f"not checked here: the package 'cryptography' is not installed ({hint})",
                           error=missing)
