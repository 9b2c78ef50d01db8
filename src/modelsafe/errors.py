"""The exceptions modelsafe raises.

Every error message has three parts: what happened (with the values involved),
why it matters, and how to fix it. Errors also carry their facts as attributes,
so callers never need to parse message text.

The hierarchy::

    ModelsafeError
    ├─ ArtifactError(ValueError)
    │  ├─ FormatError
    │  └─ IntegrityError
    ├─ SecurityError
    │  ├─ UntrustedContentError
    │  └─ UnsafeArchiveError
    ├─ EnvironmentMismatchError
    ├─ VerificationError
    ├─ SchemaError(ValueError)
    ├─ SaveError
    │  └─ UnsavableObjectError
    ├─ ArchitectureMismatchError
    └─ FlavorError
       ├─ FlavorNotInstalledError(ImportError)
       └─ UnsupportedModelError(TypeError)
"""

from __future__ import annotations

from typing import Any, Sequence

__all__ = [
    "ModelsafeError",
    "ArtifactError",
    "FormatError",
    "IntegrityError",
    "SecurityError",
    "UntrustedContentError",
    "UnsafeArchiveError",
    "EnvironmentMismatchError",
    "VerificationError",
    "SchemaError",
    "SaveError",
    "UnsavableObjectError",
    "ArchitectureMismatchError",
    "FlavorError",
    "FlavorNotInstalledError",
    "UnsupportedModelError",
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


class EnvironmentMismatchError(ModelsafeError):
    """Raised under ``env="strict"`` when a relevant package differs beyond a patch
    release. Attribute: ``report`` (an :class:`modelsafe.EnvReport`)."""


class VerificationError(ModelsafeError):
    """Raised when replaying the stored sample gives different outputs.
    Attribute: ``report`` (a :class:`modelsafe.VerifyReport`)."""


class SchemaError(ModelsafeError, ValueError):
    """Raised when input given to ``Bundle.predict`` does not fit the recorded schema.
    Attributes: ``column``, ``expected``, ``actual`` where they apply."""


class SaveError(ModelsafeError):
    """Raised when ``save`` cannot produce an artifact that would load elsewhere."""


class UnsavableObjectError(SaveError):
    """Raised when the object graph holds things that cannot be stored.

    Attribute: ``problems``, a list of ``(attribute_path, type_name, reason)``.
    """

    problems: list[tuple[str, str, str]]


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
