"""Class paths of transformers objects: recorded at save, checked before import, resolved at load.

An artifact names its classes (the model, its config, a tokenizer, a pipeline) as
``[module, qualname]``. At load each one must be either

* **one of transformers' own classes**: recorded under the ``transformers`` package (not
  ``transformers_modules``, where ``trust_remote_code`` puts downloaded code), resolved by the
  name transformers exports (its public namespace is the allowlist; a class a model module
  does not export is looked up in that module under ``transformers.models``), and a subclass
  of the base its role requires (``PreTrainedModel`` for a model, ``PretrainedConfig`` for its
  config...); or
* **custom code** (a class from ``__main__``, a notebook or a local module): bundled at save by
  :mod:`modelsafe.code.bundle` and imported only through the trust gate
  (:mod:`modelsafe.code.gate`), exactly as ``trust_remote_code=True`` would run it; or a name
  the caller listed in ``trusted=[...]``.

Anything else, such as a class of another installed package, is refused before it is imported.
"""

from __future__ import annotations

import importlib
import inspect
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from modelsafe.errors import FormatError, SaveError, UntrustedContentError

if TYPE_CHECKING:
    from modelsafe.flavors._base import LoadOptions

__all__ = ["BASES", "audit_class", "class_path", "custom_refs", "derives_from", "resolve_class"]

#: Role -> the transformers base class every class in that role must derive from.
BASES = {
    "config": "PretrainedConfig",
    "model": "PreTrainedModel",
    "tokenizer": "PreTrainedTokenizerBase",
    "image_processor": "ImageProcessingMixin",
    "feature_extractor": "FeatureExtractionMixin",
    "processor": "ProcessorMixin",
    "pipeline": "Pipeline",
}


def derives_from(obj: Any, base: str) -> bool:
    """Whether ``obj``'s class derives from transformers' class named ``base``, by the names in its MRO.

    Comparing names imports nothing: asking ``isinstance(obj, transformers.Pipeline)`` would
    import transformers' pipelines (a third of a second) to classify a tokenizer.
    """
    return any(c.__name__ == base and _own(c.__module__ or "") for c in type(obj).__mro__)


def _own(module: str) -> bool:
    return module == "transformers" or module.startswith("transformers.")


def class_path(obj: Any) -> list[str]:
    """``[module, qualname]`` of ``obj``'s class (or of ``obj``, a class); SaveError if not importable."""
    cls = obj if isinstance(obj, type) else type(obj)
    module, qualname = cls.__module__, cls.__qualname__
    if "<" in qualname:
        raise SaveError(
            f"{module}.{qualname} is defined inside a function, so no other process can import it and the model "
            "could not be rebuilt at load. Define the class at the top level of a module (or of the script or "
            "notebook) and save again.", cls=f"{module}.{qualname}")
    return [module, qualname]


def custom_refs(paths: Iterable[Sequence[str]]) -> set[tuple[str, str]]:
    """The ``(module, qualname)`` of every class that is not transformers' own (bundled at save)."""
    return {(str(m), str(q)) for m, q in paths if not _own(str(m))}


def _checked_path(path: Any, role: str) -> tuple[str, str]:
    if not (isinstance(path, (list, tuple)) and len(path) == 2 and all(isinstance(p, str) and p for p in path)
            and all(part.isidentifier() for part in (*path[0].split("."), *path[1].split(".")))):
        raise FormatError(
            f"The artifact's {role} class is recorded as {path!r}, which is not a [module, qualname] pair of Python "
            "names. modelsafe never writes this, so the manifest was damaged or edited; nothing was imported. "
            "Re-export the model from its source.", role=role, value=repr(path))
    return path[0], path[1]


def audit_class(path: Any, role: str, options: "LoadOptions") -> None:
    """Refuse, importing nothing from the artifact, a class path that is neither transformers' own nor trusted."""
    from modelsafe.code import gate

    module, qualname = _checked_path(path, role)
    if _own(module):
        return
    name = f"{module}.{qualname}"
    if module in options.allowed_modules or name in options.trusted or f"{module}.*" in options.trusted:
        gate.check_symbol(options, module, qualname)
        return
    raise UntrustedContentError(
        f"The artifact names {name} as its {role} class. It is neither one of transformers' own classes nor code "
        "bundled with the artifact, and building it would run that package's code with the artifact's data. "
        f"Nothing was imported. If you trust the package that provides it, load with trusted=[{name!r}].",
        globals=[name], role=role)


def resolve_class(path: Any, role: str, options: "LoadOptions | None") -> type:
    """The class ``path`` names, after :func:`audit_class`, checked to derive from its role's base."""
    from modelsafe.flavors.transformers.hub import import_transformers

    transformers = import_transformers()
    module, qualname = _checked_path(path, role)
    if _own(module):
        cls = _own_class(transformers, module, qualname, role)
    else:
        if options is None:  # at save, in the saving process: the class is importable as recorded
            cls = _attribute(importlib.import_module(module), qualname)
        else:
            from modelsafe.code import gate

            cls = gate.import_symbol(options, module, qualname)
    base = getattr(transformers, BASES[role])
    if not (inspect.isclass(cls) and issubclass(cls, base)):
        raise UntrustedContentError(
            f"The artifact names {module}.{qualname} as its {role} class, but it is not a subclass of "
            f"transformers.{BASES[role]}: building it could run arbitrary code. Nothing was built. Check that the "
            "right code is installed; do not use the file if you did not make it.",
            globals=[f"{module}.{qualname}"], role=role)
    return cls


def _own_class(transformers: Any, module: str, qualname: str, role: str) -> Any:
    """Transformers' public name first (what the package exports is the allowlist); else, for a class of
    a model's own module that transformers does not export, that module under ``transformers.models``."""
    from modelsafe.errors import EnvironmentMismatchError

    found = getattr(transformers, qualname, None) if qualname.isidentifier() else None
    if inspect.isclass(found):
        return found
    if module.startswith("transformers.models."):
        try:
            return _attribute(importlib.import_module(module), qualname)
        except (ImportError, AttributeError):
            pass
    raise EnvironmentMismatchError(
        f"The {role} class {module}.{qualname} is not one transformers {transformers.__version__} installed here "
        "provides: it was added or renamed in another version. Install the transformers version the model was saved "
        "with (`modelsafe env` lists it).", modules=[module], role=role)


def _attribute(module: Any, qualname: str) -> Any:
    target = module
    for part in qualname.split("."):
        target = getattr(target, part)
    return target
