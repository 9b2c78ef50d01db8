"""Custom code the saved objects need: bundled at save, trust-gated and isolated at load.

Where code comes from (SPEC, "Where code comes from at load"):

* **Installed distributions** are referenced by import path; nothing is bundled.
* **``__main__`` and notebooks**: the definitions the objects use are rebuilt as one
  module (:mod:`modelsafe.code.source`) and bundled.
* **Local modules** (importable at save, not part of an installed distribution, e.g.
  ``features.py`` beside the training script) are bundled whole with a hash of their
  source, *and* referenced by name: at load an importable copy is used (``code="auto"``),
  and the load reports it when its source differs from the bundled one.

Bundled code runs only with ``trust_code=True``. It is imported under module names
unique to its content (``_modelsafe_code_<hash>.<module>``), ``sys.path`` is never
touched, and two artifacts bundling different ``features.py`` coexist in one process.
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import os
import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Protocol

from modelsafe.code.modules import (
    BUNDLED_SOURCES,
    KIND_LOCAL,
    KIND_MAIN,
    module_file_source,
    module_kind,
    sha256_text,
)
from modelsafe.errors import SaveError

if TYPE_CHECKING:
    pass


class MemberStore(Protocol):
    """Where bundled sources are written: a component's member store (``flavors._base.ComponentStore``)."""

    def write(self, relname: str, data: bytes) -> str: ...

    def member_name(self, relname: str) -> str: ...


# ---------------------------------------------------------------------------------------
# save: which modules to bundle, and their source
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Entry:
    module: str
    kind: str
    symbols: set[str]
    source: str = ""
    origin: str = ""
    requires: tuple[str, ...] = ()
    #: numpy constants the source reads from its ARRAYS_NAME namespace entry (stored as .npy members).
    arrays: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def plan_code(refs: Iterable[tuple[str, str]], explicit: Iterable[Any] = ()) -> tuple[list[_Entry], list[tuple[str, str, str]]]:
    """What to bundle for ``refs`` (``(module, qualname)``) plus ``explicit`` modules or paths.

    Returns the entries in dependency order (a module after those it imports) and every
    problem found (``(attribute_path, type_name, reason)``).
    """
    wanted: dict[str, set[str]] = {}
    for module, qualname in refs:
        if module_kind(module) is not None:
            wanted.setdefault(module, set()).add(qualname)
    entries: dict[str, _Entry] = {}
    problems: list[tuple[str, str, str]] = []
    for item in explicit:
        entry = _explicit_entry(item)
        entries[entry.module] = entry
    queue = sorted(wanted)
    while queue:
        module = queue.pop(0)
        if module in entries:
            entries[module].symbols |= wanted.get(module, set())
            continue
        entry, found = _entry_for(module, wanted.get(module, set()))
        problems.extend(found)
        if entry is None:
            continue
        entries[module] = entry
        queue.extend(m for m in entry.requires if m not in entries)
    return _ordered(entries), problems


def _entry_for(module: str, symbols: set[str]) -> tuple[_Entry | None, list[tuple[str, str, str]]]:
    kind = module_kind(module)
    if kind == KIND_MAIN:
        return _main_entry(module, symbols)
    from modelsafe.code.source import ARRAYS_NAME

    source = BUNDLED_SOURCES.get(module)
    origin = f"bundled copy {module}"
    arrays = getattr(sys.modules.get(module), ARRAYS_NAME, {}) if source is not None else {}  # saved again
    if source is None:
        source, origin = module_file_source(module)
    if source is None:
        return None, [(module, "module", f"the source of local module {module!r} cannot be read ({origin}); "
                       "make it an installed package, or pass its file with code=[...]")]
    return _Entry(module, KIND_LOCAL, set(symbols), source, origin, _local_imports(source, module), arrays), []


def _main_entry(module: str, symbols: set[str]) -> tuple[_Entry | None, list[tuple[str, str, str]]]:
    from modelsafe._version import __version__
    from modelsafe.code.source import extract_module

    mod = sys.modules.get(module)
    if mod is None:
        return None, [(module, "module", f"{module} is not loaded in this process")]
    origin = getattr(mod, "__file__", None) or "an interactive session or notebook"
    extracted, problems = extract_module(
        mod, sorted(symbols), label=module,
        header=f"Bundled by modelsafe {__version__}: definitions from {module} ({origin}) the saved objects use.")
    if extracted is None:
        return None, problems
    requires = tuple(m for m in extracted.imports if module_kind(m) == KIND_LOCAL)
    return _Entry(module, KIND_MAIN, set(extracted.symbols), extracted.source, str(origin), requires,
                  extracted.arrays), []


def _explicit_entry(item: Any) -> _Entry:
    if isinstance(item, types.ModuleType):
        module = item.__name__
        source, origin = BUNDLED_SOURCES.get(module), module
        if source is None:
            source, origin = module_file_source(module)
    elif isinstance(item, (str, os.PathLike)) and str(item).endswith(".py"):
        path = Path(item)
        module, origin = path.stem, str(path)
        try:
            source = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SaveError(f"code=[{str(item)!r}]: cannot read the file ({exc}). Pass an existing .py file, "
                            "a module object or an importable module name.", path=str(item)) from exc
    elif isinstance(item, str):
        module = item
        source, origin = module_file_source(module)
    else:
        raise SaveError(f"Invalid `code` entry: expected a module, a module name or a .py path. Received: {item!r}")
    if source is None:
        raise SaveError(f"code=[{item!r}]: the source of module {module!r} cannot be read ({origin}). Pass the "
                        ".py file path instead.", path=str(item))
    return _Entry(module, KIND_LOCAL, set(), source, origin, _local_imports(source, module))


def _local_imports(source: str, module: str) -> tuple[str, ...]:
    """Local (non-installed) modules that ``source`` imports at its top level."""
    return tuple(sorted(n for n in _top_level_imports(source) if n != module and module_kind(n) == KIND_LOCAL))


@functools.lru_cache(maxsize=32)
def _top_level_imports(source: str) -> frozenset[str]:
    """Modules imported at the top level of ``source`` (parsed once per text: a checkpoint saves often)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return frozenset()
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return frozenset(names)


def _ordered(entries: Mapping[str, _Entry]) -> list[_Entry]:
    done: list[_Entry] = []
    placed: set[str] = set()

    def place(name: str, trail: tuple[str, ...]) -> None:
        if name in placed or name not in entries or name in trail:
            return
        for dep in entries[name].requires:
            place(dep, (*trail, name))
        placed.add(name)
        done.append(entries[name])

    for name in sorted(entries):
        place(name, ())
    return done


def bundle_code(refs: Iterable[tuple[str, str]], explicit: Iterable[Any], store: MemberStore) -> list[dict[str, Any]]:
    """Write the source of every custom module the objects use; return manifest records.

    Raises UnsavableObjectError (listing every problem) when some code cannot be bundled.
    """
    from modelsafe.code.diagnose import unsavable_error

    entries, problems = plan_code(refs, explicit)
    if problems:
        raise unsavable_error(problems)
    records = []
    for entry in entries:
        relname = f"{entry.module}.py"
        store.write(relname, entry.source.encode("utf-8"))
        record = {"module": entry.module, "kind": entry.kind, "member": store.member_name(relname),
                  "sha256": sha256_text(entry.source), "symbols": sorted(entry.symbols),
                  "requires": list(entry.requires), "origin": entry.origin}
        if entry.arrays:
            record["arrays"] = _write_arrays(entry, store)
        records.append(record)
    return records


def _write_arrays(entry: _Entry, store: MemberStore) -> dict[str, str]:
    """Each numpy constant of ``entry`` as ``code/<module>/<name>.npy`` (no pickle); name -> member."""
    from modelsafe.checks.data import npy_bytes

    members = {}
    for name, array in sorted(entry.arrays.items()):
        relname = f"{entry.module}/{name}.npy"
        store.write(relname, bytes(npy_bytes(array)))
        members[name] = store.member_name(relname)
    return members
