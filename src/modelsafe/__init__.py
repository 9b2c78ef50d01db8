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

from modelsafe._version import __version__
from modelsafe.errors import (
    ArchitectureMismatchError,
    ArtifactError,
    ArtifactReadError,
    ArtifactWriteError,
    BatchError,
    EnvironmentBuildError,
    EnvironmentMismatchError,
    FlavorError,
    FlavorNotInstalledError,
    FormatError,
    IntegrityError,
    InvalidSignatureError,
    IsolatedWorkerError,
    MissingMethodError,
    ModelsafeError,
    NoPortableMemberError,
    SaveError,
    SchemaError,
    SecurityError,
    SignatureError,
    SignatureMismatchError,
    SigningError,
    UnknownKeywordError,
    UnsafeArchiveError,
    UnsavableObjectError,
    UnsignedArtifactError,
    UnsupportedModelError,
    UntrustedContentError,
    UntrustedSignerError,
    VerificationError,
)
from modelsafe.flavors.torch import hook as _torch_hook

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
    "export",
    "Checkpointer",
    "sign",
    "verify_signature",
    "predict_file",
    "recreate_env",
    # results
    "Bundle",
    "Manifest",
    "VerifyReport",
    "EnvReport",
    "ScanReport",
    "DoctorReport",
    "SignatureReport",
    "BatchReport",
    # errors
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

#: Public name -> "module:attribute", imported on first access.
_LAZY = {
    "save": "modelsafe._api:save",
    "load": "modelsafe._api:load",
    "inspect": "modelsafe._api:inspect",
    "verify": "modelsafe._api:verify",
    "check_env": "modelsafe._api:check_env",
    "Bundle": "modelsafe._api:Bundle",
    "Manifest": "modelsafe.artifact.manifest:Manifest",
    "VerifyReport": "modelsafe.checks.verify:VerifyReport",
    "EnvReport": "modelsafe.checks.environment:EnvReport",
    "scan": "modelsafe.security.scanner:scan",
    "ScanReport": "modelsafe.security.scanner:ScanReport",
    "doctor": "modelsafe._doctor:doctor",
    "DoctorReport": "modelsafe.diagnosis.report:DoctorReport",
    "convert": "modelsafe._convert:convert",
    "export": "modelsafe._export:export",
    "Checkpointer": "modelsafe.checkpoints.checkpointer:Checkpointer",
    "sign": "modelsafe.signing.api:sign",
    "verify_signature": "modelsafe.signing.api:verify_signature",
    "SignatureReport": "modelsafe.signing.report:SignatureReport",
    "predict_file": "modelsafe.batch.files:predict_file",
    "BatchReport": "modelsafe.batch.report:BatchReport",
    "recreate_env": "modelsafe.envs.recreate:recreate_env",
}

if TYPE_CHECKING:
    from modelsafe._api import Bundle, check_env, inspect, load, save, verify
    from modelsafe.artifact.manifest import Manifest
    from modelsafe.checks.environment import EnvReport
    from modelsafe.checks.verify import VerifyReport
    from modelsafe.signing.api import sign, verify_signature
    from modelsafe.signing.report import SignatureReport


_torch_hook.arm()  # record nn.Module constructor arguments once torch is imported (imports no framework)


def __getattr__(name: str) -> Any:
    if name in _LAZY_MODULES:  # a capability's subpackage (ms.serving), imported on first access
        return importlib.import_module(f"modelsafe.{name}")
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'modelsafe' has no attribute {name!r}")
    module_name, attr = target.split(":")
    value = getattr(importlib.import_module(module_name), attr)
    globals()[name] = value
    return value


#: Subpackages reached as attributes (``ms.serving.create_app``), imported on first access.
_LAZY_MODULES = ("serving", "dask", "spark", "mlflow")
#: Public modules, listed by dir() beside __all__.
_PUBLIC_MODULES = ("errors", *_LAZY_MODULES)


def __dir__() -> list[str]:
    return sorted({*__all__, *_PUBLIC_MODULES})
