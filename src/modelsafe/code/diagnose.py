"""Save-time diagnosis: every part of an object that cannot be stored, found in one pass.

The walk follows what pickling would store: each object's ``__reduce_ex__`` state (so
an attribute a class already drops in ``__getstate__`` is never blamed), containers'
items, and the arguments of reductions. Each offender is reported as
``(attribute_path, type_name, reason)``, e.g.
``("model.connector", "sqlite3.Connection", "open database connections cannot be saved; ...")``.
"""

from __future__ import annotations

import io
import pickle
import socket
import threading
import types
from typing import Any, Callable, Iterator

from modelsafe.errors import UnsavableObjectError

Problem = tuple[str, str, str]
_ATOMIC = (str, bytes, bytearray, int, float, complex, bool, type(None), range, slice)
_DB_ROOTS = ("sqlite3", "_sqlite3", "psycopg2", "psycopg", "pymysql", "MySQLdb", "mysql", "sqlalchemy", "pymongo",
             "redis", "cx_Oracle", "oracledb", "duckdb", "pyodbc", "asyncpg")
_LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()), threading.Condition, threading.Semaphore,
               threading.Event)


def type_name(value: Any) -> str:
    cls = type(value)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _function_reason(value: Any) -> str | None:
    qualname = getattr(value, "__qualname__", "")
    if "<lambda>" in qualname:
        return ("lambda functions cannot be saved: use a named function defined with `def` at the top level "
                "of the script or of an importable module")
    if "<locals>" in qualname:
        return ("nested functions (closures) cannot be saved: define the function at the top level of a module "
                "and pass what it captured as arguments")
    return None


_REASONS: tuple[tuple[Callable[[Any], bool], str], ...] = (
    (lambda v: isinstance(v, types.ModuleType),
     "module objects cannot be saved; import the module in the code that uses it instead of storing it"),
    (lambda v: isinstance(v, (types.GeneratorType, types.CoroutineType, types.AsyncGeneratorType)),
     "generators hold a paused function and cannot be saved; store the values they produce (e.g. a list)"),
    (lambda v: isinstance(v, _LOCK_TYPES),
     "locks belong to the running process and cannot be saved; create a new one when the object is loaded"),
    (lambda v: isinstance(v, socket.socket),
     "open sockets cannot be saved; store the address and reconnect when the model is loaded"),
    (lambda v: type(v).__module__.split(".")[0] in _DB_ROOTS,
     "open database connections cannot be saved; store the connection settings and reconnect at load"),
    (lambda v: isinstance(v, io.IOBase) or type(v).__name__ in ("TextIOWrapper", "BufferedReader", "BufferedWriter"),
     "open file handles cannot be saved; store the file's path and open it when needed"),
    (lambda v: isinstance(v, threading.Thread),
     "threads belong to the running process and cannot be saved; start a new one after loading"),
)


def reason_for(value: Any, exc: BaseException | None = None) -> str:
    """Why ``value`` cannot be stored, in words a user can act on."""
    for matches, reason in _REASONS:
        try:
            if matches(value):
                return reason
        except Exception:  # noqa: BLE001 - a hostile __class__ must not break diagnosis
            continue
    if isinstance(value, (types.FunctionType, types.MethodType)) and (reason := _function_reason(value)):
        return reason
    return f"{type(exc).__name__}: {exc}" if exc is not None else "it cannot be pickled"


def _is_blocked(value: Any) -> bool:
    """Known-unsavable types, reported without trying to pickle them."""
    return any(_safe(matches, value) for matches, _ in _REASONS)


def _safe(matches: Callable[[Any], bool], value: Any) -> bool:
    try:
        return bool(matches(value))
    except Exception:  # noqa: BLE001
        return False


def _leaf_problem(value: Any) -> str | None:
    """Try to pickle a leaf (function, class, global); return a reason if it fails."""
    reason = _function_reason(value) if callable(value) else None
    if reason:
        return reason
    try:
        pickle.dumps(value, protocol=5, buffer_callback=lambda _: None)
    except Exception as exc:  # noqa: BLE001 - any failure is a finding
        return reason_for(value, exc)
    return None


def _state_children(path: str, state: Any) -> Iterator[tuple[str, Any]]:
    prefix = f"{path}." if path else ""
    if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):  # (dict, slots)
        yield from _state_children(path, state[0])
        yield from ((f"{prefix}{k}", v) for k, v in state[1].items())
    elif isinstance(state, dict):
        yield from ((f"{prefix}{k}" if isinstance(k, str) else f"{path}[{k!r}]", v) for k, v in state.items())
    elif state is not None:
        yield (path or "<root>", state)


def _children(path: str, value: Any) -> Iterator[tuple[str, Any]] | str:
    """What pickling ``value`` would store next, or the reason it cannot be stored."""
    if isinstance(value, dict):
        return ((f"{path}[{k!r}]", v) for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return ((f"{path}[{i}]", v) for i, v in enumerate(value))
    if isinstance(value, (type, types.FunctionType, types.BuiltinFunctionType, types.MethodType)):
        return _leaf_problem(value) or iter(())
    if type(value).__module__ == "numpy" and getattr(value, "dtype", None) is not None:
        return iter(()) if value.dtype.kind != "O" else ((f"{path}[{i}]", v) for i, v in enumerate(value.flat))
    try:
        reduced = value.__reduce_ex__(5)
    except Exception as exc:  # noqa: BLE001 - the object refuses to be pickled
        return reason_for(value, exc)
    if isinstance(reduced, str):
        return _leaf_problem(value) or iter(())
    parts = tuple(reduced) + (None,) * (5 - len(reduced))
    _, args, state, listitems, dictitems = parts[:5]
    found: list[tuple[str, Any]] = [(path or "<root>", a) for a in (args or ()) if not isinstance(a, type)]
    found.extend(_state_children(path, state))
    if listitems is not None:
        found.extend((f"{path}[{i}]", v) for i, v in enumerate(listitems))
    if dictitems is not None:
        found.extend((f"{path}[{k!r}]", v) for k, v in dictitems)
    return iter(found)


def find_unsavable(obj: Any, *, max_nodes: int = 200_000) -> list[Problem]:
    """Walk ``obj`` as pickling would; return ``(attribute_path, type_name, reason)`` for each offender."""
    problems: list[Problem] = []
    seen: set[int] = set()
    stack: list[tuple[str, Any]] = [("", obj)]
    while stack and len(seen) < max_nodes:
        path, value = stack.pop()
        if isinstance(value, _ATOMIC) or id(value) in seen:
            continue
        seen.add(id(value))
        if _is_blocked(value):
            problems.append((path or "<root>", type_name(value), reason_for(value)))
            continue
        children = _children(path, value)
        if isinstance(children, str):
            problems.append((path or "<root>", type_name(value), children))
            continue
        stack.extend(reversed(list(children)))
    return problems


def unsavable_error(problems: list[Problem]) -> UnsavableObjectError:
    lines = "\n".join(f"  - {path} ({kind}): {reason}" for path, kind, reason in problems)
    return UnsavableObjectError(
        f"Cannot save: {len(problems)} part(s) of the object cannot be stored:\n{lines}\n"
        "An artifact holding them would fail to load elsewhere, so nothing was written. Drop these attributes "
        "before saving (or implement __getstate__ to leave them out and __setstate__ to recreate them), and "
        "replace lambdas and closures with named functions in a module.",
        problems=problems,
    )
