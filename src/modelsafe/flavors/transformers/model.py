"""A ``PreTrainedModel`` as its config (JSON) plus its weights (safetensors, through the torch flavor).

Saved:

* the config as ``config.to_dict()`` JSON and the config class's path, the model class's path,
  the attention implementation it ran with, and its ``generation_config`` when it has one;
* the state dict as a *nested torch component*: the torch flavor's own weights-only storage
  (streamed safetensors members hashed while written; tensors that share memory, such as
  GPT-2's ``lm_head``/``wte`` or T5's ``shared`` embeddings, stored once and recorded as
  aliases). The transformers flavor never imports the torch flavor's modules: it asks the
  registry for the ``torch`` flavor and calls the ``Flavor`` interface (save, audit, load), so
  the flavors stay independent;
* non-persistent buffers (a causal mask, ``position_ids``) in a second, small nested component,
  so the model needs nothing recomputed.

Loaded: the classes are checked (:mod:`.classes`), the config is built from its JSON, the
model is built on the ``meta`` device (nothing allocated, no initialisation, torch's RNG
untouched), every saved key and shape is compared with the model's (a difference raises
:class:`~modelsafe.errors.ArchitectureMismatchError`), the tensors (memory-mapped by
default) are assigned without a copy, the ties recorded at save are restored (the tied
parameters are one ``Parameter`` again), and the model goes to its device in ``eval()``.
Nothing is fetched: there is no hub id to fetch from.
"""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from modelsafe.errors import (
    ArchitectureMismatchError,
    FormatError,
    SaveError,
    UnsupportedModelError,
)
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
from modelsafe.flavors.transformers.hub import import_transformers, offline

if TYPE_CHECKING:
    import torch

__all__ = ["audit_model", "load_model", "save_model"]

#: The only flavor this one nests, and the modules its artifacts depend on.
TENSOR_FLAVOR = "torch"
MODULES = {"transformers", "torch", "safetensors"}


# ---------------------------------------------------------------------------------------
# nested torch components, through the registry
# ---------------------------------------------------------------------------------------


def _save_nested(tensors: Mapping[str, Any], store: ComponentStore, relprefix: str, device: str) -> dict[str, Any]:
    from modelsafe.flavors import get_flavor

    flavor = get_flavor(TENSOR_FLAVOR)
    saved = flavor.save(dict(tensors), store.sub(relprefix), {})
    # The torch flavor reads "device" to place the tensors (and to warn when it is not the saved one).
    return {"flavor": flavor.name, "flavor_version": flavor.version, "prefix": relprefix,
            "data": {**saved.data, "device": device}}


def _nested(entry: Any, what: str) -> tuple[Any, Mapping[str, Any]]:
    from modelsafe.flavors import get_flavor

    if not (isinstance(entry, dict) and entry.get("flavor") == TENSOR_FLAVOR and isinstance(entry.get("data"), dict)
            and isinstance(entry.get("prefix"), str)):
        raise FormatError(f"The {what} of the transformers component are recorded as {str(entry)[:120]!r}, not as "
                          "a nested torch component. modelsafe never writes this, so the manifest was damaged or "
                          "edited. Re-export the model from its source.", what=what)
    flavor = get_flavor(TENSOR_FLAVOR)
    if int(entry.get("flavor_version", 1)) > flavor.version:
        raise FormatError(f"The {what} were written by a newer torch flavor (version {entry['flavor_version']}; "
                          f"this modelsafe reads up to {flavor.version}). Upgrade with: pip install -U modelsafe",
                          what=what)
    return flavor, entry


def _audit_nested(source: ComponentSource, entry: Any, what: str, options: LoadOptions) -> None:
    flavor, entry = _nested(entry, what)
    flavor.audit(source.sub(entry["prefix"]), entry["data"], options)


def _load_nested(source: ComponentSource, entry: Any, what: str, options: LoadOptions) -> dict[str, Any]:
    flavor, entry = _nested(entry, what)
    return dict(flavor.load(source.sub(entry["prefix"]), entry["data"], options))


# ---------------------------------------------------------------------------------------
# save
# ---------------------------------------------------------------------------------------


def save_model(model: Any, store: ComponentStore) -> SavedComponent:
    """Store ``model`` (a ``PreTrainedModel``) under ``store``; return the component's record."""
    transformers = import_transformers()
    if not isinstance(model, transformers.PreTrainedModel):
        raise UnsupportedModelError(
            f"The transformers flavor saves PyTorch PreTrainedModel objects; got {type(model).__module__}."
            f"{type(model).__qualname__}. TensorFlow and Flax models are not supported: save the PyTorch class.",
            type_name=f"{type(model).__module__}.{type(model).__qualname__}")
    paths = {"class": class_path(model), "config_class": class_path(model.config)}
    state = model.state_dict()
    odd = sorted(k for k, v in state.items() if not hasattr(v, "shape"))
    if odd:
        raise SaveError(f"The state dict of {paths['class'][1]} holds non-tensor entries {odd} (extra state), which "
                        "can only be stored with pickle. Keep that state in tensors or in the config.", keys=odd)
    first = next(_tensors(model), None)
    device = str(first.device) if first is not None else "cpu"
    buffers = {n: b for n, b in model.named_buffers() if n not in state and b is not None}
    generation = getattr(model, "generation_config", None)
    data: dict[str, Any] = {
        "kind": "model",
        **paths,
        "config": json.loads(model.config.to_json_string(use_diff=False)),
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "generation_config": json.loads(generation.to_json_string(use_diff=False))
        if generation is not None and _can_generate(model) else None,
        "weights": _save_nested(state, store, "weights", device),
        "buffers": _save_nested(buffers, store, "buffers", device) if buffers else None,
        "device": device,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    refs = custom_refs(paths.values())
    return SavedComponent(data=data, modules=MODULES | {m for m, _ in refs},
                          type_name=".".join(paths["class"]), refs=refs)


def _can_generate(model: Any) -> bool:
    try:
        return bool(model.can_generate())
    except Exception:  # noqa: BLE001 - older versions raise for models without generate
        return False


def _tensors(model: Any) -> Iterator["torch.Tensor"]:
    yield from model.parameters()
    yield from (b for b in model.buffers() if b is not None)


# ---------------------------------------------------------------------------------------
# load
# ---------------------------------------------------------------------------------------


def audit_model(source: ComponentSource, data: Mapping[str, Any], options: LoadOptions) -> None:
    """Check the class paths and the weights' headers; import nothing from the artifact."""
    audit_class(data.get("class"), "model", options)
    audit_class(data.get("config_class"), "config", options)
    for key in ("config", "generation_config"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            raise FormatError(f"The model's {key} is recorded as a {type(data[key]).__name__}, not a JSON object; the "
                              "manifest was damaged or edited. Re-export the model from its source.", key=key)
    _audit_nested(source, data.get("weights"), "weights", options)
    if data.get("buffers") is not None:
        _audit_nested(source, data["buffers"], "buffers", options)


def load_model(source: ComponentSource, data: Mapping[str, Any], options: LoadOptions) -> Any:
    """Rebuild the model from its config and weights (see the module docstring)."""
    with offline():
        config_cls = resolve_class(data["config_class"], "config", options)
        model_cls = resolve_class(data["class"], "model", options)
        config = config_cls.from_dict(dict(data["config"]))
        if data.get("attn_implementation"):
            config._attn_implementation = data["attn_implementation"]
        state = _load_nested(source, data["weights"], "weights", options)
        buffers = _load_nested(source, data["buffers"], "buffers", options) if data.get("buffers") else {}
        model = _build(model_cls, config, "meta")
        _compare(model, state, data)
        _fill(model, state, buffers)
        if any(t.is_meta for t in _all_tensors(model)):  # tensors outside the state dict: build for real
            model = _build(model_cls, config, "cpu")
            _fill(model, state, buffers)
        device = next((t.device for t in state.values()), None)
        if device is not None and device.type != "cpu":
            model = model.to(device)
        model.eval()
        if data.get("generation_config") is not None:
            transformers = import_transformers()
            model.generation_config = transformers.GenerationConfig.from_dict(dict(data["generation_config"]))
    return model


def _build(cls: type, config: Any, device: str) -> Any:
    """``cls(config)`` with its tensors on ``device``, skipping weight initialisation, RNG untouched."""
    import torch

    with torch.random.fork_rng(devices=[]), torch.device(device), _no_init():
        return cls(config)


def _no_init() -> Any:
    try:
        from transformers.modeling_utils import no_init_weights
    except ImportError:  # pragma: no cover - every supported transformers has it
        return contextlib.nullcontext()
    return no_init_weights()


def _compare(model: Any, state: Mapping[str, Any], data: Mapping[str, Any]) -> None:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    saved = {k: tuple(v.shape) for k, v in state.items()}
    missing = sorted(set(expected) - set(saved))
    unexpected = sorted(set(saved) - set(expected))
    mismatched = {k: (saved[k], expected[k]) for k in sorted(set(saved) & set(expected)) if saved[k] != expected[k]}
    if not (missing or unexpected or mismatched):
        return
    rows = [f"  missing from the artifact: {k}" for k in missing[:10]]
    rows += [f"  not in the model: {k}" for k in unexpected[:10]]
    rows += [f"  {k}: saved {s} but the model has {m}" for k, (s, m) in list(mismatched.items())[:10]]
    raise ArchitectureMismatchError(
        f"The weights saved with {'.'.join(data['class'])} do not fit the model built from its config here "
        f"({len(missing)} missing, {len(unexpected)} unexpected, {len(mismatched)} of another shape):\n"
        + "\n".join(rows) + "\nThe class builds a different architecture from the same config in this version of "
        "transformers (or its code changed), so the weights cannot be placed. Install the transformers version the "
        "model was saved with (`modelsafe env` lists it), or load it there and re-save.",
        missing=missing, unexpected=unexpected, mismatched=mismatched)


def _fill(model: Any, state: Mapping[str, Any], buffers: Mapping[str, Any]) -> None:
    """Assign the tensors (no copy) and set the buffers; tensors that were one object at save are one again.

    Each stored tensor becomes one ``Parameter`` however many keys name it, so assigning the
    state dict leaves GPT-2's ``lm_head.weight`` and ``transformer.wte.weight`` the same object.
    """
    import torch

    meta = dict(model.named_parameters(remove_duplicate=False))
    wrapped: dict[int, Any] = {}

    def parameter(name: str, tensor: Any) -> Any:
        if name not in meta:
            return tensor  # a buffer
        if id(tensor) not in wrapped:
            wrapped[id(tensor)] = torch.nn.Parameter(tensor, requires_grad=meta[name].requires_grad)
        return wrapped[id(tensor)]

    model.load_state_dict({k: parameter(k, v) for k, v in state.items()}, strict=True, assign=True)
    for name, tensor in buffers.items():
        path, _, attr = name.rpartition(".")
        model.get_submodule(path).register_buffer(attr, tensor, persistent=False)


def _all_tensors(model: Any) -> Iterator["torch.Tensor"]:
    import torch

    yield from _tensors(model)
    for module in model.modules():
        yield from (v for v in vars(module).values() if isinstance(v, torch.Tensor))
