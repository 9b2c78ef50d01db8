"""Reading Keras model configs without importing anything from them.

Used by the audit of the ``keras`` flavor and by the legacy readers: which serialized
objects a config names, which layers hold Python bytecode (Lambda), and the trust gate
for that bytecode. Imports neither Keras nor TensorFlow.
"""

from __future__ import annotations

import io
import json
import platform
import zipfile
from typing import TYPE_CHECKING, Any, Iterator

from modelsafe.errors import (
    EnvironmentMismatchError,
    FormatError,
    UntrustedContentError,
)

if TYPE_CHECKING:
    from modelsafe.flavors._base import LoadOptions

#: Packages whose classes Keras resolves itself from a config (never recorded as custom code).
KERAS_FAMILY = ("keras", "tf_keras")


# ---------------------------------------------------------------------------------------


def read_keras_zip(data: bytes | memoryview, where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(config, metadata)`` of a ``.keras`` zip held in memory; imports nothing."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = set(zf.namelist())
            if "config.json" not in names:
                raise FormatError(
                    f"{where} has no config.json: it is not a Keras 3 .keras archive, so the model cannot be "
                    "rebuilt. Re-export the model with model.save('model.keras').", path=where)
            config = json.loads(zf.read("config.json"))
            metadata = json.loads(zf.read("metadata.json")) if "metadata.json" in names else {}
    except (zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise FormatError(f"{where} is not a readable .keras archive ({exc}): the file is damaged. Re-export "
                          "the model from its source.", path=where) from exc
    if not isinstance(config, dict):
        raise FormatError(f"{where}: config.json is not a JSON object. Re-export the model.", path=where)
    return config, metadata if isinstance(metadata, dict) else {}


def walk_config(node: Any, layer: str = "<model>") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every serialized object in a Keras config (depth first, in order), with its layer's name.

    Iterative, so a deeply nested (hostile) config cannot exhaust the interpreter's stack.
    """
    stack: list[tuple[Any, str]] = [(node, layer)]
    while stack:
        item, owner = stack.pop()
        if isinstance(item, list):
            stack.extend((child, owner) for child in reversed(item))
            continue
        if not isinstance(item, dict):
            continue
        if "class_name" in item:
            inner = item.get("config")
            name = inner.get("name") if isinstance(inner, dict) else None
            if isinstance(name, str) and item.get("class_name") not in ("DTypePolicy", "__keras_tensor__"):
                owner = name
            yield owner, item
        stack.extend((child, owner) for child in reversed(list(item.values())))


def lambda_layers(config: dict[str, Any]) -> list[str]:
    """Names of the layers that hold Python bytecode (Lambda layers, serialized lambdas)."""
    found: list[str] = []
    for layer, node in walk_config(config):
        class_name = node.get("class_name")
        is_lambda = class_name == "__lambda__" or (class_name == "Lambda" and is_keras_module(node.get("module")))
        if is_lambda and layer not in found:
            found.append(layer)
    return found


def config_custom_names(config: dict[str, Any]) -> list[tuple[str, str]]:
    """``(layer, registered name)`` of every class in the config that Keras cannot resolve itself."""
    names = []
    for layer, node in walk_config(config):
        class_name = node.get("class_name")
        if not isinstance(class_name, str) or class_name.startswith("__") or class_name == "function":
            continue
        if not is_keras_module(node.get("module")):
            names.append((layer, str(node.get("registered_name") or class_name)))
    return names


def unknown_custom_names(config: dict[str, Any], known: Any) -> list[str]:
    """``"Name (layer 'x')"`` for each custom class in the config whose name is not in ``known``."""
    return sorted({f"{name} (layer {layer!r})" for layer, name in config_custom_names(config) if name not in known})


def is_keras_module(module: Any) -> bool:
    return isinstance(module, str) and module.split(".")[0] in KERAS_FAMILY


def python_minor() -> str:
    return ".".join(platform.python_version_tuple()[:2])



def gate_lambdas(layers: list[str], saved_python: str | None, options: "LoadOptions | None", where: str, *,
                 trust_code: bool | None = None) -> None:
    """Refuse Lambda bytecode unless trusted, and on another Python minor version even then."""
    if not layers:
        return
    trusted = options.trust_code if trust_code is None else trust_code
    named = ", ".join(repr(name) for name in layers)
    if not trusted:
        raise UntrustedContentError(
            f"Refusing to load {where}: Lambda layer(s) {named} hold marshalled Python bytecode, which runs in "
            "this process when the model is rebuilt. Bytecode from an untrusted file can do anything your "
            "account can. Nothing was deserialized. If you trust the file's source, load it with "
            "trust_code=True (CLI: --trust-code); better, replace the Lambda with a registered custom layer.",
            layers=list(layers), globals=[f"Lambda:{name}" for name in layers])
    current = python_minor()
    if saved_python and saved_python != current:
        raise EnvironmentMismatchError(
            f"{where}: Lambda layer(s) {named} hold Python {saved_python} bytecode, and this is Python {current}. "
            "Bytecode does not carry across Python minor versions: rebuilding the layer would crash or compute "
            f"something else. Load the model with Python {saved_python}, or rebuild the Lambda as a registered "
            "custom layer there and save again.", layers=list(layers), saved=saved_python, current=current,
            packages=["python"])
