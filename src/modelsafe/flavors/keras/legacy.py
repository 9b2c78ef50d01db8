"""Reading legacy Keras / TensorFlow files for ``ms.convert``.

:func:`read_legacy` turns a file or folder into an object the ``keras`` flavor saves:

* ``.h5`` / ``.hdf5`` written by Keras 2, tf-keras or Keras 3 (legacy H5): the model
  config is read from the HDF5 attributes first (h5py runs no code), Lambda layers are
  refused unless ``trust_code=True``, then Keras 3 rebuilds the model.
* ``.keras`` archives. Those written by Keras 2.13-2.15 are detected from their
  ``metadata.json``; their config is migrated where Keras 3 renamed things
  (``batch_input_shape``). When Keras 3 still cannot rebuild one, the error says which
  version wrote it and how to migrate.
* SavedModel directories (``tf.saved_model.save``, Keras 2 ``model.save(dir)``, Keras 3
  ``model.export``): an inference-only endpoint (see :mod:`modelsafe.flavors.keras.savedmodel`).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import platform
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from modelsafe.errors import FlavorError, FormatError
from modelsafe.flavors.keras.config import (
    gate_lambdas,
    lambda_layers,
    read_keras_zip,
    walk_config,
)

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_MIGRATION = (
    "To migrate it: in an environment with the Keras that wrote it (pip install 'tensorflow=={tf}', which "
    "bundles Keras {keras}), load it and export it with tf.saved_model.save(model, 'exported'), then run "
    "ms.convert('exported', ...) here for an inference-only model; or rebuild the model with Keras 3 layers "
    "and load its weights."
)


def read_legacy(path: str | os.PathLike[str], *, trusted: Iterable[str] = (), trust_code: bool = False,
                endpoint: str | None = None) -> Any:
    """Open a legacy Keras/TensorFlow model file or SavedModel directory safely.

    Parameters
    ----------
    path
        A ``.h5``/``.hdf5`` file, a ``.keras`` archive, or a SavedModel directory.
    trusted
        Accepted for the common ``convert`` signature; Keras files hold no pickle.
    trust_code
        Allow Lambda layers (Python bytecode) and SavedModel ops that act outside the model.
    endpoint
        The SavedModel signature to serve (default: serving_default, serve, or the only one).

    Returns
    -------
    keras.Model or SavedModelEndpoint
        An object ``ms.save`` stores with the ``keras`` flavor.

    Examples
    --------
    >>> from modelsafe.flavors.keras.legacy import read_legacy   # doctest: +SKIP
    >>> model = read_legacy("model.h5")                          # doctest: +SKIP
    """
    p = Path(path)
    if p.is_dir():
        if (p / "saved_model.pb").is_file():
            from modelsafe.flavors.keras.savedmodel import open_directory

            return open_directory(p, trust_code=trust_code, endpoint=endpoint)
        raise FormatError(f"{p} is a folder without saved_model.pb, so it is not a TensorFlow SavedModel. Pass the "
                          "SavedModel folder itself, or a .h5/.keras file.", path=str(p))
    if not p.is_file():
        raise FormatError(f"{p} does not exist. Pass the path of a .h5/.keras file or a SavedModel folder.", path=str(p))
    with p.open("rb") as f:
        head = f.read(8)
    if head == _HDF5_SIGNATURE:
        return read_h5(p, trust_code=trust_code)
    if zipfile.is_zipfile(p):
        return read_keras(p, trust_code=trust_code)
    raise FormatError(f"{p} is neither an HDF5 file, a .keras archive nor a SavedModel folder, so it is not a Keras "
                      "model this reader knows. Check the path.", path=str(p))


def legacy_lambda_layers(config: Any) -> list[str]:
    """Lambda layers in a Keras 2 config, where classes carry no module."""
    found = lambda_layers(config) if isinstance(config, dict) else []
    for layer, node in walk_config(config):
        if node.get("class_name") in ("Lambda", "__lambda__") and layer not in found:
            found.append(layer)
    return found


# ---------------------------------------------------------------------------------------
# HDF5
# ---------------------------------------------------------------------------------------


def read_h5_header(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """``(model config, {keras_version, backend})`` from the HDF5 attributes; runs nothing."""
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            attrs = {k: _text(h5.attrs[k]) for k in ("model_config", "keras_version", "backend") if k in h5.attrs}
    except OSError as exc:
        raise FormatError(f"{path} is not a readable HDF5 file ({exc}). Re-export the model.", path=str(path)) from exc
    if "model_config" not in attrs:
        raise FormatError(
            f"{path} holds weights only (model.save_weights), not a model: there is no architecture to rebuild. "
            "Build the model in code, call model.load_weights(path), and save that model with ms.save.",
            path=str(path))
    config = json.loads(attrs.pop("model_config"))
    return config, attrs


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def read_h5(path: Path, *, trust_code: bool) -> Any:
    """A Keras 3 model rebuilt from a legacy H5 file (Lambda layers only when trusted)."""
    import keras

    config, info = read_h5_header(path)
    lambdas = legacy_lambda_layers(config)
    gate_lambdas(lambdas, None, None, str(path), trust_code=trust_code)
    with _with_suffix(path, (".h5", ".hdf5")) as local, warnings.catch_warnings():
        # Keras 2 configs pass input_shape to layers; Keras 3 warns about its own API, not the user's.
        warnings.filterwarnings("ignore", message="Do not pass an `input_shape`", category=UserWarning)
        try:
            return keras.saving.load_model(local, compile=False, safe_mode=not (lambdas and trust_code))
        except Exception as exc:  # noqa: BLE001 - explained below
            raise _legacy_failure(path, exc, info.get("keras_version"), lambdas) from exc


# ---------------------------------------------------------------------------------------
# .keras archives (Keras 3, or Keras 2.13-2.15)
# ---------------------------------------------------------------------------------------


def read_keras(path: Path, *, trust_code: bool) -> Any:
    """A Keras 3 model from a ``.keras`` archive, migrating Keras 2 configs where needed."""
    import keras

    raw = path.read_bytes()
    config, metadata = read_keras_zip(raw, str(path))
    version = str(metadata.get("keras_version", "unknown"))
    lambdas = legacy_lambda_layers(config)
    gate_lambdas(lambdas, None, None, str(path), trust_code=trust_code)
    if version.startswith(("1.", "2.")):
        raw = _rewrite_config(raw, migrate_keras2_config(config))
    with tempfile.TemporaryDirectory(prefix="modelsafe-keras-") as tmp:
        local = Path(tmp) / "model.keras"
        local.write_bytes(raw)
        try:
            return keras.saving.load_model(local, compile=False, safe_mode=not (lambdas and trust_code))
        except Exception as exc:  # noqa: BLE001 - explained below
            raise _legacy_failure(path, exc, version, lambdas) from exc


def migrate_keras2_config(config: Any) -> Any:
    """The config with Keras 2 names Keras 3 renamed: ``batch_input_shape`` of InputLayer
    becomes ``batch_shape``; other layers drop it (their InputLayer already carries it)."""
    if isinstance(config, list):
        return [migrate_keras2_config(item) for item in config]
    if not isinstance(config, dict):
        return config
    out = {key: migrate_keras2_config(value) for key, value in config.items()}
    inner = out.get("config")
    if "class_name" in out and isinstance(inner, dict) and "batch_input_shape" in inner:
        shape = inner.pop("batch_input_shape")
        if out["class_name"] == "InputLayer":
            inner.setdefault("batch_shape", shape)
    return out


def _rewrite_config(raw: bytes, config: Any) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(raw)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = json.dumps(config).encode("utf-8") if info.filename == "config.json" else src.read(info)
            dst.writestr(info, data)
    return out.getvalue()


def _legacy_failure(path: Path, exc: BaseException, version: str | None, lambdas: list[str]) -> Exception:
    import keras
    import tensorflow as tf

    reason = " ".join(str(exc).split())[:500]
    if lambdas and any(word in reason for word in ("marshal", "code object", "bad marshal")):
        return FlavorError(
            f"{path}: the bytecode of Lambda layer(s) {lambdas} cannot be read by this Python "
            f"{platform.python_version()} ({reason}): it was written by another Python version (or damaged), and "
            "bytecode does not carry across versions. Load it with the Python that wrote it and replace the "
            "Lambda with a registered custom layer, then save again.", path=str(path), layers=lambdas)
    if version and version.startswith(("1.", "2.")):
        return FormatError(
            f"{path} was written by Keras {version} and Keras {keras.__version__} cannot rebuild it "
            f"({type(exc).__name__}: {reason}). Keras 3 removed or changed some Keras 2 layers and configs. "
            + _MIGRATION.format(tf=_tf_for(version), keras=version), path=str(path), written_by=version)
    return FlavorError(
        f"Keras {keras.__version__} (TensorFlow {tf.__version__}) could not rebuild {path}, written by Keras "
        f"{version or 'unknown'} ({type(exc).__name__}: {reason}). If it uses custom layers, import the module "
        "that defines and registers them (@keras.saving.register_keras_serializable) before converting.",
        path=str(path), written_by=version)


def _tf_for(keras_version: str) -> str:
    parts = keras_version.split(".")
    return f"{parts[0]}.{parts[1]}.*" if len(parts) > 1 else keras_version


@contextlib.contextmanager
def _with_suffix(path: Path, suffixes: tuple[str, ...]) -> Iterator[Path]:
    """Keras picks the reader by file suffix: copy to a private temp file when it differs."""
    if path.suffix.lower() in suffixes:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="modelsafe-keras-") as tmp:
        local = Path(tmp) / f"model{suffixes[0]}"
        local.write_bytes(path.read_bytes())
        yield local
