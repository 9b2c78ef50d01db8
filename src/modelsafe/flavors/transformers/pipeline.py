"""A ``transformers.Pipeline`` saved as one unit: its model, its preprocessors, its task and parameters.

The model is stored as :mod:`.model` stores any model (under ``model/``), each preprocessor the
pipeline holds (tokenizer, feature extractor, image processor, processor) as
:mod:`.preprocessors` stores it (under its attribute name), and the pipeline's class, task
and sanitised call parameters (``top_k``, ``function_to_apply``...) as JSON. Loading rebuilds
the parts, then the pipeline class directly with them (never ``pipeline("task", "hub-id")``:
there is nothing to download), on the model's device, with the saved parameters.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from modelsafe.errors import FormatError, SaveError
from modelsafe.flavors._base import (
    ComponentSource,
    ComponentStore,
    LoadOptions,
    SavedComponent,
)
from modelsafe.flavors.transformers.classes import (
    audit_class,
    class_path,
    custom_refs,
    resolve_class,
)
from modelsafe.flavors.transformers.hub import offline
from modelsafe.flavors.transformers.model import audit_model, load_model, save_model
from modelsafe.flavors.transformers.preprocessors import (
    audit_preprocessor,
    load_preprocessor,
    role_of,
    save_preprocessor,
)

__all__ = ["audit_pipeline", "load_pipeline", "save_pipeline"]

#: Pipeline attributes holding preprocessors, as the pipeline's constructor names them.
PREPROCESSORS = ("tokenizer", "feature_extractor", "image_processor", "processor")
_PARAMS = {"preprocess": "_preprocess_params", "forward": "_forward_params", "postprocess": "_postprocess_params"}


def save_pipeline(pipe: Any, store: ComponentStore) -> SavedComponent:
    """Store ``pipe``'s parts under ``store``; return the component's record."""
    path = class_path(pipe)
    saved = {"model": save_model(pipe.model, store.sub("model"))}
    for attr in PREPROCESSORS:
        part = getattr(pipe, attr, None)
        role = role_of(part) if part is not None else None
        if role is not None:
            saved[attr] = save_preprocessor(part, store.sub(attr), role)
    params = {name: dict(getattr(pipe, attr, None) or {}) for name, attr in _PARAMS.items()}
    try:
        params = json.loads(json.dumps(params))
    except (TypeError, ValueError) as exc:
        raise SaveError(
            f"The parameters of the {pipe.task!r} pipeline ({params}) cannot be stored as JSON ({exc}). Pass plain "
            "values (numbers, strings, lists) to pipeline(...), or set the others after loading.", task=pipe.task) \
            from None
    data = {"kind": "pipeline", "class": path, "task": pipe.task, "params": params,
            "binary_output": bool(getattr(pipe, "binary_output", False)),
            "parts": {name: {"prefix": name, "data": part.data} for name, part in saved.items()}}
    refs = custom_refs([path]).union(*(part.refs for part in saved.values()))
    modules = set().union(*(part.modules for part in saved.values())) | {m for m, _ in refs}
    return SavedComponent(data=data, modules=modules, type_name=".".join(path), refs=refs)


def _parts(data: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    parts = data.get("parts")
    if not (isinstance(parts, dict) and "model" in parts and set(parts) <= {"model", *PREPROCESSORS}
            and all(isinstance(p, dict) and p.get("prefix") == name and isinstance(p.get("data"), dict)
                    for name, p in parts.items())):
        raise FormatError("The pipeline's list of parts is malformed (it needs a model, and may hold a tokenizer, "
                          "feature extractor, image processor or processor); the manifest was damaged or edited. "
                          "Re-export the model from its source.")
    return parts


def audit_pipeline(source: ComponentSource, data: Mapping[str, Any], options: LoadOptions) -> None:
    """Check the pipeline's class and every part; import nothing from the artifact."""
    audit_class(data.get("class"), "pipeline", options)
    for name, part in _parts(data).items():
        check = audit_model if name == "model" else audit_preprocessor
        check(source.sub(part["prefix"]), part["data"], options)
    if not (isinstance(data.get("task"), str) and isinstance(data.get("params"), dict)):
        raise FormatError("The pipeline's task or parameters are malformed; the manifest was damaged or edited. "
                          "Re-export the model from its source.")


def load_pipeline(source: ComponentSource, data: Mapping[str, Any], options: LoadOptions) -> Any:
    """Rebuild the parts, then the pipeline from them, with its saved parameters."""
    parts = {name: (load_model if name == "model" else load_preprocessor)(source.sub(part["prefix"]), part["data"],
                                                                          options)
             for name, part in _parts(data).items()}
    cls = resolve_class(data["class"], "pipeline", options)
    model = parts.pop("model")
    with offline():
        pipe = cls(model=model, task=data["task"], device=model.device, binary_output=data.get("binary_output", False),
                   **parts)
    for name, attr in _PARAMS.items():
        saved = data["params"].get(name)
        if isinstance(saved, dict):
            setattr(pipe, attr, dict(saved))  # exactly what the pipeline ran with at save
    return pipe
