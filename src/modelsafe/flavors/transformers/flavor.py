"""Hugging Face transformers flavor: PyTorch ``PreTrainedModel``s, their preprocessors, and pipelines.

One component is one of

* ``"model"``: a ``PreTrainedModel`` as config JSON plus safetensors weights, tied weights once
  (:mod:`.model`);
* ``"preprocessor"``: a tokenizer, processor, image processor or feature extractor as its
  ``save_pretrained`` files, no pickle (:mod:`.preprocessors`), typically passed as
  ``ms.save(model, path, preprocess=tokenizer, sample=["some text", ...])``;
* ``"pipeline"``: a ``transformers.Pipeline`` as one unit (:mod:`.pipeline`).

``Bundle.predict(["text", ...])`` then tokenizes, runs the model under ``no_grad`` and
returns its logits (or, for a pipeline, what the pipeline returns); the verification sample
is recorded on the raw text, so a tokenizer that changed is caught at load. Loading never
contacts the Hugging Face Hub (:mod:`.hub`), and classes that are not transformers' own go
through the trust gate for bundled code (:mod:`.classes`).
"""

from __future__ import annotations

from typing import Any, Mapping

from modelsafe.errors import FormatError, UnsupportedModelError
from modelsafe.flavors._base import (
    ComponentSource,
    ComponentStore,
    Flavor,
    LoadOptions,
    SavedComponent,
)
from modelsafe.flavors.transformers.classes import derives_from
from modelsafe.flavors.transformers.model import audit_model, load_model, save_model
from modelsafe.flavors.transformers.pipeline import (
    audit_pipeline,
    load_pipeline,
    save_pipeline,
)
from modelsafe.flavors.transformers.preprocessors import (
    audit_preprocessor,
    load_preprocessor,
    role_of,
    save_preprocessor,
    transform,
)
from modelsafe.flavors.transformers.run import pipeline_outputs, run_model

__all__ = ["TransformersFlavor", "kind_of"]

KINDS = ("model", "preprocessor", "pipeline")


def kind_of(obj: Any) -> str | None:
    """``"model"``, ``"preprocessor"``, ``"pipeline"``, or None for other objects."""
    if derives_from(obj, "Pipeline"):
        return "pipeline"
    if derives_from(obj, "PreTrainedModel"):
        return "model"
    return "preprocessor" if role_of(obj) is not None else None


def _type_name(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


class TransformersFlavor(Flavor):
    name = "transformers"
    version = 1
    #: Read by the torch flavor, which loads the weights nested in every model: mmap=False copies them.
    load_options = frozenset({"mmap"})

    def can_embed(self, obj: Any) -> bool:
        return kind_of(obj) is not None

    # -- save -------------------------------------------------------------------------
    def save(self, obj: Any, store: ComponentStore, options: Mapping[str, Any]) -> SavedComponent:
        kind = kind_of(obj)
        if kind == "model":
            return save_model(obj, store)
        if kind == "pipeline":
            return save_pipeline(obj, store)
        if kind == "preprocessor":
            return save_preprocessor(obj, store, str(role_of(obj)))
        raise UnsupportedModelError(
            f"The transformers flavor saves PyTorch PreTrainedModels, tokenizers, processors, image processors, "
            f"feature extractors and pipelines; got {_type_name(obj)}. TensorFlow and Flax models are not supported: "
            "save the PyTorch class of the model.", type_name=_type_name(obj))

    # -- load -------------------------------------------------------------------------
    def audit(self, source: ComponentSource, data: Mapping[str, Any], options: LoadOptions) -> None:
        kind = data.get("kind")
        if kind not in KINDS:
            raise FormatError(f"Unknown transformers component kind {kind!r}: the artifact was written by a newer "
                              "modelsafe. Upgrade with: pip install -U modelsafe", kind=kind)
        {"model": audit_model, "preprocessor": audit_preprocessor, "pipeline": audit_pipeline}[kind](
            source, data, options)

    def load(self, source: ComponentSource, data: Mapping[str, Any], options: LoadOptions) -> Any:
        loader = {"model": load_model, "preprocessor": load_preprocessor, "pipeline": load_pipeline}[data["kind"]]
        return loader(source, data, options)

    # -- running ----------------------------------------------------------------------
    def predict(self, obj: Any, x: Any) -> Any:
        kind = kind_of(obj)
        if kind == "pipeline":
            return obj(_pipeline_input(x))
        if kind == "preprocessor":
            return transform(obj, x)
        return run_model(obj, x)

    def transform(self, obj: Any, x: Any) -> Any:
        return transform(obj, x) if kind_of(obj) == "preprocessor" else self.predict(obj, x)

    def outputs(self, obj: Any, x: Any) -> dict[str, Any]:
        kind = kind_of(obj)
        if kind == "pipeline":
            inputs = _pipeline_input(x)
            return pipeline_outputs(obj(inputs), len(inputs) if isinstance(inputs, list) else 1)
        if kind == "preprocessor":  # saved on its own: what it makes of the sample, field by field
            return {f"predict.{key}": value.numpy() if hasattr(value, "numpy") else value
                    for key, value in transform(obj, x).items()}
        return {"predict": run_model(obj, x)}

    def device_info(self, obj: Any) -> dict[str, Any]:
        model = obj.model if kind_of(obj) == "pipeline" else obj
        device = getattr(model, "device", None)
        return {"torch_device": str(device)} if device is not None and kind_of(model) == "model" else {}


def _pipeline_input(x: Any) -> Any:
    """Pipelines take a list of inputs for a batch (a numpy batch becomes a list of its rows)."""
    if isinstance(x, tuple):
        return list(x)
    if hasattr(x, "ndim") and getattr(x, "ndim", 0) > 1 and not isinstance(x, Mapping):
        return list(x)
    return x
