"""modelsafe: save any machine-learning model so that it loads, and predicts the same,
anywhere, safely, and explain exactly why when it can't.

>>> import modelsafe as ms
>>> ms.save(model, "model.msafe", sample=X[:32])          # doctest: +SKIP
>>> bundle = ms.load("model.msafe")                        # doctest: +SKIP
>>> bundle.predict(X_new)                                  # doctest: +SKIP

Importing this package is cheap: it imports no framework and not even numpy. The verbs
load their implementation on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from modelsafe import _torch_hook
from modelsafe.errors import (
    ArchitectureMismatchError,
    ArtifactError,
    EnvironmentMismatchError,
    FlavorError,
    FlavorNotInstalledError,
    FormatError,
    IntegrityError,
    ModelsafeError,
    SaveError,
    SchemaError,
    SecurityError,
    UnsafeArchiveError,
    UnsavableObjectError,
    UnsupportedModelError,
    UntrustedContentError,
    VerificationError,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    # verbs
    "save",
    "load",
    "inspect",
    "verify",
    "check_env",
    "scan",
    "doctor",
    "convert",
    "Checkpointer",
    # results
    "Bundle",
    "Manifest",
    "VerifyReport",
    "EnvReport",
    "ScanReport",
    "DoctorReport",
    # errors
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

#: Public name -> "module:attribute", imported on first access.
_LAZY = {
    "save": "modelsafe._api:save",
    "load": "modelsafe._api:load",
    "inspect": "modelsafe._api:inspect",
    "verify": "modelsafe._api:verify",
    "check_env": "modelsafe._api:check_env",
    "Bundle": "modelsafe._api:Bundle",
    "Manifest": "modelsafe._manifest:Manifest",
    "VerifyReport": "modelsafe._verify:VerifyReport",
    "EnvReport": "modelsafe._environment:EnvReport",
    "scan": "modelsafe.security.scanner:scan",
    "ScanReport": "modelsafe.security.scanner:ScanReport",
    "doctor": "modelsafe._doctor:doctor",
    "DoctorReport": "modelsafe._doctor:DoctorReport",
    "convert": "modelsafe._convert:convert",
    "Checkpointer": "modelsafe.checkpoints:Checkpointer",
}

if TYPE_CHECKING:
    from modelsafe._api import Bundle, check_env, inspect, load, save, verify
    from modelsafe._environment import EnvReport
    from modelsafe._manifest import Manifest
    from modelsafe._verify import VerifyReport


_torch_hook.arm()  # record nn.Module constructor arguments once torch is imported (imports no framework)


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'modelsafe' has no attribute {name!r}")
    module_name, attr = target.split(":")
    value = getattr(importlib.import_module(module_name), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
