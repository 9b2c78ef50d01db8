"""The public verbs. ``save`` and ``load`` are pipelines of named steps in their own
modules (:mod:`modelsafe._save`, :mod:`modelsafe._load`); this module adds the verbs
that read an artifact without loading it, and ``verify``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any, Mapping

from modelsafe._bundle import Bundle
from modelsafe._keywords import checked
from modelsafe._load import load
from modelsafe._save import save
from modelsafe.artifact.location import resolve
from modelsafe.artifact.manifest import Manifest
from modelsafe.artifact.reader import manifest_of, open_artifact, read_manifest

if TYPE_CHECKING:
    from modelsafe.checks.environment import EnvReport
    from modelsafe.checks.verify import VerifyReport

__all__ = ["save", "load", "inspect", "verify", "check_env", "Bundle", "read_manifest"]

PathLike = str | os.PathLike[str]


@checked("inspect")
def inspect(path: PathLike, *, trusted_keys: Any = None,
            storage_options: Mapping[str, Any] | None = None) -> Manifest:
    """Read the manifest, and who signed it: imports no framework and runs nothing from the artifact.

    ``manifest.signature`` is the check of the signature beside the artifact (``P.sig``), a
    :class:`~modelsafe.SignatureReport`: the signer's key fingerprint and whether that key is
    trusted here, or that there is no signature. ``str(manifest)`` ends with it and
    ``manifest.to_dict()["signature"]`` holds it, as ``modelsafe inspect`` prints them. A missing,
    untrusted or altered signature is reported, never raised: ``load(signature="require")`` refuses.

    ``trusted_keys``: the public keys (PEM files, folders of them, PEM bytes or key objects) and
    root certificates trusted here; None or empty: the paths in ``MODELSAFE_TRUSTED_KEYS``.
    Nothing is imported for an unsigned artifact; a signed one is checked with ``cryptography``
    (``modelsafe[signing]``; without it the report says the signature is there, unchecked).

    ``path`` may be an fsspec URL (``s3://bucket/model.msafe``; ``storage_options`` for its
    store): only the zip's end records, the manifest and the signature file are read, with range requests.

    Examples
    --------
    >>> import modelsafe as ms
    >>> ms.inspect("/tmp/doc-model.msafe").components["model"].flavor
    'sklearn'
    """
    from modelsafe.signing.api import inspect_signature  # on use: import modelsafe imports no signing

    artifact = resolve(path, storage_options)
    with open_artifact(artifact) as reader:
        manifest = read_manifest(reader)
        report = inspect_signature(artifact, reader, manifest, trusted_keys)
    return dataclasses.replace(manifest, signature=report)


def verify(path: PathLike, **load_kwargs: Any) -> "VerifyReport":
    """Load ``path`` (integrity, audit, environment) and return the verification report.

    Every member is hashed again, even in an unchanged file the verified-hash cache knows.
    ``path`` may be an fsspec URL (pass ``storage_options=`` for its store, as to :func:`load`).

    Examples
    --------
    >>> import modelsafe as ms
    >>> ms.verify("/tmp/doc-model.msafe").ok
    True
    """
    load_kwargs["verify"] = False
    load_kwargs["hash_cache"] = False
    bundle = load(path, **load_kwargs)
    try:
        return bundle.verify()
    finally:
        bundle.close()


@checked("check_env")
def check_env(path: PathLike, *, storage_options: Mapping[str, Any] | None = None) -> "EnvReport":
    """Compare the environment recorded in ``path`` with this one; imports no framework.

    Like :func:`inspect`, reads only the manifest (range requests for a URL).

    Examples
    --------
    >>> import modelsafe as ms
    >>> ms.check_env("/tmp/doc-model.msafe").ok
    True
    """
    from modelsafe.checks.environment import manifest_environment

    return manifest_environment(manifest_of(path, storage_options).environment, str(path))
