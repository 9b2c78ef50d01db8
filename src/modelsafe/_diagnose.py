"""Save-time diagnosis: find every attribute that cannot be stored, in one pass."""

from __future__ import annotations

import pickle
from typing import Any

from modelsafe.errors import UnsavableObjectError

Problem = tuple[str, str, str]


def _type_name(obj: Any) -> str:
    cls = type(obj)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def find_unsavable(obj: Any, *, max_nodes: int = 100_000) -> list[Problem]:
    """Walk ``obj`` and return ``(attribute_path, type_name, reason)`` for each offender."""
    problems: list[Problem] = []
    seen: set[int] = set()
    stack: list[tuple[str, Any]] = [("", obj)]
    while stack and len(seen) < max_nodes:
        path, value = stack.pop()
        if id(value) in seen or isinstance(value, (str, bytes, int, float, bool, type(None))):
            continue
        seen.add(id(value))
        children = _children(path, value)
        if children is None:
            try:
                pickle.dumps(value, protocol=5, buffer_callback=lambda _: None)
            except Exception as exc:  # noqa: BLE001 - any failure is a finding
                problems.append((path or "<root>", _type_name(value), f"{type(exc).__name__}: {exc}"))
            continue
        stack.extend(reversed(children))
    return problems


def _children(path: str, value: Any) -> list[tuple[str, Any]] | None:
    """Sub-objects to inspect, or None when ``value`` is a leaf to test directly."""
    if isinstance(value, dict):
        return [(f"{path}[{k!r}]", v) for k, v in value.items()]
    if isinstance(value, (list, tuple)):
        return [(f"{path}[{i}]", v) for i, v in enumerate(value)]
    state = getattr(value, "__dict__", None)
    if isinstance(state, dict) and not isinstance(value, type) and type(value).__module__ != "builtins":
        prefix = f"{path}." if path else ""
        return [(f"{prefix}{k}", v) for k, v in state.items()]
    return None


def unsavable_error(problems: list[Problem]) -> UnsavableObjectError:
    lines = "\n".join(f"  - {path} ({type_name}): {reason}" for path, type_name, reason in problems)
    return UnsavableObjectError(
        f"Cannot save: {len(problems)} part(s) of the object cannot be stored:\n{lines}\n"
        "An artifact holding them would fail to load elsewhere. Drop these attributes before saving "
        "(or implement __getstate__ to leave them out), or replace lambdas with named functions.",
        problems=problems,
    )
