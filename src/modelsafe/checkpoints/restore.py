"""Reading a checkpoint back into live training objects.

The artifact is opened and every member's hash is checked before anything is read (an
interrupted copy or a changed file is refused with IntegrityError); then the framework's
state module checks that the given objects fit what was saved, and only then changes them.
Nothing from the artifact is imported or executed: weights are safetensors/``.npy`` and the
rest is JSON.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from modelsafe.artifact.integrity import check_members
from modelsafe.artifact.manifest import Manifest
from modelsafe.artifact.reader import MANIFEST_NAME, open_artifact
from modelsafe.checkpoints.index import METADATA_KEY
from modelsafe.errors import ArchitectureMismatchError, FormatError
from modelsafe.flavors._base import ComponentSource


def restore(path: Path, step: int, model: Any, parts: Mapping[str, Any], device: Any) -> Any:
    """Restore ``model`` and ``parts`` from the checkpoint at ``path``; return its ``extra``."""
    with open_artifact(path) as reader:
        manifest = Manifest.from_json(reader.read(MANIFEST_NAME), where=f"{path}/{MANIFEST_NAME}")
        facts = manifest.metadata.get(METADATA_KEY)
        if not isinstance(facts, Mapping) or "training" not in facts:
            raise FormatError(f"{str(path)!r} is a modelsafe artifact but not a checkpoint (its manifest has no "
                              f"{METADATA_KEY!r} record). Restore only reads checkpoints; load it with ms.load().",
                              path=str(path))
        check_members(reader, manifest.members)
        component = manifest.components["model"]
        _check_framework(path, step, component.flavor, model)
        model_source = ComponentSource(reader, "model")
        state_source = ComponentSource(reader, "checkpoint")
        if component.flavor == "keras":
            from modelsafe.checkpoints import keras as _checkpoint_keras
            apply, extra = _checkpoint_keras.plan_restore(step, str(path), state_source, facts["training"], model,
                                                          parts)
        else:
            apply, extra = _plan_torch(step, str(path), model_source, component.data, state_source,
                                       facts["training"], model, parts, device)
        apply()
    return extra


def _plan_torch(step: int, path: str, model_source: ComponentSource, data: Mapping[str, Any],
                state_source: ComponentSource, record: Mapping[str, Any], model: Any, parts: Mapping[str, Any],
                device: Any) -> tuple[Any, Any]:
    from modelsafe.checkpoints import state as state_module
    weights = state_module.read_model_weights(model_source, data)
    state = state_module.read_state(state_source, record)
    apply = state_module.plan_restore(step, path, weights, state, model, parts)
    if device is None:
        return apply, state.get("extra")
    from modelsafe.flavors.torch.run import resolve_device

    target = resolve_device(device)

    def moved_then_applied() -> None:
        model.to(target)  # parameters keep their identity, so an optimizer built over them stays valid
        apply()

    return moved_then_applied, state.get("extra")


def _check_framework(path: Path, step: int, flavor: str, model: Any) -> None:
    from modelsafe.flavors import detect_flavor

    given = detect_flavor(model)
    if given != flavor:
        raise ArchitectureMismatchError(
            f"Checkpoint step {step} ({str(path)!r}) holds a {flavor} model, but a {type(model).__qualname__} "
            f"({given}) was given. Its weights cannot be placed in a model of another framework. Pass the {flavor} "
            "model the run trained.", missing=[], unexpected=[], mismatched={}, saved=flavor, current=given)
