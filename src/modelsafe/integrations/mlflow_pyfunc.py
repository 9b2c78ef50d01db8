"""What ``mlflow.pyfunc.load_model`` runs on a modelsafe-backed MLflow model.

The ``MLmodel`` file names :mod:`modelsafe.mlflow` as the ``python_function`` flavor's
``loader_module``; MLflow calls its ``_load_pyfunc(data_path, model_config)``, which is
:func:`load_pyfunc` here: ``ms.load`` of the ``.msafe`` artifact (integrity, audit,
environment check, verification) and a model whose ``predict`` goes through the input guard.

Load options come from the caller, never from the file. The exporter writes every option this
loader reads into the flavor's ``model_config`` (``config:`` in the file) with ``ms.load``'s
defaults (MLflow only lets a caller override keys the file declares); the caller overrides them with
``mlflow.pyfunc.load_model(uri, model_config={"trust_code": True})`` or, for ``mlflow models
serve``, the ``MLFLOW_PYFUNC_INFERENCE_CONFIG`` environment variable (JSON). A file whose
declared values differ from the defaults (``verify: false`` written into a registered model's
``MLmodel``) is refused: the ``MLmodel`` file is outside the artifact's manifest, so its word
cannot loosen a check.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from modelsafe.errors import MissingMethodError, UntrustedContentError

if TYPE_CHECKING:
    from modelsafe._bundle import Bundle

__all__ = ["LOAD_DEFAULTS", "METHODS", "ModelsafePyfunc", "load_pyfunc"]

#: The ``ms.load`` keywords a caller may set through MLflow's ``model_config``, with the defaults
#: every exported ``MLmodel`` declares (lists, not tuples: the file is YAML).
LOAD_DEFAULTS: dict[str, Any] = {"verify": True, "env": "warn", "trust_code": False, "trusted": [],
                                 "device": None, "signature": "auto", "trusted_keys": [], "runtime": "native"}
#: The bundle methods ``params={"method": ...}`` may pick.
METHODS = ("predict", "predict_proba", "decision_function", "transform")
_SEQUENCES = ("trusted", "trusted_keys")


class ModelsafePyfunc:
    """The model ``mlflow.pyfunc.load_model`` wraps: a verified :class:`modelsafe.Bundle`.

    ``predict(model_input, params={"method": "predict_proba"})`` runs one of the bundle's
    methods, so every input goes through the input guard recorded at save (a method the model
    lacks raises the bundle's ``MissingMethodError``).
    """

    def __init__(self, bundle: "Bundle") -> None:
        self.bundle = bundle

    def predict(self, model_input: Any, params: Mapping[str, Any] | None = None) -> Any:
        method = (params or {}).get("method") or "predict"
        if method not in METHODS:
            available = [m for m in METHODS if hasattr(self.bundle, m)]
            raise MissingMethodError(
                f"Invalid `method` param: expected one of {', '.join(available)} (what this model has). Received: "
                f"method={method!r}. Only these methods run through the input guard; nothing was computed. Pass "
                "params={'method': 'predict_proba'} (or another of them).",
                method=method, type_name=self.bundle.manifest.components["model"].type_name, available=available)
        return getattr(self.bundle, method)(model_input)

    def get_raw_model(self) -> Any:
        """The framework's model object (MLflow's ``PyFuncModel.get_raw_model``)."""
        return self.bundle.model


def load_pyfunc(data_path: str, model_config: Mapping[str, Any] | None = None) -> ModelsafePyfunc:
    """Load the artifact at ``data_path`` with every check of ``ms.load``; MLflow's ``_load_pyfunc``."""
    from modelsafe._api import load

    _refuse_loosened_file(Path(data_path))
    return ModelsafePyfunc(load(data_path, **load_options(model_config)))


def load_options(model_config: Mapping[str, Any] | None) -> dict[str, Any]:
    """``ms.load`` keywords from MLflow's merged ``model_config`` (the caller's values over the defaults)."""
    options: dict[str, Any] = {}
    for key, value in (model_config or {}).items():
        if key not in LOAD_DEFAULTS:
            continue  # MLflow passes only declared keys; other config belongs to other tools
        options[key] = tuple(value) if key in _SEQUENCES else value
    return options


def _refuse_loosened_file(data_path: Path) -> None:
    """Raise if the ``MLmodel`` beside the data declares a load option other than ``ms.load``'s default."""
    import yaml

    mlmodel = _mlmodel_of(data_path)
    if mlmodel is None:
        return
    with open(mlmodel, encoding="utf-8") as stream:
        flavor = ((yaml.safe_load(stream) or {}).get("flavors") or {}).get("python_function") or {}
    declared = flavor.get("config") or {}  # where MLflow writes a flavor's model_config
    changed = {key: value for key, value in declared.items()
               if key in LOAD_DEFAULTS and _normal(value) != _normal(LOAD_DEFAULTS[key])}
    if changed:
        listed = ", ".join(f"{key}={value!r}" for key, value in sorted(changed.items()))
        raise UntrustedContentError(
            f"{mlmodel} sets {listed} for modelsafe's checks, and modelsafe writes only the defaults there "
            f"({', '.join(f'{k}={LOAD_DEFAULTS[k]!r}' for k in sorted(changed))}): the MLmodel file is outside "
            "the artifact's manifest, so anyone who can write to the model store can edit it, and a check it "
            "turned off would not run. Nothing was loaded. Restore the file (export or log the model again), and "
            "choose load options when loading: mlflow.pyfunc.load_model(uri, model_config={...}), or "
            "MLFLOW_PYFUNC_INFERENCE_CONFIG='{...}' for mlflow models serve.",
            path=str(mlmodel), globals=sorted(changed), options=changed)


def _mlmodel_of(data_path: Path) -> Path | None:
    """The ``MLmodel`` file of the model folder holding ``data_path`` (written as ``data/<artifact>``)."""
    for folder in (data_path.parent.parent, data_path.parent):
        candidate = folder / "MLmodel"
        if candidate.is_file():
            return candidate
    return None


def _normal(value: Any) -> Any:
    """Sequences compared as lists (the file's YAML lists, the defaults' lists, a caller's tuples)."""
    return [_normal(v) for v in value] if isinstance(value, (list, tuple)) else value
