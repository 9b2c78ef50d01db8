"""TensorFlow SavedModel directories as inference-only components of the ``keras`` flavor.

Keras 3 cannot rebuild a model from a SavedModel (``tf.saved_model.save`` or Keras 2's
``model.save(dir)``, or Keras 3's ``model.export``). What it holds is a TensorFlow graph
with named signatures, so modelsafe keeps exactly that:

* **Storage.** Every file of the directory becomes a member under ``savedmodel/``,
  unchanged (the protobuf graph, the variables checkpoint, assets). Nothing is pickled.
* **Endpoint.** One signature serves predictions: the one asked for, else
  ``serving_default``, else ``serve``, else the only one. Several others and no choice is
  an error listing them.
* **Audit.** Before TensorFlow loads anything, the graph check ``scan`` also runs
  (:mod:`modelsafe.security._savedmodel`) lists every op that the endpoint, the load-time
  initializers or any object function could run and that reaches outside the model (files,
  Python callbacks, remote calls). Those need ``trust_code=True``.
* **Load.** ``tf.saved_model.load`` (which does not unpickle) from a private copy of the
  members that lives as long as the loaded object.
"""

from __future__ import annotations

import os
import tempfile
import weakref
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import tensorflow as tf

from modelsafe.errors import FlavorError, FormatError, UntrustedContentError
from modelsafe.flavors._base import (
    ComponentSource,
    ComponentStore,
    LoadOptions,
    SavedComponent,
)

PREFIX = "savedmodel"
_PREFERRED = ("serving_default", "serve")
_INIT_SIGNATURE = "__saved_model_init_op"
_CHUNK = 8 << 20

class SavedModelEndpoint(tf.Module):
    """One signature of a SavedModel, called with numpy and returning numpy.

    ``directory`` holds the SavedModel files (kept alive while this object lives).
    ``inputs`` maps each input name to ``(dtype, shape)``; ``outputs`` lists output keys.
    """

    def __init__(self, directory: str, loaded: Any, endpoint: str, inputs: Mapping[str, tuple[str, list[int]]],
                 outputs: list[str], tensorflow_version: str | None) -> None:
        super().__init__(name="savedmodel_endpoint")
        self.directory = directory
        self.loaded = loaded
        self.endpoint = endpoint
        self.input_specs = dict(inputs)
        self.output_keys = list(outputs)
        self.tensorflow_version = tensorflow_version

    def __repr__(self) -> str:
        return f"<SavedModelEndpoint {self.endpoint!r} inputs={list(self.input_specs)} outputs={self.output_keys}>"

    def predict(self, x: Any) -> Any:
        """Run the endpoint: ``x`` is an array (one input) or a dict by input name."""
        function = self.loaded.signatures[self.endpoint]
        names = list(self.input_specs)
        if not isinstance(x, Mapping):
            if len(names) != 1:
                raise ValueError(f"Invalid input: the endpoint {self.endpoint!r} takes {len(names)} inputs "
                                 f"{names}; expected a dict keyed by those names. Received: {type(x).__name__}")
            x = {names[0]: x}
        kwargs = {name: tf.constant(np.asarray(x[name]), dtype=self.input_specs[name][0]) for name in names}
        result = {key: value.numpy() for key, value in function(**kwargs).items()}
        return result[next(iter(result))] if len(result) == 1 else result


# ---------------------------------------------------------------------------------------
# reading a SavedModel directory (imports nothing from it)
# ---------------------------------------------------------------------------------------


def parse_saved_model(data: bytes, where: str) -> Any:
    """The SavedModel protobuf (parsing runs no graph code)."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    try:
        proto = saved_model_pb2.SavedModel.FromString(data)
    except DecodeError as exc:
        raise FormatError(f"{where} is not a readable SavedModel protobuf ({exc}): the file is damaged or not a "
                          "SavedModel. Re-export it with tf.saved_model.save.", path=where) from exc
    if len(proto.meta_graphs) != 1:
        raise FormatError(f"{where} holds {len(proto.meta_graphs)} meta graphs; modelsafe reads SavedModels with "
                          "exactly one (TF2 exports). Re-export with tf.saved_model.save or model.export.", path=where)
    return proto


def signature_names(proto: Any) -> list[str]:
    return sorted(k for k in proto.meta_graphs[0].signature_def if k != _INIT_SIGNATURE)


def choose_endpoint(names: list[str], requested: str | None, where: str) -> str:
    """The signature to serve: ``requested``, else serving_default, serve, or the only one."""
    if requested is not None:
        if requested not in names:
            raise FlavorError(f"{where} has no signature {requested!r}; it has {names}. Pass one of those as "
                              "endpoint=...", signatures=names)
        return requested
    for name in _PREFERRED:
        if name in names:
            return name
    if len(names) == 1:
        return names[0]
    if not names:
        raise FlavorError(
            f"{where} has no serving signature, so there is nothing to call for predictions. Re-export it with "
            "tf.saved_model.save(obj, dir, signatures=...) or a tf.function with an input_signature.", signatures=[])
    raise FlavorError(
        f"{where} has several signatures and none is named serving_default or serve: {', '.join(names)}. "
        "modelsafe cannot guess which one predicts. Choose it with endpoint='<name>' "
        "(e.g. modelsafe.flavors.keras.legacy.read_legacy(path, endpoint=...)).", signatures=names)


def signature_specs(proto: Any, endpoint: str) -> tuple[dict[str, tuple[str, list[int]]], list[str]]:
    """``({input: (dtype, shape)}, [output keys])`` of one signature."""
    signature = proto.meta_graphs[0].signature_def[endpoint]
    inputs = {name: (tf.dtypes.as_dtype(info.dtype).name, [d.size for d in info.tensor_shape.dim])
              for name, info in sorted(signature.inputs.items())}
    return inputs, sorted(signature.outputs)


def gate_effects(graph: bytes, trust_code: bool, where: str) -> None:
    """Refuse, unless ``trust_code``, a graph (``saved_model.pb``'s bytes) with effect ops: the check ``scan`` runs."""
    from modelsafe.security._savedmodel import effect_ops

    found = effect_ops(graph)
    if found and not trust_code:
        listed = "; ".join(f"{op} at {', '.join(places[:3])}" for op, places in sorted(found.items()))
        raise UntrustedContentError(
            f"Refusing to load {where}: its graph uses ops that act outside the model ({listed}). A SavedModel is "
            "a TensorFlow program; these ops can read or write files or call back into Python when it is loaded "
            "or run. Nothing was loaded. If you trust the file's source, pass trust_code=True.",
            globals=sorted(found), ops={op: places for op, places in found.items()})


# ---------------------------------------------------------------------------------------
# reading a directory, and the component
# ---------------------------------------------------------------------------------------


def _files(directory: Path) -> list[str]:
    names = []
    for root, dirs, files in os.walk(directory):
        for entry in [*dirs, *files]:
            if os.path.islink(os.path.join(root, entry)):
                raise FormatError(f"{os.path.join(root, entry)} is a symbolic link; a SavedModel directory must hold "
                                  "only its own files. Copy the real files in and retry.", path=str(directory))
        names.extend(Path(root, f).relative_to(directory).as_posix() for f in files)
    return sorted(names)


def open_directory(directory: str | os.PathLike[str], *, trust_code: bool, endpoint: str | None = None) -> SavedModelEndpoint:
    """Audit a SavedModel directory, load it, and wrap its serving signature."""
    path = Path(directory)
    where = str(path)
    graph = (path / "saved_model.pb").read_bytes()
    proto = parse_saved_model(graph, where)
    gate_effects(graph, trust_code, where)
    chosen = choose_endpoint(signature_names(proto), endpoint, where)
    inputs, outputs = signature_specs(proto, chosen)
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:  # noqa: BLE001 - explained below
        raise FlavorError(
            f"TensorFlow {tf.__version__} could not load the SavedModel {where} ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:400]}). It was written by TensorFlow "
            f"{proto.meta_graphs[0].meta_info_def.tensorflow_version or 'unknown'}; load it with that version, "
            "or re-export it.", path=where) from exc
    return SavedModelEndpoint(str(path), loaded, chosen, inputs, outputs,
                              proto.meta_graphs[0].meta_info_def.tensorflow_version or None)


def save_endpoint(obj: SavedModelEndpoint, store: ComponentStore) -> SavedComponent:
    """Store the SavedModel's files as members, unchanged."""
    directory = Path(obj.directory)
    files = _files(directory)
    for name in files:
        source = directory / name
        with store.open(f"{PREFIX}/{name}", size=source.stat().st_size) as stream, source.open("rb") as f:
            while chunk := f.read(_CHUNK):
                stream.write(chunk)
    data = {"format": "savedmodel", "files": files, "endpoint": str(obj.endpoint),
            "inputs": {str(k): [str(v[0]), [int(d) for d in v[1]]] for k, v in obj.input_specs.items()},
            "outputs": [str(k) for k in obj.output_keys], "saved_by_tensorflow": obj.tensorflow_version,
            "tensorflow_version": tf.__version__}
    return SavedComponent(data=data, modules={"tensorflow", "numpy"}, type_name="tensorflow.SavedModel")


def audit_endpoint(source: ComponentSource, data: Mapping[str, Any], options: LoadOptions) -> None:
    where = f"{source.path}:{source.prefix}/{PREFIX}"
    graph = source.read(f"{PREFIX}/saved_model.pb")
    proto = parse_saved_model(graph, where)
    gate_effects(graph, options.trust_code, where)
    choose_endpoint(signature_names(proto), data.get("endpoint"), where)


def load_endpoint(source: ComponentSource, data: Mapping[str, Any], options: LoadOptions) -> SavedModelEndpoint:
    """Copy the members to a private folder that lives as long as the returned object."""
    holder = tempfile.TemporaryDirectory(prefix="modelsafe-savedmodel-")
    root = Path(holder.name)
    for name in data.get("files", ()):
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.view(f"{PREFIX}/{name}"))
    try:
        endpoint = open_directory(root, trust_code=options.trust_code, endpoint=data.get("endpoint"))
    except BaseException:
        holder.cleanup()
        raise
    weakref.finalize(endpoint, holder.cleanup)
    return endpoint
