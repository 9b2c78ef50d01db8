"""The signature step of ``load``: right after the manifest is read, before any member is read.

``load(signature=...)``:

* ``"auto"`` (default): check the signature when trusted keys are set (``trusted_keys=`` or
  ``MODELSAFE_TRUSTED_KEYS``) and a signature is beside the artifact; a signature that fails
  is refused. Without trusted keys nothing is looked at, and ``cryptography`` is not imported.
* ``"require"``: refuse an unsigned artifact, a signer that is not trusted, an altered or
  swapped signature, and a manifest or file list that is not the signed one.
* ``"ignore"``: skip the check.

Every refusal is a :class:`~modelsafe.errors.SignatureError` (a SecurityError) naming what
failed and the signer's key fingerprint.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from modelsafe.artifact.location import RemotePath
from modelsafe.artifact.manifest import Manifest
from modelsafe.signing.location import read_signature, signature_path, trusted_sources

if TYPE_CHECKING:
    from modelsafe.signing.report import SignatureReport

__all__ = ["MODES", "check_before_convert", "check_before_load"]

MODES = ("auto", "require", "ignore")


def check_before_load(artifact: Path | RemotePath, reader: Any, manifest: Manifest,
                      options: Mapping[str, Any]) -> "SignatureReport | None":
    """Apply ``options["signature"]`` / ``options["trusted_keys"]`` to the open artifact; raise
    a SignatureError on refusal. Returns the report of a checked signature, else None."""
    found = _signature_to_check(artifact, options)
    if found is None:
        return None
    from modelsafe.signing.check import check_signature

    report = check_signature(artifact, reader, manifest, found[0], found[1])
    report.raise_if_failed()
    return report


def check_before_convert(source: Path | RemotePath, local: Path,
                         options: Mapping[str, Any]) -> "SignatureReport | None":
    """As :func:`check_before_load`, for a model file or folder to convert (signed with ``model_signing``,
    its signature beside it at ``source + ".sig"``): its files at ``local`` (``source`` or its local copy)
    are hashed and compared with the signed ones before anything reads them."""
    found = _signature_to_check(source, options)
    if found is None:
        return None
    from modelsafe.signing.check import check_files_signature

    report = check_files_signature(source, local, found[0], found[1])
    report.raise_if_failed()
    return report


def _signature_to_check(artifact: Path | RemotePath, options: Mapping[str, Any]) -> "tuple[bytes, Any] | None":
    """The signature file beside ``artifact`` and the trusted keys, when ``options`` ask for a check and there
    is one; None when nothing is to be checked; a SignatureError for an unsigned one under ``"require"``."""
    mode = options.get("signature", "auto")
    if mode not in MODES:
        raise ValueError(f"Invalid `signature`: expected one of {', '.join(map(repr, MODES))}. "
                         f"Received: signature={mode!r}")
    if mode == "ignore":
        return None
    sources = trusted_sources(options.get("trusted_keys"))
    if mode == "auto" and not sources:
        return None
    raw = read_signature(signature_path(artifact))
    if raw is None:
        if mode == "require":
            from modelsafe.signing.report import unsigned_report

            unsigned_report(artifact).raise_if_failed()
        return None
    from modelsafe.signing.api import require_cryptography

    require_cryptography()
    from modelsafe.signing.keys import load_trusted

    return raw, load_trusted(sources)
