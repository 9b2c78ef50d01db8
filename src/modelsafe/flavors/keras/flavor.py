"""Keras 3 / TensorFlow flavor: ``.keras`` models, and SavedModel inference endpoints.

A ``keras.Model`` (Sequential, Functional or subclassed) is stored as one ``model.keras``
member: Keras' own zip of ``config.json`` and ``model.weights.h5``, no pickle. Before the
artifact is committed the bytes are reloaded in this process with exactly the custom
objects a fresh process will get (:mod:`modelsafe.flavors.keras.save`), so a model that
could not load elsewhere fails at save, naming its class.

Custom classes and functions (layers, losses, activations...) are found on the live
model, recorded by registered name, module and qualname, and listed in ``refs`` so that
:mod:`modelsafe.code.bundle` bundles those from ``__main__`` or local modules. At load they are
checked before anything is imported, imported through the trust gate, type-checked, and
passed to Keras as ``custom_objects``.

Lambda layers carry marshalled Python bytecode. The audit refuses them unless the caller
passed ``trust_code=True``, and even then only on the Python minor version that wrote
them; ``safe_mode=False`` is passed to Keras only in that trusted case.

SavedModel directories (see :mod:`modelsafe.flavors.keras.savedmodel`) are stored file by
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

from modelsafe.errors import FormatError, SchemaError, UnsupportedModelError, UntrustedContentError
from modelsafe.flavors._base import (
    ComponentSource,
    ComponentStore,
    Flavor,
    LoadOptions,
    SavedComponent,
)
from modelsafe.flavors.keras import save as keras_save
from modelsafe.flavors.keras.config import (
    gate_lambdas,
    lambda_layers,
    python_minor,
    read_keras_zip,
    unknown_custom_names,
)
from modelsafe.flavors.keras.files import framework_versions, load_keras_file

if TYPE_CHECKING:
    import keras

KERAS_MEMBER = "model.keras"
_CHUNK = 8 << 20


# ---------------------------------------------------------------------------------------
# the flavor
# ---------------------------------------------------------------------------------------


class KerasFlavor(Flavor):
    name = "keras"
    version = 1
    positional_inputs = True  # a list [a, b] is the inputs of a multi-input model
    #: ``compile=True``: compile the model at load; ``safe_mode=``: refused with the trust_code hint.
    load_options = frozenset({"compile", "safe_mode"})

    def can_embed(self, obj: Any) -> bool:
        return _is_keras3_model(obj)

    # -- save ---------------------------------------------------------------------------
    def save(self, obj: Any, store: ComponentStore, options: Mapping[str, Any]) -> SavedComponent:
        if is_endpoint(obj):
            from modelsafe.flavors.keras import savedmodel as keras_savedmodel
            return keras_savedmodel.save_endpoint(obj, store)
        model = _require_model(obj)
        custom = keras_save.live_custom_objects(model)
        records = [keras_save.describe_custom(name, value) for name, value in sorted(custom.items())]
        keras_save.check_importable(records)
        with tempfile.TemporaryDirectory(prefix="modelsafe-keras-") as tmp:
            path = Path(tmp) / KERAS_MEMBER
            keras_save.write_keras(model, path)
            config, _ = read_keras_zip(path.read_bytes(), KERAS_MEMBER)
            keras_save.check_config_names(config, custom)
            lambdas = lambda_layers(config)
            keras_save.check_reload(model, path, custom, trusted=bool(lambdas), sample=options.get("sample"))
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
            from modelsafe.flavors.keras import savedmodel as keras_savedmodel
            keras_savedmodel.audit_endpoint(source, data, options)
            return
        where = f"{source.path}:{source.prefix}/{data.get('member', KERAS_MEMBER)}"
        config, _ = read_keras_zip(source.view(data.get("member", KERAS_MEMBER)), where)
        gate_lambdas(lambda_layers(config), data.get("python"), options, where)
        _audit_functions(config, options, where)
        _audit_custom(config, data, options, where)

    def load(self, source: ComponentSource, data: Mapping[str, Any], options: LoadOptions) -> Any:
        if data.get("format") == "savedmodel":
            from modelsafe.flavors.keras import savedmodel as keras_savedmodel
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
        if isinstance(x, Mapping):
            _check_input_names(obj, x)
        return obj.predict(x, verbose=0)

    def to_onnx(self, obj: Any, schema: Mapping[str, Any] | None, sample: Any) -> Any:
        """The model as an ONNX graph, by Keras 3's own export (see :mod:`modelsafe.flavors.keras.onnx`)."""
        from modelsafe.flavors.keras.onnx import to_onnx

        return to_onnx(obj, schema, sample)

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


def _check_input_names(model: Any, x: Mapping[str, Any]) -> None:
    """A dict input's keys against the model's named inputs, before Keras sees them (its error is a bare ValueError)."""
    try:
        structure = model.input
        names = list(structure) if isinstance(structure, dict) else [t.name for t in model.inputs]
    except (AttributeError, ValueError, TypeError):
        return  # a subclassed or unbuilt model has no recorded inputs: Keras decides
    missing = [n for n in names if n not in x]
    if missing:
        raise SchemaError(
            f"Input is missing key(s) {missing}: the Keras model's inputs are named {names} and the dict has keys "
            f"{list(x)}. Keras cannot run it without them. Pass a dict with these keys (or a list in this order).",
            column=missing[0], missing=missing, expected=names, actual=list(x))


def is_endpoint(obj: Any) -> bool:
    """A SavedModel endpoint (its module is imported only once one was opened)."""
    module = sys.modules.get("modelsafe.flavors.keras.savedmodel")
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


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


# ---------------------------------------------------------------------------------------
# audit / load steps
# ---------------------------------------------------------------------------------------


def _audit_functions(config: dict[str, Any], options: LoadOptions, where: str) -> None:
    """Refuse configs that name functions which switch Keras' safety off or run code (scanner rules)."""
    from modelsafe.security._keras_config import check_config

    critical = [i for i in check_config(config, keras3=True) if i.kind in ("keras-unsafe-mode", "keras-function")]
    if critical and not options.trust_code:
        listed = "; ".join(f"{i.subject} at {i.where}" for i in critical)
        raise UntrustedContentError(
            f"Refusing to load {where}: its config names functions that can switch Keras' safe mode off or run "
            f"code ({listed}). A model config never needs them, so the file was crafted or tampered with. Nothing "
            "was deserialized. Do not use this file; re-export the model from its source.",
            globals=[i.subject for i in critical])


def _audit_custom(config: dict[str, Any], data: Mapping[str, Any], options: LoadOptions, where: str) -> None:
    from modelsafe.code import gate
    records = {r["name"]: r for r in data.get("custom_objects", ())}
    unknown = unknown_custom_names(config, records)
    if unknown:
        raise FormatError(
            f"{where} names custom classes the manifest does not record: {', '.join(unknown)}. The file was "
            "edited after saving or not written by modelsafe, so there is no trusted way to build them. "
            "Re-export the model from its source.", classes=unknown)
    for record in records.values():
        gate.check_symbol(options, record["module"], record["qualname"])


def _import_custom(options: LoadOptions, record: Mapping[str, str]) -> Any:
    from modelsafe.code import gate
    obj = gate.import_symbol(options, record["module"], record["qualname"])
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


@contextlib.contextmanager
def _temporary_copy(data: memoryview | bytes, suffix: str = ".keras") -> Iterator[Path]:
    """Keras' public loader reads a path: copy the (integrity-checked) member to a private temp file."""
    with tempfile.TemporaryDirectory(prefix="modelsafe-keras-") as tmp:
        path = Path(tmp) / f"model{suffix}"
        path.write_bytes(data)
        yield path
