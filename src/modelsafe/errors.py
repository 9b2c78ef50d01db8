"""The exceptions modelsafe raises.

Every error message has three parts: what happened (with the values involved),
why it matters, and how to fix it. Errors also carry their facts as attributes,
so callers never need to parse message text.

The hierarchy::

    ModelsafeError
    ├─ ArtifactError(ValueError)
    │  ├─ FormatError
    │  ├─ IntegrityError
    │  └─ ArtifactReadError(OSError)
    ├─ SecurityError
    │  ├─ UntrustedContentError
    │  ├─ UnsafeArchiveError
    │  └─ SignatureError
    │     ├─ UnsignedArtifactError
    │     ├─ UntrustedSignerError
    │     ├─ InvalidSignatureError
    │     └─ SignatureMismatchError
    ├─ EnvironmentMismatchError
    ├─ EnvironmentBuildError
    ├─ IsolatedWorkerError
    ├─ VerificationError
    ├─ SchemaError(ValueError)
    ├─ BatchError
    ├─ SaveError
    │  ├─ UnsavableObjectError
    │  └─ ArtifactWriteError(OSError)
    ├─ SigningError(ValueError)
    ├─ ArchitectureMismatchError
    ├─ FlavorError
    │  ├─ FlavorNotInstalledError(ImportError)
    │  ├─ UnsupportedModelError(TypeError)
    │  ├─ MissingMethodError(AttributeError)
    │  └─ NoPortableMemberError
    └─ UnknownKeywordError(TypeError)

The two I/O errors keep :class:`OSError` among their bases (with ``errno``, ``strerror``
and ``filename`` set), so ``except OSError`` still catches them.
"""

from __future__ import annotations

from typing import Any, Sequence

__all__ = [
    "ModelsafeError",
    "ArtifactError",
    "FormatError",
    "IntegrityError",
    "ArtifactReadError",
    "SecurityError",
    "UntrustedContentError",
    "UnsafeArchiveError",
    "SignatureError",
    "UnsignedArtifactError",
    "UntrustedSignerError",
    "InvalidSignatureError",
    "SignatureMismatchError",
    "SigningError",
    "EnvironmentMismatchError",
    "EnvironmentBuildError",
    "IsolatedWorkerError",
    "VerificationError",
    "SchemaError",
    "BatchError",
    "SaveError",
    "UnsavableObjectError",
    "ArtifactWriteError",
    "ArchitectureMismatchError",
    "FlavorError",
    "FlavorNotInstalledError",
    "UnsupportedModelError",
    "MissingMethodError",
    "NoPortableMemberError",
    "UnknownKeywordError",
]


class ModelsafeError(Exception):
    """Base class of every error modelsafe raises on purpose."""

    def __init__(self, message: str, **facts: Any) -> None:
        super().__init__(message)
        self.message = message
        for key, value in facts.items():
            setattr(self, key, value)

    def __str__(self) -> str:
        return self.message


class ArtifactError(ModelsafeError, ValueError):
    """The path is not a readable modelsafe artifact."""


class FormatError(ArtifactError):
    """Raised when the artifact's structure or manifest is not what this version reads.

    For example: not a zip nor a directory, no ``modelsafe.json``, malformed JSON,
    a format version newer than this modelsafe, or an unknown flavor name.
    """


class IntegrityError(ArtifactError):
    """Raised when a member is missing, or its size or SHA-256 differs from the manifest.

    Attributes: ``member``, ``expected``, ``actual``.
    """


class ArtifactReadError(ArtifactError, OSError):
    """Raised when the operating system refuses to read the artifact or one of its members
    (permission denied, an I/O error of the disk).

    Attributes: ``path``, ``member`` (None for the file itself), ``errno``, ``strerror``, ``filename``.
    """


class SecurityError(ModelsafeError):
    """The artifact or model file contains something that could run code."""


class UntrustedContentError(SecurityError):
    """Raised when loading would import or call something not on the allowlist.

    Attributes: ``globals`` (the exact ``module.name`` strings refused) and
    ``modules`` (bundled code modules, when the refusal is about bundled code).
    """


class UnsafeArchiveError(SecurityError):
    """Raised for hostile archives: path traversal, absolute paths, symlinks,
    duplicate members or decompression bombs. Attribute: ``member``."""


class SignatureError(SecurityError):
    """A signature check refused the artifact (``load(signature="require")``, or a signature present
    when trusted keys are set). Nothing from the artifact beyond its manifest has been read.

    Attributes: ``path`` (the artifact), ``signature`` (its ``.sig`` file), ``fingerprint`` (the
    signer's key fingerprint, SHA-256 of its PEM public key, when known) and ``reason``.
    """


class UnsignedArtifactError(SignatureError):
    """Raised under ``signature="require"`` when the artifact has no signature beside it."""


class UntrustedSignerError(SignatureError):
    """Raised when the signer's key (or certificate chain) is not among the trusted keys,
    or when no trusted key was given."""


class InvalidSignatureError(SignatureError):
    """Raised when the signature file cannot be accepted: not an OMS bundle, a signature that
    does not verify (altered signature or statement), or a form modelsafe does not check
    (Sigstore keyless, sharded serialization)."""


class SignatureMismatchError(SignatureError):
    """Raised when a valid signature by a trusted key does not match the artifact: the manifest
    was edited after signing, a member was added or removed, or the signature is another
    artifact's (or an older save's). Attributes also: ``missing``, ``added``, ``changed``
    (``(name, signed sha256, sha256 now)``) and ``unlisted`` (files no manifest lists)."""


class SigningError(ModelsafeError, ValueError):
    """Raised when ``sign`` or ``keygen`` cannot do their work: a key that cannot be read (encrypted
    without its password, a wrong password, not ECDSA P-256/P-384/P-521), a certificate that does
    not fit the key, ``keygen`` finding a key already there, or provenance that cannot be recorded.

    Attributes: ``reason`` and ``path`` (the key or certificate file, when there is one). No key
    material is ever part of the message.
    """


class EnvironmentMismatchError(ModelsafeError):
    """Raised under ``env="strict"`` when a relevant package differs beyond a patch
    release. Attribute: ``report`` (an :class:`modelsafe.EnvReport`)."""


class EnvironmentBuildError(ModelsafeError):
    """Raised when ``recreate_env`` (or ``load(isolate=True)``) cannot build the recorded environment:
    the recorded Python is not on this machine, a recorded version is no longer on the index, it has
    no wheel for this platform, the index cannot be reached, or the installer failed otherwise.

    Attributes: ``reason`` (``"python"``, ``"version-missing"``, ``"no-wheel"``, ``"network"``,
    ``"constraint"``, ``"modelsafe"``, ``"destination"``, ``"installer"``), ``package`` and ``version`` (when one
    distribution is to blame), ``python`` (the recorded minor version), ``installer`` and ``output``
    (the installer's last lines).
    """


class IsolatedWorkerError(ModelsafeError):
    """Raised when the worker process of an isolated bundle (``load(isolate=True)``) died or cannot
    answer: the call did not complete; the next call starts a new worker. Also raised when a value
    cannot cross the process boundary without pickle. Attributes: ``pid``, ``python``, ``returncode``,
    ``operation`` and ``output`` (the worker's last lines on stderr).
    """


class VerificationError(ModelsafeError):
    """Raised when replaying the stored sample gives different outputs.
    Attribute: ``report`` (a :class:`modelsafe.VerifyReport`)."""


class SchemaError(ModelsafeError, ValueError):
    """Raised when input given to ``Bundle.predict`` does not fit the recorded schema.
    Attributes: ``column``, ``expected``, ``actual`` where they apply."""


class BatchError(ModelsafeError):
    """Raised when batch or distributed scoring (``predict_file``, ``modelsafe.dask``,
    ``modelsafe.spark``) cannot go on: the model failed on rows of a chunk (``rows``,
    ``source``), an input or output it cannot read or write (``path``), or an artifact the
    workers cannot read (``artifact``, ``host``)."""


class SaveError(ModelsafeError):
    """Raised when ``save`` cannot produce an artifact that would load elsewhere."""


class UnsavableObjectError(SaveError):
    """Raised when the object graph holds things that cannot be stored.

    Attribute: ``problems``, a list of ``(attribute_path, type_name, reason)``.
    """

    problems: list[tuple[str, str, str]]


class ArtifactWriteError(SaveError, OSError):
    """Raised when the operating system refuses to write the artifact: a read-only folder or
    file system, a full disk, a quota or file-size limit. Nothing is left at the target path.

    Attributes: ``path``, ``errno``, ``strerror``, ``filename``.
    """


class ArchitectureMismatchError(ModelsafeError):
    """Raised when saved weights do not fit the current model class.

    Attributes: ``missing``, ``unexpected`` (key lists) and ``mismatched``
    (``{key: (saved_shape, current_shape)}``).
    """

    missing: Sequence[str]
    unexpected: Sequence[str]
    mismatched: dict[str, tuple[tuple[int, ...], tuple[int, ...]]]


class FlavorError(ModelsafeError):
    """A problem with the framework support for a model."""


class FlavorNotInstalledError(FlavorError, ImportError):
    """Raised when the framework a flavor needs is not installed.
    Attributes: ``flavor``, ``hint`` (the install command)."""


class UnsupportedModelError(FlavorError, TypeError):
    """Raised when no flavor knows how to save the given object. Attribute: ``type_name``."""


class MissingMethodError(FlavorError, AttributeError):
    """Raised by ``bundle.predict_proba`` (``decision_function``, ``transform``) when the model has no such
    method; ``hasattr(bundle, name)`` is then False. Attributes: ``method``, ``type_name``, ``available``."""


class NoPortableMemberError(FlavorError):
    """Raised by ``load(runtime="onnx")`` for an artifact saved without ``portable=``: it has no ONNX
    member to run. Attributes: ``path``, ``flavor`` (the native flavor)."""


class UnknownKeywordError(ModelsafeError, TypeError):
    """Raised when a verb gets a keyword argument it does not know, or one that only another
    flavor reads: a misspelled option would otherwise be ignored, and a misspelled safety
    option would give no safety.

    Attributes: ``verb``, ``keywords`` (the refused names), ``suggestions`` (name -> the close
    accepted name, or None), ``owners`` (name -> the flavor that reads it, for an option of
    another flavor), ``accepted`` (the names the verb takes).
    """
