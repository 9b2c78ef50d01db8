"""The flavor registry: framework support, found by name and imported on first use.

The registry maps flavor names to *string* import paths with an install hint, so the
core never imports a framework and never imports a module path read from an artifact.
Detection compares module-name strings of an object's classes.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from modelsafe.errors import FlavorNotInstalledError, FormatError, UnsupportedModelError

if TYPE_CHECKING:
    from modelsafe.flavors._base import Flavor

__all__ = ["FlavorSpec", "REGISTRY", "detect_flavor", "get_flavor", "flavor_names", "native_roots", "holds_tensors"]


@dataclass(frozen=True)
class FlavorSpec:
    name: str
    module: str
    class_name: str
    requires: tuple[str, ...]
    extra: str

    @property
    def hint(self) -> str:
        return f"pip install 'modelsafe[{self.extra}]'" if self.extra else "pip install -U modelsafe"


REGISTRY: dict[str, FlavorSpec] = {
    spec.name: spec
    for spec in (
        FlavorSpec("sklearn", "modelsafe.flavors.sklearn.flavor", "SklearnFlavor", ("sklearn",), "sklearn"),
        FlavorSpec("python", "modelsafe.flavors.python", "PythonFlavor", (), ""),
        FlavorSpec("torch", "modelsafe.flavors.torch.flavor", "TorchFlavor", ("torch", "safetensors"), "torch"),
        FlavorSpec("keras", "modelsafe.flavors.keras.flavor", "KerasFlavor", ("keras",), "keras"),
        FlavorSpec("xgboost", "modelsafe.flavors.boosting.xgboost", "XGBoostFlavor", ("xgboost",), "xgboost"),
        FlavorSpec("lightgbm", "modelsafe.flavors.boosting.lightgbm", "LightGBMFlavor", ("lightgbm",), "lightgbm"),
        FlavorSpec("transformers", "modelsafe.flavors.transformers.flavor", "TransformersFlavor",
                   ("transformers", "tokenizers", "torch", "safetensors"), "transformers"),
    )
}

#: Top-level module name of a class in an object's MRO -> flavor that saves it.
_DETECT: dict[str, str] = {
    "xgboost": "xgboost",
    "lightgbm": "lightgbm",
    "transformers": "transformers",
    "torch": "torch",
    "keras": "keras",
    "tf_keras": "keras",
    "tensorflow": "keras",
    "sklearn": "sklearn",
    "imblearn": "sklearn",
}

#: Flavors that store objects in a native format of their own (not a pickle stream).
_PICKLED = ("sklearn", "python")

#: How deep detection looks for a tensor inside nested dicts, lists and tuples.
_MAX_TENSOR_DEPTH = 64

_instances: dict[str, "Flavor"] = {}


def native_roots() -> tuple[str, ...]:
    """Top-level package names whose objects a native-format flavor saves."""
    return tuple(root for root, name in _DETECT.items() if name not in _PICKLED)


def flavor_names() -> list[str]:
    return sorted(REGISTRY)


def detect_flavor(obj: Any) -> str:
    """The name of the flavor that saves ``obj`` (by its classes' module names)."""
    for cls in type(obj).__mro__:
        root = (cls.__module__ or "").split(".")[0]
        if root in _DETECT:
            return _DETECT[root]
    if isinstance(obj, (dict, list, tuple)) and "torch" in sys.modules:
        if holds_tensors(obj):  # a state dict or checkpoint dict: weights-only, never pickled
            return "torch"
    if callable(obj) or hasattr(obj, "predict") or hasattr(obj, "transform") or isinstance(obj, (dict, list, tuple)):
        return "python"
    raise UnsupportedModelError(
        f"No modelsafe flavor saves objects of type {type(obj).__module__}.{type(obj).__qualname__}: "
        f"it is neither a model of a supported framework ({', '.join(flavor_names())}) nor a callable "
        "or an object with predict/transform. Wrap it in a function or a class with a predict method.",
        type_name=f"{type(obj).__module__}.{type(obj).__qualname__}",
    )


def holds_tensors(obj: Any, depth: int = 0) -> bool:
    """Whether ``obj`` is a tensor or a dict/list/tuple with a tensor somewhere inside."""
    if type(obj).__module__.split(".")[0] == "torch" and hasattr(obj, "shape"):
        return True
    if depth > _MAX_TENSOR_DEPTH:
        return False
    if isinstance(obj, Mapping):
        return any(holds_tensors(v, depth + 1) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return any(holds_tensors(v, depth + 1) for v in obj)
    return False


def get_flavor(name: str) -> "Flavor":
    """The flavor instance registered as ``name``; imports its module on first use."""
    if name in _instances:
        return _instances[name]
    spec = REGISTRY.get(name)
    if spec is None:
        raise FormatError(
            f"Unknown flavor {name!r}: this modelsafe knows {', '.join(flavor_names())}. The artifact was "
            "probably written by a newer modelsafe; upgrade with: pip install -U modelsafe",
            flavor=name,
        )
    for module in spec.requires:
        if importlib.util.find_spec(module) is None:
            raise FlavorNotInstalledError(
                f"The {name!r} flavor needs the {module!r} package, which is not installed here, so the "
                f"model cannot be saved or loaded. Install it with: {spec.hint}",
                flavor=name, hint=spec.hint, name=module,
            )
    module = importlib.import_module(spec.module)
    instance = getattr(module, spec.class_name)()
    _instances[name] = instance
    return instance

