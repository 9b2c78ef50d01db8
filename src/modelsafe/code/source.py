"""Custom code defined in ``__main__`` or a notebook, rebuilt as one standalone module.

A fresh process cannot import a class or function defined in a training script or a
notebook cell. This module writes down just what the saved objects need, as source:

* the definitions themselves (their own source text, found with :mod:`inspect`, or for
  notebook classes through their methods' cells in :mod:`linecache`);
* the definitions *they* use from the same namespace, recursively;
* the imports they use (``import numpy as np``, ``from sklearn.base import BaseEstimator``);
* simple constants (numbers, strings, tuples, dicts of those), compiled ``re`` patterns (as
  their source and flags) and small numpy arrays and scalars (stored beside the source as
  ``.npy`` members: see :data:`ARRAYS_NAME`).

Which names a definition uses is read from its bytecode (``LOAD_GLOBAL``) and from the
parts of its header that run at definition time (decorators, defaults, base classes,
class-level statements), so a local variable that happens to share a name with a big
global (``X``) is not mistaken for a dependency. Anything that cannot be written as
source (an open connection, an array, a lambda, a closure) is reported by name.
"""

from __future__ import annotations

import ast
import dis
import inspect
import linecache
import re
import sys
import textwrap
import types
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

Problem = tuple[str, str, str]

#: Constants longer than this (as source) are not inlined.
_MAX_CONSTANT = 10_000
#: numpy constants up to this size are bundled as ``.npy`` members; a larger one is named as a problem.
MAX_ARRAY_BYTES = 1 << 20
#: The name, in a bundled module's namespace, of the arrays stored beside its source (set before it runs).
ARRAYS_NAME = "__modelsafe_arrays__"
_FUTURE_FEATURES = ("annotations", "division", "generator_stop")


@dataclass(frozen=True)
class ExtractedModule:
    """The rebuilt module: its source, the names it defines, the other modules it imports."""

    source: str
    symbols: tuple[str, ...]
    imports: tuple[str, ...]
    #: numpy constants the source reads from :data:`ARRAYS_NAME` (name -> array).
    arrays: dict[str, Any] = field(default_factory=dict)


def type_label(value: Any) -> str:
    cls = type(value)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def definition_source(obj: Any) -> str | None:
    """The dedented source of a class or function, or None when it cannot be recovered."""
    try:
        return textwrap.dedent(inspect.getsource(obj))
    except (OSError, TypeError, IndexError):
        pass
    if isinstance(obj, type):
        return _class_source_from_methods(obj)
    return None


def _class_source_from_methods(cls: type) -> str | None:
    """Find ``class Name`` above one of its methods in the cell the method came from.

    Python 3.11's :func:`inspect.getsource` cannot find classes defined in notebook cells
    (the ``__main__`` module has no file), but their methods' code objects name the cell.
    """
    pattern = re.compile(rf"^(\s*)class\s+{re.escape(cls.__name__)}\b")
    for value in vars(cls).values():
        func = getattr(value, "__func__", value)
        code = getattr(inspect.unwrap(func), "__code__", None) if callable(func) else None
        if code is None:
            continue
        lines = linecache.getlines(code.co_filename)
        for start in range(min(code.co_firstlineno, len(lines)) - 1, -1, -1):
            if pattern.match(lines[start]):
                while start > 0 and lines[start - 1].lstrip().startswith("@"):
                    start -= 1
                return textwrap.dedent("".join(inspect.getblock(lines[start:])))
    return None


def _code_globals(code: types.CodeType) -> Iterator[str]:
    """Global names a code object (and the code nested in it) reads or writes."""
    for ins in dis.get_instructions(code):
        if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME", "STORE_GLOBAL", "DELETE_GLOBAL"):
            yield str(ins.argval)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_globals(const)


def _names(nodes: Iterable[ast.AST | None]) -> Iterator[str]:
    for node in nodes:
        if node is not None:
            yield from (n.id for n in ast.walk(node) if isinstance(n, ast.Name))


def _header_names(node: ast.AST) -> Iterator[str]:
    """Names evaluated when a ``def`` or ``class`` statement runs (not its body's locals)."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        args = node.args
        yield from _names([*node.decorator_list, *args.defaults, *args.kw_defaults, node.returns])
        yield from _names(a.annotation for a in [*args.posonlyargs, *args.args, *args.kwonlyargs,
                                                  args.vararg, args.kwarg] if a is not None)
    elif isinstance(node, ast.ClassDef):
        yield from _names([*node.decorator_list, *node.bases, *(k.value for k in node.keywords)])
        for stmt in node.body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                yield from _header_names(stmt)
            else:
                yield from _names([stmt])


def _functions(cls: type) -> Iterator[Any]:
    """The functions a class body defined (methods, static/class methods, property accessors)."""
    for value in vars(cls).values():
        for part in (value, getattr(value, "__func__", None), getattr(value, "fget", None),
                     getattr(value, "fset", None), getattr(value, "fdel", None)):
            if callable(part) and not isinstance(part, type):
                yield part
        if isinstance(value, type) and value.__qualname__.startswith(cls.__qualname__ + "."):
            yield from _functions(value)


def _own_code(func: Any, namespace: dict[str, Any]) -> types.CodeType | None:
    """The code of ``func`` if it was defined in ``namespace`` (seeing through decorators).

    Libraries wrap methods (scikit-learn wraps ``transform`` to set its output container);
    the wrapper's code and globals are the library's, not the user's.
    """
    try:
        func = inspect.unwrap(func)
    except ValueError:
        return None
    code = getattr(func, "__code__", None)
    if isinstance(code, types.CodeType) and getattr(func, "__globals__", None) is namespace:
        return code
    return None


def used_globals(obj: Any, source: str, namespace: dict[str, Any]) -> set[str]:
    """Module-level names of ``namespace`` the definition of ``obj`` needs."""
    tree = ast.parse(source)
    names = set(_header_names(tree.body[0])) if tree.body else set()
    functions = _functions(obj) if isinstance(obj, type) else iter([obj])
    for func in functions:
        code = _own_code(func, namespace)
        if code is not None:
            names.update(_code_globals(code))
    return names


def _literal(value: Any) -> str | None:
    """``repr(value)`` when it is a plain literal that reads back equal, else None."""
    if isinstance(value, (bool, int, float, complex, str, bytes, type(None), tuple, list, dict, set, frozenset)):
        text = repr(value)
        try:
            ok = len(text) <= _MAX_CONSTANT and ast.literal_eval(text) == value
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            ok = False
        return text if ok else None
    return None


def _is_numpy(value: Any) -> bool:
    """A numpy array or scalar (told by its type's module: numpy is not imported for this)."""
    cls = type(value)
    return cls.__module__ == "numpy" and hasattr(value, "dtype") and hasattr(value, "shape")


def importable_as(value: Any) -> tuple[str, str] | None:
    """``(module, qualname)`` under which ``value`` can be imported, if any."""
    module = getattr(value, "__module__", None)
    if not isinstance(module, str) or module not in sys.modules:
        return None
    for attr in (getattr(value, "__qualname__", None), getattr(value, "__name__", None)):
        if not isinstance(attr, str) or "<" in attr:
            continue
        target: Any = sys.modules[module]
        for part in attr.split("."):
            target = getattr(target, part, None)
        if target is value:
            return module, attr
    return None


class _Extractor:
    """Collects definitions, imports and constants for the names a module must provide."""

    def __init__(self, module: types.ModuleType, label: str) -> None:
        self.module = module
        self.label = label
        self.namespace = vars(module)
        self.defs: dict[str, tuple[int, str]] = {}
        self.aliases: dict[str, str] = {}
        self.imports: dict[str, str] = {}
        self.constants: dict[str, str] = {}
        self.arrays: dict[str, Any] = {}
        self.futures: set[str] = set()
        self.modules: set[str] = set()
        self.problems: list[Problem] = []
        self._seen: set[str] = set()

    def need(self, name: str, used_by: str) -> None:
        if name in self._seen or name.startswith("__") and name.endswith("__"):
            return
        if name not in self.namespace:
            return  # a builtin, or a name assigned only at run time
        self._seen.add(name)
        self._add(name, self.namespace[name], used_by)

    def _add(self, name: str, value: Any, used_by: str) -> None:
        if isinstance(value, types.ModuleType):
            self._import_module(name, value)
        elif type(value).__name__ == "_Feature" and type(value).__module__ == "__future__":
            if name in _FUTURE_FEATURES:
                self.futures.add(name)
        elif getattr(value, "__module__", None) == self.module.__name__ and callable(value):
            self._definition(name, value, used_by)
        elif (where := importable_as(value)) is not None:
            self._import_from(name, *where)
        elif (text := _literal(value)) is not None:
            self.constants[name] = text
        elif isinstance(value, re.Pattern):
            self._pattern(name, value, used_by)
        elif _is_numpy(value):
            self._array(name, value, used_by)
        else:
            self.problems.append((f"{self.label}.{name}", type_label(value),
                                  f"used by {used_by}, but a {type_label(value)} cannot be written as source; "
                                  "pass it to the saved object as an argument or attribute, or move the code "
                                  "into an importable module"))

    def _pattern(self, name: str, value: "re.Pattern[Any]", used_by: str) -> None:
        """A compiled pattern, rebuilt from its source and flags (``re.compile`` gives an equal pattern)."""
        text = f"_modelsafe_re.compile({value.pattern!r}, {value.flags})"
        if len(text) > _MAX_CONSTANT:
            self.problems.append((f"{self.label}.{name}", "re.Pattern", f"used by {used_by}, but its pattern is "
                                  f"{len(value.pattern):,} characters long, more than the {_MAX_CONSTANT:,} a "
                                  "bundled constant may have; compile it from a file the code reads, or pass it to "
                                  "the saved object as an attribute"))
            return
        self.imports["_modelsafe_re"] = "import re as _modelsafe_re"
        self.constants[name] = text

    def _array(self, name: str, value: Any, used_by: str) -> None:
        """A numpy array or scalar, stored beside the source as ``.npy`` (never pickled)."""
        import numpy as np

        array = np.asarray(value)
        problem = None
        if array.dtype.hasobject:
            problem = ("it holds Python objects (dtype object), which .npy stores only by pickling; give it a numeric "
                       "or string dtype")
        elif array.nbytes > MAX_ARRAY_BYTES:
            problem = (f"it is {array.nbytes / (1 << 20):.1f} MiB, more than the {MAX_ARRAY_BYTES >> 20} MiB a "
                       "bundled constant may have")
        if problem:
            self.problems.append((f"{self.label}.{name}", type_label(value), f"used by {used_by}, but {problem}; pass "
                                  "it to the saved object as an attribute (it is then saved with its state)"))
            return
        self.arrays[name] = array
        scalar = "[()]" if not isinstance(value, np.ndarray) else ""
        self.constants[name] = f"{ARRAYS_NAME}[{name!r}]{scalar}"

    def _import_module(self, name: str, value: types.ModuleType) -> None:
        self.modules.add(value.__name__)
        if value.__name__ == name:
            self.imports[name] = f"import {name}"
        else:
            self.imports[name] = f"import {value.__name__} as {name}"

    def _import_from(self, name: str, module: str, qualname: str) -> None:
        self.modules.add(module)
        head, _, rest = qualname.partition(".")
        if not rest:
            self.imports[name] = f"from {module} import {head}" + ("" if head == name else f" as {name}")
        else:
            self.imports[name] = f"from {module} import {head} as _modelsafe_{name}"
            self.constants[name] = f"_modelsafe_{name}.{rest}"

    def _definition(self, name: str, value: Any, used_by: str) -> None:
        qualname = getattr(value, "__qualname__", name)
        kind = "class" if isinstance(value, type) else "function"
        if "<lambda>" in qualname or "<locals>" in qualname:
            what = "a lambda" if "<lambda>" in qualname else "a nested function (closure)"
            self.problems.append((f"{self.label}.{name}", type_label(value),
                                  f"{what} cannot be bundled: define it with `def` at the top level of the "
                                  "script, or in an importable module"))
            return
        if qualname != name:  # an alias: `Scaler = MyScaler`
            self.need(qualname.split(".")[0], used_by)
            self.aliases[name] = qualname
            return
        source = definition_source(value)
        if source is None:
            self.problems.append((f"{self.label}.{name}", type_label(value),
                                  f"the source of {kind} {name!r} cannot be recovered (it was typed into an "
                                  "interactive prompt or `python -c`); define it in a script, notebook cell or "
                                  "module file"))
            return
        line = getattr(getattr(value, "__code__", None), "co_firstlineno", 0)
        if not line:
            try:
                line = inspect.getsourcelines(value)[1]
            except (OSError, TypeError):
                line = 0
        self.defs[name] = (line, source)
        for used in sorted(used_globals(value, source, self.namespace)):
            if used != name:
                self.need(used, name)

    def render(self, header: str) -> str:
        parts = [f"# {header}"]
        if self.futures:
            parts.append(f"from __future__ import {', '.join(sorted(self.futures))}")
        parts.extend(self.imports[n] for n in sorted(self.imports, key=lambda n: self.imports[n]))
        parts.extend(f"{n} = {self.constants[n]}" for n in sorted(self.constants))
        parts.extend(src.rstrip() + "\n" for _, src in sorted(self.defs.values()))
        parts.extend(f"{n} = {q}" for n, q in sorted(self.aliases.items()))
        return "\n".join(parts) + "\n"


def extract_module(module: types.ModuleType, names: Iterable[str], *, label: str,
                   header: str) -> tuple[ExtractedModule | None, list[Problem]]:
    """Rebuild the definitions of ``names`` (and what they use) from ``module`` as source.

    Returns the module and an empty list, or None and the problems found (all of them).
    """
    extractor = _Extractor(module, label)
    for name in names:
        top = name.split(".")[0]
        if top not in extractor.namespace:
            extractor.problems.append((f"{label}.{name}", "?", f"{name!r} is not defined in {label} any more; "
                                       "run the cell that defines it again before saving"))
            continue
        extractor.need(top, "the saved object")
    if extractor.problems:
        return None, extractor.problems
    source = extractor.render(header)
    try:
        compile(source, f"<modelsafe bundle of {label}>", "exec")
    except SyntaxError as exc:
        return None, [(label, "source", f"the rebuilt source does not compile ({exc}); move the code into a module")]
    symbols = tuple(sorted(set(extractor.defs) | set(extractor.aliases)))
    return ExtractedModule(source, symbols, tuple(sorted(extractor.modules)), extractor.arrays), []
