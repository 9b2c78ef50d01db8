"""Training state of a PyTorch run in a checkpoint: optimizer, scheduler, grad scaler, RNG states, extra.

Saving splits the state dicts into JSON and tensors with :mod:`modelsafe.flavors.torch.tree`
(no pickle): the tensors (Adam moments, the torch RNG state, numpy's Mersenne state as an
array) go to one safetensors member written by :func:`~modelsafe.flavors.torch.tensors.write_tensors`,
the rest (hyper-parameters, scheduler counters, Python's RNG state, ``extra``) to one JSON
member. Restoring checks everything first (the model's keys and shapes with the PyTorch
flavor's report, the optimizer's class and parameter groups, the scheduler's and scaler's
classes) and only then changes the objects, so a refused restore leaves them untouched.
"""

from __future__ import annotations

import json
import random
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

from modelsafe.errors import ArchitectureMismatchError, FormatError

if TYPE_CHECKING:
    import torch

    from modelsafe.flavors._base import ComponentSource, ComponentStore

STATE_PREFIX = "checkpoint"
STATE_JSON = "state.json"
STATE_TENSORS = "state.safetensors"
#: The parts of the training state a checkpoint can hold, besides the model.
PARTS = ("optimizer", "scheduler", "scaler")


class RNGStateWarning(UserWarning):
    """A random-number generator state saved in the checkpoint cannot be restored here (e.g. CUDA)."""


def class_path(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


# ---------------------------------------------------------------------------------------
# capture (on the caller's thread, at the moment of save)
# ---------------------------------------------------------------------------------------


def rng_states() -> dict[str, Any]:
    """Python's, numpy's (global) and torch's CPU and CUDA generator states."""
    import numpy as np
    import torch

    states: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(),
                              "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # never initialize CUDA just to save
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def training_state(model: Any, parts: Mapping[str, Any], extra: Any) -> dict[str, Any]:
    """The state dicts of the given parts (live references: write them before training goes on).

    ``model`` is written by its flavor, not here.
    """
    state: dict[str, Any] = {"rng": rng_states()}
    for name in PARTS:
        obj = parts.get(name)
        if obj is not None:
            state[name] = {"class": class_path(obj), "state": obj.state_dict()}
    if extra is not None:
        state["extra"] = extra
    return state


def write_state(store: "ComponentStore", state: Mapping[str, Any]) -> dict[str, Any]:
    """Write the training state as a JSON member and safetensors members; return their record.

    Tensors go to one member, or to two of similar size when large (Adam's moments are
    twice the model), so two cores hash them while they are written. ``aliases`` names
    tensors that are the same view of one storage, stored once.
    """
    from modelsafe.flavors.torch.tensors import split_for_hashing, write_tensors
    from modelsafe.flavors.torch.tree import encode

    encoded = encode(dict(state))
    store.write(STATE_JSON, json.dumps({"tree": encoded.tree}, allow_nan=False).encode("utf-8"))
    record: dict[str, Any] = {"json": STATE_JSON, "tensors": None, "parts": sorted(k for k in state if k != "rng"),
                              "rng": True}
    if encoded.tensors:
        groups, aliases, _ = split_for_hashing(encoded.tensors)
        names = [STATE_TENSORS] if len(groups) == 1 else [f"state-{i}.safetensors" for i in range(len(groups))]
        record["tensors"] = [write_tensors(store, name, group)["member"] for name, group in zip(names, groups)]
        record["aliases"] = aliases
    return record


# ---------------------------------------------------------------------------------------
# restore
# ---------------------------------------------------------------------------------------


def _read_state_tensors(source: "ComponentSource", record: Mapping[str, Any]) -> dict[str, Any]:
    """Every tensor of the state: from a list of members, or one member named alone (earlier checkpoints)."""
    from modelsafe.flavors.torch.tensors_read import read_tensors

    members = record.get("tensors") or []
    aliases = record.get("aliases") or {}
    if isinstance(members, str):
        members = [members]
    if not (isinstance(members, list) and all(isinstance(m, str) for m in members) and isinstance(aliases, dict)):
        raise FormatError(f"The training state of checkpoint {source.path!r} lists its tensors in a form this "
                          "modelsafe does not know. Restore another checkpoint (which=<step>) or upgrade modelsafe.",
                          path=source.path)
    tensors: dict[str, Any] = {}
    for member in members:
        tensors.update(read_tensors(source, member))
    for alias, target in aliases.items():
        if target not in tensors:
            raise FormatError(f"The training state of checkpoint {source.path!r} makes {alias!r} an alias of "
                              f"{target!r}, which it does not hold. Restore another checkpoint (which=<step>).",
                              path=source.path)
        tensors[alias] = tensors[target]
    return tensors


def read_state(source: "ComponentSource", record: Mapping[str, Any]) -> dict[str, Any]:
    """Rebuild the training state written by :func:`write_state` (JSON + tensors, nothing executed)."""
    from modelsafe.flavors.torch.tree import decode

    try:
        tree = json.loads(source.read(record["json"]))["tree"]
    except (KeyError, TypeError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"The training state of checkpoint {source.path!r} is not readable ({exc}). Its hash "
                          "matched, so it was written this way by a newer modelsafe or a bug. Restore another "
                          "checkpoint (which=<step>) or upgrade modelsafe.", path=source.path) from exc
    tensors = _read_state_tensors(source, record)
    state = decode(tree, tensors)
    if not isinstance(state, dict):
        raise FormatError(f"The training state of checkpoint {source.path!r} is not a mapping. Restore another "
                          "checkpoint (which=<step>) or upgrade modelsafe.", path=source.path)
    return state


@dataclass(frozen=True)
class SavedModelWeights:
    """The model weights stored in a checkpoint, with what the report needs."""

    tensors: Mapping[str, "torch.Tensor"]
    saved_with: str


def read_model_weights(source: "ComponentSource", data: Mapping[str, Any]) -> SavedModelWeights:
    """The model's state dict from the checkpoint's torch component (module or weights-only)."""
    from modelsafe.flavors.torch.arch import describe
    from modelsafe.flavors.torch.tensors_read import read_tensors
    from modelsafe.flavors.torch.tree import decode

    weights = data["weights"]
    tensors: dict[str, Any] = {}
    for member in weights["members"]:
        tensors.update(read_tensors(source, member, mmap=True))  # copied into the model's own tensors next
    for alias, target in weights.get("aliases", {}).items():
        if target in tensors:
            tensors[alias] = tensors[target]
    if data.get("kind") == "state":
        state = decode(data["tree"], tensors)
        return SavedModelWeights(dict(state), "a state dict (weights only)")
    order = weights.get("keys") or list(tensors)
    return SavedModelWeights({k: tensors[k] for k in order if k in tensors}, describe(data["architecture"]))


def plan_restore(step: int, path: str, weights: SavedModelWeights, state: Mapping[str, Any], model: Any,
                 parts: Mapping[str, Any]) -> Callable[[], None]:
    """Check that every object fits what was saved; return the function that restores them all."""
    from modelsafe.flavors.torch.args import unwrap
    from modelsafe.flavors.torch.report import compare, shapes_of

    target = unwrap(model)[0]
    report = compare(shapes_of(weights.tensors), shapes_of(target.state_dict()), model=class_path(target),
                     saved_with=weights.saved_with)
    report.raise_if_failed()
    for name, obj in parts.items():
        if obj is not None:
            _check_part(step, path, name, obj, state)

    def apply() -> None:
        target.load_state_dict(weights.tensors, strict=True)  # copies into the existing parameters
        for name, obj in parts.items():
            if obj is not None:
                obj.load_state_dict(state[name]["state"])
        set_rng_states(state.get("rng") or {})

    return apply


def _check_part(step: int, path: str, name: str, obj: Any, state: Mapping[str, Any]) -> None:
    saved = state.get(name)
    if saved is None:
        raise FormatError(
            f"Checkpoint step {step} ({path!r}) holds no {name} state: it was saved without {name}=. Restoring "
            f"would leave the {name} as it is now, so training would not resume as it was. Restore without "
            f"{name}=, or pick a checkpoint saved with it.", path=path, step=step, part=name)
    current = class_path(obj)
    if saved["class"] != current:
        raise ArchitectureMismatchError(
            f"Checkpoint step {step} holds the state of a {saved['class']} {name}, but a {current} was given. Its "
            f"state would be misread (other hyper-parameters and buffers). Build the {name} the run used "
            f"({saved['class']}), or restore without {name}=.",
            missing=[], unexpected=[], mismatched={}, part=name, saved=saved["class"], current=current)
    if name == "optimizer":
        _check_groups(step, saved["state"], obj.state_dict())


def _check_groups(step: int, saved: Mapping[str, Any], current: Mapping[str, Any]) -> None:
    before = [len(g["params"]) for g in saved.get("param_groups", [])]
    now = [len(g["params"]) for g in current.get("param_groups", [])]
    if before != now:
        raise ArchitectureMismatchError(
            f"Checkpoint step {step} holds an optimizer with parameter groups of sizes {before}, but the given "
            f"optimizer has {now}. Each saved moment belongs to one parameter; loading them into other parameters "
            "would corrupt training. Build the optimizer over the same parameters, in the same order and groups, "
            "as the run that saved it.",
            missing=[], unexpected=[], mismatched={"optimizer.param_groups": (tuple(before), tuple(now))},
            part="optimizer")


def set_rng_states(states: Mapping[str, Any]) -> None:
    """Put Python's, numpy's and torch's generators back where they were at save."""
    import numpy as np
    import torch

    if "python" in states:
        version, internal, gauss = states["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in states:
        np.random.set_state(tuple(states["numpy"]))
    if "torch" in states:
        torch.set_rng_state(states["torch"])
    cuda = states.get("cuda")
    if cuda:
        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if available >= len(cuda):
            torch.cuda.set_rng_state_all(cuda)
        else:
            warnings.warn(f"The checkpoint holds the RNG states of {len(cuda)} CUDA device(s), but this machine has "
                          f"{available}; they were not restored, so GPU randomness (dropout on the GPU) will not "
                          "repeat the saved run. Resume on a machine with the same GPUs for an exact resume.",
                          RNGStateWarning, stacklevel=4)
