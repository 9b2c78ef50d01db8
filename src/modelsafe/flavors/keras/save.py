"""Save-time checks of the ``keras`` flavor: which custom code a model uses, and whether
the bytes just written would rebuild the same model in a fresh process.

Custom classes and functions are found on the live model (its layers, their attributes,
the compiled loss), keyed by the name Keras records for them. The ``.keras`` file is then
reloaded here with exactly those objects, and its weights, and its outputs on the head of
the sample, are compared with the live model. Any failure is a :class:`SaveError` that
names the class at fault, so a save never produces an artifact that cannot load.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any, Mapping

from modelsafe.errors import SaveError
from modelsafe.flavors.keras.config import KERAS_FAMILY, unknown_custom_names


def is_custom(module: str) -> bool:
    """True for code outside Keras, builtins and numpy (the code a model may need bundled)."""
    root = module.split(".")[0]
    return root not in KERAS_FAMILY and root not in ("builtins", "numpy")


def live_custom_objects(model: Any) -> dict[str, Any]:
    """Registered name -> class or function, for every non-Keras object reachable from ``model``."""
    import keras

    found: dict[str, Any] = {}
    seen: set[int] = set()
    stack: list[Any] = [model]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, types.FunctionType):
            # A lambda is stored by Keras as bytecode (gated by trust_code), never as a reference.
            # Methods (``Layer.build``) reached through attributes are part of their class.
            method = "." in obj.__qualname__ and "<locals>" not in obj.__qualname__
            if obj.__name__ != "<lambda>" and not method and is_custom(obj.__module__ or ""):
                found[keras.saving.get_registered_name(obj)] = obj
            continue
        if isinstance(obj, (list, tuple, set)):
            stack.extend(obj)
        elif isinstance(obj, dict):
            stack.extend(obj.values())
        elif hasattr(obj, "get_config") and hasattr(obj, "__dict__") and not isinstance(obj, type):
            cls = type(obj)
            if is_custom(cls.__module__):
                found[keras.saving.get_registered_name(cls)] = cls
            stack.extend(vars(obj).values())
    return found


def describe_custom(name: str, obj: Any) -> dict[str, str]:
    return {"name": name, "module": obj.__module__, "qualname": obj.__qualname__,
            "kind": "class" if isinstance(obj, type) else "function"}


def check_importable(records: list[dict[str, str]]) -> None:
    problems = [r for r in records if "<locals>" in r["qualname"] or "<lambda>" in r["qualname"]]
    if problems:
        names = ", ".join(f"{r['module']}.{r['qualname']}" for r in problems)
        raise SaveError(
            f"The model uses {names}, defined inside a function, which no other process can import or rebuild "
            "from source. Move the definition to the top level of a module (or of the script) and save again.",
            classes=[r["qualname"] for r in problems])


def write_keras(model: Any, path: Path) -> None:
    if not model.built:
        raise SaveError(
            f"The {type(model).__name__} model has not been built, so it has no weights to save. Call it once on "
            "a batch of input (or model.build(input_shape)) and save again.", type_name=type(model).__qualname__)
    try:
        model.save(path)
    except NotImplementedError as exc:
        culprit = _find_without_config(model) or type(model).__qualname__
        raise SaveError(
            f"Keras cannot write the config of {culprit}: it was created with constructor arguments Keras cannot "
            "serialize and its class does not implement get_config(), so a fresh process could not rebuild it. "
            f"Implement {culprit.rsplit('.', 1)[-1]}.get_config() returning every constructor argument (and "
            "from_config() for arguments that are not plain JSON values), then save again.",
            culprit=culprit, reason=str(exc)) from exc


def _find_without_config(model: Any) -> str | None:
    candidates = list(model._flatten_layers(include_self=True, recursive=True))
    candidates.sort(key=lambda layer: not is_custom(type(layer).__module__))  # custom classes first
    for layer in candidates:
        try:
            layer.get_config()
        except NotImplementedError:
            cls = type(layer)
            return f"{cls.__module__}.{cls.__qualname__}"
    return None


def check_config_names(config: dict[str, Any], custom: Mapping[str, Any]) -> None:
    missing = unknown_custom_names(config, custom)
    if missing:
        raise SaveError(
            f"The model config names custom classes modelsafe could not find on the model: {', '.join(missing)}. "
            "A fresh process could not rebuild them. Register them with "
            "@keras.saving.register_keras_serializable(package=...) and save again.", classes=missing)


def check_reload(model: Any, path: Path, custom: Mapping[str, Any], *, trusted: bool, sample: Any = None) -> None:
    """Reload the written file as a fresh process would; raise SaveError naming the culprit."""
    import numpy as np

    from modelsafe.flavors.keras.files import load_keras_file, quiet_warnings, short

    try:
        with quiet_warnings():
            reloaded = load_keras_file(path, custom_objects=dict(custom), compile=False, trusted=trusted,
                                       saved_versions=None, where="the model just written", raw=True)
    except Exception as exc:  # noqa: BLE001 - diagnosed below
        culprit = _find_unbuildable(model)
        what = f"the custom class {culprit}" if culprit else f"the {type(model).__name__} model"
        raise SaveError(
            f"The saved model would not load in a fresh process: Keras could not rebuild {what} from its config "
            f"({type(exc).__name__}: {short(exc, 160)}). Give {culprit or 'each custom class'} a get_config() that "
            "returns every constructor argument (and accepts **kwargs in __init__), then save again.",
            culprit=culprit, reason=str(exc)) from exc
    before, after = model.weights, reloaded.weights
    paths_before = [str(getattr(v, "path", v.name)) for v in before]
    if len(before) != len(after):
        raise SaveError(
            f"The saved model would reload with {len(after)} weights instead of {len(before)}: some layers create "
            f"their weights outside build() ({', '.join(paths_before[:8])}...). Create weights in build() so Keras "
            "can restore them, then save again.", expected=len(before), actual=len(after))
    for name, old, new in zip(paths_before, before, after):
        if not np.array_equal(old.numpy(), new.numpy()):
            raise SaveError(
                f"Weight {name!r} does not reload with the value it has now: the layer that owns it rebuilds "
                "differently from its config. Make its get_config()/build() reproduce the same weights, then "
                "save again.", weight=name)
    if sample is not None:
        _check_same_outputs(model, reloaded, sample)


def _flat_outputs(result: Any) -> list[Any]:
    if isinstance(result, dict):
        return [result[k] for k in sorted(result)]
    return list(result) if isinstance(result, (list, tuple)) else [result]


def _check_same_outputs(model: Any, reloaded: Any, sample: Any) -> None:
    """The reloaded model must predict what the live one does on (the head of) the sample."""
    import numpy as np

    if isinstance(sample, dict):
        head: Any = {k: v[:32] for k, v in sample.items()}
    elif isinstance(sample, (list, tuple)) and sample and all(hasattr(v, "shape") for v in sample):
        head = type(sample)(v[:32] for v in sample)  # several inputs: the first rows of each
    else:
        head = sample[:32]
    try:
        expected = _flat_outputs(model.predict(head, verbose=0))
    except Exception:  # noqa: BLE001 - a sample the model rejects is reported by the sample step
        return
    actual = _flat_outputs(reloaded.predict(head, verbose=0))
    for i, (old, new) in enumerate(zip(expected, actual)):
        old, new = np.asarray(old), np.asarray(new)
        if old.shape != new.shape or not np.allclose(old, new, rtol=1e-5, atol=1e-6, equal_nan=True):
            diff = float(np.max(np.abs(old - new))) if old.shape == new.shape else float("nan")
            raise SaveError(
                f"The model reloaded from the bytes just written predicts differently on the sample (output {i}, "
                f"largest difference {diff:.4g}) although every weight matches: some layer keeps state outside "
                "its get_config() and weights (e.g. an attribute set after construction). A fresh process would "
                "compute something else. Put that state in get_config() or in a weight, then save again.",
                output=i, max_difference=diff)


def _find_unbuildable(model: Any) -> str | None:
    from modelsafe.flavors.keras.files import quiet_warnings

    for layer in model._flatten_layers(include_self=True, recursive=True):
        cls = type(layer)
        if not is_custom(cls.__module__):
            continue
        try:
            with quiet_warnings():
                cls.from_config(layer.get_config())
        except Exception:  # noqa: BLE001 - the class that fails is the answer
            return f"{cls.__module__}.{cls.__qualname__}"
    return None
