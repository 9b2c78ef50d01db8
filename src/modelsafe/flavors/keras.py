"""Keras 3 / TensorFlow flavor: ``.keras`` models, and SavedModel inference endpoints.

A ``keras.Model`` (Sequential, Functional or subclassed) is stored as one ``model.keras``
member: Keras' own zip of ``config.json`` and ``model.weights.h5``, no pickle. Before the
artifact is committed the bytes are reloaded in this process with exactly the custom
objects a fresh process will get, so a model that could not load elsewhere fails at save,
naming its class.

Custom classes and functions (layers, losses, activations...) are found on the live
model, recorded by registered name, module and qualname, and listed in ``refs`` so that
:mod:`modelsafe._code` bundles those from ``__main__`` or local modules. At load they are
checked before anything is imported, imported through the trust gate, type-checked, and
passed to Keras as ``custom_objects``.

Lambda layers carry marshalled Python bytecode. The audit refuses them unless the caller
passed ``trust_code=True``, and even then only on the Python minor version that wrote
them; ``safe_mode=False`` is passed to Keras only in that trusted case.

SavedModel directories (see :mod:`modelsafe.flavors.keras_savedmodel`) are stored file by
file and served through one signature.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from modelsafe.errors import (EnvironmentMismatchError, FlavorError, FormatError, SaveError, UnsupportedModelError,
                              UntrustedContentError)
from modelsafe.flavors._base import ComponentSource, ComponentStore, Flavor, LoadOptions, SavedComponent
from modelsafe.flavors.keras_config import (KERAS_FAMILY, config_custom_names, gate_lambdas, lambda_layers,
                                            python_minor, read_keras_zip)

if TYPE_CHECKING:
    import keras

KERAS_MEMBER = "model.keras"
_CHUNK = 8 << 20


# ---------------------------------------------------------------------------------------
# custom objects on a live model
# ---------------------------------------------------------------------------------------


def _is_custom(module: str) -> bool:
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
            if obj.__name__ != "<lambda>" and not method and _is_custom(obj.__module__ or ""):
                found[keras.saving.get_registered_name(obj)] = obj
            continue
        if isinstance(obj, (list, tuple, set)):
            stack.extend(obj)
        elif isinstance(obj, dict):
            stack.extend(obj.values())
        elif hasattr(obj, "get_config") and hasattr(obj, "__dict__") and not isinstance(obj, type):
            cls = type(obj)
            if _is_custom(cls.__module__):
                found[keras.saving.get_registered_name(cls)] = cls
            stack.extend(vars(obj).values())
    return found


def _describe_custom(name: str, obj: Any) -> dict[str, str]:
    return {"name": name, "module": obj.__module__, "qualname": obj.__qualname__,
            "kind": "class" if isinstance(obj, type) else "function"}


def _check_importable(records: list[dict[str, str]]) -> None:
    problems = [r for r in records if "<locals>" in r["qualname"] or "<lambda>" in r["qualname"]]
    if problems:
        names = ", ".join(f"{r['module']}.{r['qualname']}" for r in problems)
        raise SaveError(
            f"The model uses {names}, defined inside a function, which no other process can import or rebuild "
            "from source. Move the definition to the top level of a module (or of the script) and save again.",
            classes=[r["qualname"] for r in problems])


# ---------------------------------------------------------------------------------------
# the flavor
# ---------------------------------------------------------------------------------------


class KerasFlavor(Flavor):
    name = "keras"
    version = 1

    def can_embed(self, obj: Any) -> bool:
        return _is_keras3_model(obj)

    # -- save ---------------------------------------------------------------------------
    def save(self, obj: Any, store: ComponentStore, options: Mapping[str, Any]) -> SavedComponent:
        if is_endpoint(obj):
            from modelsafe.flavors import keras_savedmodel

            return keras_savedmodel.save_endpoint(obj, store)
        model = _require_model(obj)
        custom = live_custom_objects(model)
        records = [_describe_custom(name, value) for name, value in sorted(custom.items())]
        _check_importable(records)
        with tempfile.TemporaryDirectory(prefix="modelsafe-keras-") as tmp:
            path = Path(tmp) / KERAS_MEMBER
            _write_keras(model, path)
            config, _ = read_keras_zip(path.read_bytes(), KERAS_MEMBER)
            _check_config_names(config, custom)
            lambdas = lambda_layers(config)
            _check_reload(model, path, custom, trusted=bool(lambdas), sample=options.get("sample"))
            with store.open(KERAS_MEMBER, size=path.stat().st_size) as stream, path.open("rb") as f:
                shutil.copyfileobj(f, stream, _CHUNK)
        data = {"format": "keras", "member": KERAS_MEMBER, **framework_versions(), "python": python_minor(),
                "custom_objects": records, "lambda_layers": lambdas}
        modules = {"keras", "numpy", "h5py"} | ({"tensorflow"} if "tensorflow" in sys.modules else set())
        modules |= {r["module"] for r in records if r["module"].split(".")[0] not in ("__main__", "__mp_main__")}
        cls = type(model)
        return SavedComponent(data=data, modules=modules, type_name=f"{cls.__module__}.{cls.__qualname__}",
                              refs={(r["module"], r["qualname"]) for r in records})

    # -- load ---------------------------------------------------------------------------
    def audit(self, source: ComponentSource, data: Mapping[str, Any], options: LoadOptions) -> None:
        if "safe_mode" in options.extra:
            raise ValueError("Invalid option `safe_mode`: modelsafe decides it from `trust_code`. Received: "
                             f"safe_mode={options.extra['safe_mode']!r}. Pass trust_code=True to allow Lambda layers.")
        if data.get("format") == "savedmodel":
            from modelsafe.flavors import keras_savedmodel

            keras_savedmodel.audit_endpoint(source, data, options)
            return
        where = f"{source.path}:{source.prefix}/{data.get('member', KERAS_MEMBER)}"
        config, _ = read_keras_zip(source.view(data.get("member", KERAS_MEMBER)), where)
        gate_lambdas(lambda_layers(config), data.get("python"), options, where)
        _audit_custom(config, data, options, where)

    def load(self, source: ComponentSource, data: Mapping[str, Any], options: LoadOptions) -> Any:
        if data.get("format") == "savedmodel":
            from modelsafe.flavors import keras_savedmodel

            return keras_savedmodel.load_endpoint(source, data, options)
        custom = {r["name"]: _import_custom(options, r) for r in data.get("custom_objects", ())}
        member = data.get("member", KERAS_MEMBER)
        with _temporary_copy(source.view(member)) as path:
            return load_keras_file(path, custom_objects=custom, compile=bool(options.extra.get("compile", False)),
                                   trusted=bool(data.get("lambda_layers")) and options.trust_code,
                                   saved_versions=data, where=f"{source.path}:{source.prefix}/{member}")

    # -- running ------------------------------------------------------------------------
    def predict(self, obj: Any, x: Any) -> Any:
        if is_endpoint(obj):
            return obj.predict(x)
        return obj.predict(x, verbose=0)

    def outputs(self, obj: Any, x: Any) -> dict[str, Any]:
        result = self.predict(obj, x)
        if isinstance(result, dict):
            return {f"predict.{key}": value for key, value in sorted(result.items())}
        if isinstance(result, (list, tuple)):
            return {f"predict.{i}": value for i, value in enumerate(result)}
        return {"predict": result}

    def device_info(self, obj: Any) -> dict[str, Any]:
        tf = sys.modules.get("tensorflow")
        if tf is None:
            return {}
        info: dict[str, Any] = {}
        try:
            build = tf.sysconfig.get_build_info()
            info["tensorflow_cuda"] = build.get("cuda_version")
            info["tensorflow_cudnn"] = build.get("cudnn_version")
            info["tensorflow_gpus"] = [d.name for d in tf.config.list_physical_devices("GPU")]
        except Exception:  # noqa: BLE001 - device facts are best effort
            pass
        return info


# ---------------------------------------------------------------------------------------
# save steps
# ---------------------------------------------------------------------------------------


def is_endpoint(obj: Any) -> bool:
    """A SavedModel endpoint (its module is imported only once one was opened)."""
    module = sys.modules.get("modelsafe.flavors.keras_savedmodel")
    return module is not None and isinstance(obj, module.SavedModelEndpoint)


def _is_keras3_model(obj: Any) -> bool:
    if "keras" not in sys.modules:
        return False
    import keras

    return isinstance(obj, keras.Model)


def _require_model(obj: Any) -> "keras.Model":
    cls = type(obj)
    type_name = f"{cls.__module__}.{cls.__qualname__}"
    if _is_keras3_model(obj):
        return obj
    roots = {c.__module__.split(".")[0] for c in cls.__mro__}
    if "tf_keras" in roots or (hasattr(obj, "save") and hasattr(obj, "get_config") and "keras" in roots):
        raise UnsupportedModelError(
            f"{type_name} is a Keras 2 (tf-keras) model, but this flavor saves Keras 3 models (keras "
            f"{_version('keras')}). Save it with model.save('model.h5') where it was built, then run "
            "ms.convert('model.h5', 'model.msafe', sample=...) here.", type_name=type_name)
    raise UnsupportedModelError(
        f"{type_name} is a TensorFlow object but not a keras.Model, so there is no portable format to save it "
        "in from memory. Export it with tf.saved_model.save(obj, 'exported') (give its tf.function an "
        "input_signature) and run ms.convert('exported', 'model.msafe', sample=...).", type_name=type_name)


def _write_keras(model: Any, path: Path) -> None:
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
    candidates.sort(key=lambda layer: not _is_custom(type(layer).__module__))  # custom classes first
    for layer in candidates:
        try:
            layer.get_config()
        except NotImplementedError:
            cls = type(layer)
            return f"{cls.__module__}.{cls.__qualname__}"
    return None


def _check_config_names(config: dict[str, Any], custom: Mapping[str, Any]) -> None:
    missing = sorted({f"{name} (layer {layer!r})" for layer, name in config_custom_names(config) if name not in custom})
    if missing:
        raise SaveError(
            f"The model config names custom classes modelsafe could not find on the model: {', '.join(missing)}. "
            "A fresh process could not rebuild them. Register them with "
            "@keras.saving.register_keras_serializable(package=...) and save again.", classes=missing)


def _check_reload(model: Any, path: Path, custom: Mapping[str, Any], *, trusted: bool, sample: Any = None) -> None:
    """Reload the written file as a fresh process would; raise SaveError naming the culprit."""
    import numpy as np

    try:
        with _quiet_warnings():
            reloaded = load_keras_file(path, custom_objects=dict(custom), compile=False, trusted=trusted,
                                       saved_versions=None, where="the model just written", raw=True)
    except Exception as exc:  # noqa: BLE001 - diagnosed below
        culprit = _find_unbuildable(model)
        what = f"the custom class {culprit}" if culprit else f"the {type(model).__name__} model"
        raise SaveError(
            f"The saved model would not load in a fresh process: Keras could not rebuild {what} from its config "
            f"({type(exc).__name__}: {_short(exc, 160)}). Give {culprit or 'each custom class'} a get_config() that "
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

    head = {k: v[:32] for k, v in sample.items()} if isinstance(sample, dict) else sample[:32]
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
    for layer in model._flatten_layers(include_self=True, recursive=True):
        cls = type(layer)
        if not _is_custom(cls.__module__):
            continue
        try:
            with _quiet_warnings():
                cls.from_config(layer.get_config())
        except Exception:  # noqa: BLE001 - the class that fails is the answer
            return f"{cls.__module__}.{cls.__qualname__}"
    return None


def framework_versions() -> dict[str, Any]:
    """Keras version and backend, and TensorFlow's version when it is loaded."""
    import keras

    tf = sys.modules.get("tensorflow")
    return {"keras_version": keras.__version__, "backend": keras.config.backend(),
            "tensorflow_version": getattr(tf, "__version__", None)}


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


# ---------------------------------------------------------------------------------------
# audit / load steps
# ---------------------------------------------------------------------------------------


def _audit_custom(config: dict[str, Any], data: Mapping[str, Any], options: LoadOptions, where: str) -> None:
    from modelsafe import _code

    records = {r["name"]: r for r in data.get("custom_objects", ())}
    unknown = sorted({f"{name} (layer {layer!r})" for layer, name in config_custom_names(config) if name not in records})
    if unknown:
        raise FormatError(
            f"{where} names custom classes the manifest does not record: {', '.join(unknown)}. The file was "
            "edited after saving or not written by modelsafe, so there is no trusted way to build them. "
            "Re-export the model from its source.", classes=unknown)
    for record in records.values():
        _code.check_symbol(options, record["module"], record["qualname"])


def _import_custom(options: LoadOptions, record: Mapping[str, str]) -> Any:
    from modelsafe import _code

    obj = _code.import_symbol(options, record["module"], record["qualname"])
    import keras

    expected = record.get("kind", "class")
    ok = (isinstance(obj, type) and issubclass(obj, _saveable_types(keras))) if expected == "class" else (
        isinstance(obj, types.FunctionType))
    if not ok:
        raise UntrustedContentError(
            f"{record['module']}.{record['qualname']} was recorded as a Keras custom {expected} but is a "
            f"{type(obj).__name__} here, so Keras would call something that is not a model part. Nothing was "
            "built. Check that the code on your path is the code the model was saved with.",
            globals=[f"{record['module']}.{record['qualname']}"])
    return obj


def _saveable_types(keras: Any) -> tuple[type, ...]:
    return (keras.layers.Layer, keras.Model, keras.losses.Loss, keras.metrics.Metric, keras.initializers.Initializer,
            keras.regularizers.Regularizer, keras.constraints.Constraint, keras.optimizers.Optimizer,
            keras.optimizers.schedules.LearningRateSchedule, keras.DTypePolicy)


def load_keras_file(path: Path, *, custom_objects: dict[str, Any], compile: bool, trusted: bool,
                    saved_versions: Mapping[str, Any] | None, where: str, raw: bool = False) -> Any:
    """``keras.saving.load_model`` with safe_mode off only when the caller trusted Lambda code."""
    import keras

    try:
        return keras.saving.load_model(path, custom_objects=custom_objects, compile=compile, safe_mode=not trusted)
    except Exception as exc:
        if raw:
            raise
        raise load_failure(exc, saved_versions or {}, where) from exc


def load_failure(exc: BaseException, saved: Mapping[str, Any], where: str) -> Exception:
    """A modelsafe error explaining why Keras could not rebuild a saved model."""
    current = framework_versions()
    old, new = saved.get("keras_version"), current["keras_version"]
    if old and old != new:
        return EnvironmentMismatchError(
            f"Keras {new} could not rebuild {where}, which Keras {old} wrote ({type(exc).__name__}: {_short(exc)}). "
            "Layers and their configs change between Keras versions. Install the saving version with "
            f"pip install 'keras=={old}', or re-export the model with Keras {new}.",
            saved=old, current=new, packages=["keras"])
    return FlavorError(
        f"Keras {new} could not rebuild {where} ({type(exc).__name__}: {_short(exc)}). The model may need custom "
        "code that changed since saving. Run `modelsafe doctor` on the artifact, or re-export the model.",
        reason=str(exc))


def _short(exc: BaseException, limit: int = 400) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextlib.contextmanager
def _temporary_copy(data: memoryview | bytes, suffix: str = ".keras") -> Iterator[Path]:
    """Keras' public loader reads a path: copy the (integrity-checked) member to a private temp file."""
    with tempfile.TemporaryDirectory(prefix="modelsafe-keras-") as tmp:
        path = Path(tmp) / f"model{suffix}"
        path.write_bytes(data)
        yield path


@contextlib.contextmanager
def _quiet_warnings() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
