"""Static checks of Keras model configs (``.keras`` ``config.json``, ``.h5`` ``model_config``).

A Keras config runs code in three ways: ``Lambda`` layers (Python bytecode, in
Keras 2 as ``function``/``function_type``, in Keras 3 as a ``__lambda__`` object),
objects whose ``module`` names code outside Keras (Keras 3 imports that module), and
``"class_name": "function"`` entries that call a named function (for example
``keras.config.enable_unsafe_deserialization``, which switches safe mode off for the
rest of the load). Each is reported with its JSON path; nothing is imported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterator

from modelsafe.security._allowlist import classify

#: Keras namespaces whose *classes* (layers, models, optimizers...) are safe to build.
KERAS_MODULES = ("keras", "tf_keras", "tensorflow.keras", "tensorflow.python.keras")
#: Keras namespaces whose *functions* may be named in a config (activations, losses...).
KERAS_FUNCTION_MODULES = tuple(
    f"{root}{sep}{kind}" for root in ("keras", "tf_keras", "keras.src")
    for sep in (".",) for kind in ("activations", "losses", "metrics", "initializers", "regularizers",
                                   "constraints", "optimizers.schedules", "ops")
)
#: Function names that change how Keras loads (never legitimate inside a model config).
UNSAFE_FUNCTIONS = frozenset(["enable_unsafe_deserialization", "disable_interactive_logging", "set_floatx",
                              "load_model", "get_file", "register_keras_serializable", "deserialize_keras_object"])
#: Layers that call a function named in their config.
OP_LAMBDA_LAYERS = frozenset(["TFOpLambda", "SlicingOpLambda"])


@dataclass(frozen=True)
class ConfigIssue:
    severity: str
    kind: str
    where: str
    subject: str
    message: str


def _walk(node: Any, path: str) -> Iterator[tuple[str, Any]]:
    stack = [(path, node)]
    seen = 0
    while stack:
        where, value = stack.pop()
        seen += 1
        if seen > 1_000_000:
            return
        yield where, value
        if isinstance(value, dict):
            stack.extend((f"{where}.{k}", v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", v) for i, v in enumerate(value))


def _in(module: str, roots: tuple[str, ...]) -> bool:
    return any(module == r or module.startswith(r + ".") for r in roots)


def check_config(config: Any, *, keras3: bool) -> list[ConfigIssue]:
    """Every construct in a Keras config that could run code when the model is loaded."""
    issues: list[ConfigIssue] = []
    lambdas: list[str] = []
    for where, node in _walk(config, "$"):
        if not isinstance(node, dict) or any(where.startswith(p + ".") for p in lambdas):
            continue  # inside a Lambda layer already reported
        issue = _check_node(node, where, keras3)
        if issue is not None:
            issues.append(issue)
            if issue.kind == "keras-lambda":
                lambdas.append(where)
    return issues


def _check_node(node: dict[str, Any], where: str, keras3: bool) -> ConfigIssue | None:
    class_name = node.get("class_name")
    module = node.get("module")
    name = node.get("config") if isinstance(node.get("config"), str) else node.get("registered_name")
    if node.get("safe_mode") is False or "enable_unsafe_deserialization" in node:
        return ConfigIssue("critical", "keras-unsafe-mode", where, "safe_mode",
                           "the config tries to switch Keras safe mode off")
    if class_name == "Lambda" or class_name == "__lambda__" or node.get("function_type") == "lambda":
        label = (node.get("config") or {}).get("name") if isinstance(node.get("config"), dict) else None
        return ConfigIssue("critical", "keras-lambda", where, f"Lambda layer {label or where}",
                           "a Lambda layer stores Python bytecode that runs when the model is loaded or called")
    if class_name in OP_LAMBDA_LAYERS:
        return ConfigIssue("high", "keras-op-lambda", where, str(class_name),
                           "the layer calls the TensorFlow function named in its config")
    if class_name == "function" and isinstance(name, str):
        mod = module if isinstance(module, str) else ""
        qual = f"{mod}.{name}" if mod else name
        if name in UNSAFE_FUNCTIONS or classify(mod or "builtins", name) == "dangerous":
            return ConfigIssue("critical", "keras-function", where, qual,
                               "the config calls a function that can switch safety off or run code")
        if not _in(mod, KERAS_FUNCTION_MODULES):
            return ConfigIssue("high", "keras-custom-function", where, qual,
                               "the config names a function outside Keras' activations, losses and metrics")
        return None
    if keras3 and isinstance(module, str) and isinstance(class_name, str) and not _in(module, KERAS_MODULES):
        if classify(module, class_name) == "dangerous":
            return ConfigIssue("critical", "keras-module", where, f"{module}.{class_name}",
                               "the config names a dangerous module, which Keras imports while loading")
        return ConfigIssue("high", "keras-custom-object", where, f"{module}.{class_name}",
                           "the config names custom code, which Keras imports while loading")
    return None


def parse_config(raw: bytes | str) -> Any:
    """Parse a config document (JSON); raises ValueError when it is not JSON."""
    return json.loads(raw)
