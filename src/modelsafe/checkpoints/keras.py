"""Training state of a Keras 3 run in a checkpoint: model variables, optimizer variables, RNG, extra.

The model component itself is written by the Keras flavor (so ``ms.load`` gives the model
back); for :meth:`Checkpointer.restore` the checkpoint also holds every variable of the
model (weights, non-trainable state such as dropout seed generators) and of its compiled
optimizer as ``.npy`` members, in the order Keras lists them, with their paths and shapes
in one JSON member. Restoring matches variables by position (layer names depend on what
else a process built) and checks every shape before assigning anything. Python's and
numpy's global RNG states are restored too; ``extra`` must be JSON-able here. No torch is
needed.
"""

from __future__ import annotations

import json
import random
from typing import TYPE_CHECKING, Any, Callable, Mapping

from modelsafe.errors import FormatError, SaveError

if TYPE_CHECKING:
    from modelsafe.flavors._base import ComponentSource, ComponentStore

STATE_JSON = "state.json"


def _variables(model: Any) -> list[Any]:
    return list(model.variables)


def _optimizer(model: Any, given: Any) -> Any:
    optimizer = given if given is not None else getattr(model, "optimizer", None)
    return optimizer if optimizer is not None and getattr(optimizer, "built", False) else None


def training_state(model: Any, parts: Mapping[str, Any], extra: Any) -> dict[str, Any]:
    """Python's and numpy's RNG states and ``extra``, taken now; variables are read when written."""
    import numpy as np

    unsupported = [name for name in ("scheduler", "scaler") if parts.get(name) is not None]
    if unsupported:
        raise SaveError(f"{' and '.join(unsupported)}= apply to PyTorch; a Keras model keeps its learning-rate "
                        "schedule in its optimizer, which is saved with the model. Leave them out.",
                        parts=unsupported)
    try:
        extra_json = json.dumps(extra, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SaveError(f"extra= of a Keras checkpoint must be JSON-able ({exc}); it is stored as JSON. Pass numbers, "
                        "strings, lists and dicts.") from exc
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    if not getattr(model, "built", True):
        raise SaveError(f"The Keras model {type(model).__qualname__} is not built yet, so it has no weights to save. "
                        "Call it on data (or model.build(input_shape)) first.")
    return {"model": model, "optimizer": parts.get("optimizer"), "extra": extra_json,
            "rng": {"python": random.getstate(), "numpy": [name, np.array(keys), pos, has_gauss, gauss]}}


def write_state(store: "ComponentStore", state: Mapping[str, Any]) -> dict[str, Any]:
    """Write variables (``.npy``) and the rest (JSON); return the record kept in the manifest."""
    model = state["model"]
    record: dict[str, Any] = {"json": STATE_JSON, "framework": "keras"}
    groups = {"model": _variables(model)}
    optimizer = _optimizer(model, state["optimizer"])
    if optimizer is not None:
        groups["optimizer"] = list(optimizer.variables)
        record["optimizer_class"] = f"{type(optimizer).__module__}.{type(optimizer).__qualname__}"
    listing = {}
    for group, variables in groups.items():
        listing[group] = [{"path": v.path, "shape": list(v.shape), "dtype": str(v.dtype),
                           "member": store.write_array(f"{group}/{i}.npy", _numpy(v))} for i, v in enumerate(variables)]
    python_rng = state["rng"]["python"]
    name, keys, pos, has_gauss, gauss = state["rng"]["numpy"]
    body = {"variables": listing, "extra": state["extra"],
            "rng": {"python": [python_rng[0], list(python_rng[1]), python_rng[2]],
                    "numpy": [name, store.write_array("rng/numpy.npy", keys), pos, has_gauss, gauss]}}
    store.write(STATE_JSON, json.dumps(body).encode("utf-8"))
    record["parts"] = ["model"] + (["optimizer"] if optimizer is not None else [])
    return record


def _numpy(variable: Any) -> Any:
    import numpy as np

    return np.array(variable.numpy(), copy=True)


def plan_restore(step: int, path: str, source: "ComponentSource", record: Mapping[str, Any], model: Any,
                 parts: Mapping[str, Any]) -> tuple[Callable[[], None], Any]:
    """Check the given Keras model (and optimizer) against the checkpoint; return (apply, extra)."""
    from modelsafe.flavors.torch.report import compare

    for name in ("scheduler", "scaler"):
        if parts.get(name) is not None:
            raise ValueError(f"Invalid `{name}`: a Keras checkpoint holds no {name} (its schedule lives in the "
                             f"optimizer). Received: {name}={parts[name]!r}")
    try:
        body = json.loads(source.read(record["json"]))
        listing = body["variables"]
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"The Keras training state of checkpoint {path!r} is not readable ({exc}). Restore another "
                          "checkpoint or upgrade modelsafe.", path=path) from exc
    targets = {"model": _variables(model)}
    optimizer = parts.get("optimizer") or getattr(model, "optimizer", None)
    if "optimizer" in listing and optimizer is not None:
        if not optimizer.built:
            optimizer.build(model.trainable_variables)
        targets["optimizer"] = list(optimizer.variables)
    elif parts.get("optimizer") is not None:
        raise FormatError(f"Checkpoint step {step} ({path!r}) holds no optimizer state (the model's optimizer was not "
                          "built when it was saved). Restore without optimizer=.", path=path, step=step,
                          part="optimizer")
    for group, variables in targets.items():
        saved = {f"{group}[{i}]": tuple(v["shape"]) for i, v in enumerate(listing[group])}
        current = {f"{group}[{i}]": tuple(v.shape) for i, v in enumerate(variables)}
        compare(saved, current, model=type(model).__qualname__,
                saved_with=f"{len(listing[group])} {group} variables").raise_if_failed()
    values = {group: [source.read_array(v["member"]) for v in listing[group]] for group in targets}

    def apply() -> None:
        for group, variables in targets.items():
            for variable, value in zip(variables, values[group]):
                variable.assign(value.astype(variable.dtype, copy=False))
        _set_rng(source, body.get("rng") or {})

    return apply, json.loads(body.get("extra") or "null")


def _set_rng(source: "ComponentSource", rng: Mapping[str, Any]) -> None:
    import numpy as np

    if "python" in rng:
        version, internal, gauss = rng["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in rng:
        name, member, pos, has_gauss, gauss = rng["numpy"]
        np.random.set_state((name, source.read_array(member), pos, has_gauss, gauss))
