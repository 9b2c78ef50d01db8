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
import hashlib
import importlib
import importlib.util
import linecache
import os
import sys
import threading
import types
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Protocol

from modelsafe.errors import EnvironmentMismatchError, SaveError, UntrustedContentError

if TYPE_CHECKING:
    from modelsafe._options import LoadOptions
    from modelsafe.artifact.manifest import Manifest
    from modelsafe.artifact.reader import ArtifactReader


class MemberStore(Protocol):
    """Where bundled sources are written: a component's member store (``flavors._base.ComponentStore``)."""

    def write(self, relname: str, data: bytes) -> str: ...

    def member_name(self, relname: str) -> str: ...

INTERACTIVE = ("__main__", "__mp_main__")
BUNDLE_PREFIX = "_modelsafe_code_"
CODE_PREFIX = "code"
KIND_MAIN, KIND_LOCAL = "main", "local"

#: Source of every module this process imported from an artifact (so it can be saved again).
_BUNDLED_SOURCES: dict[str, str] = {}
_IMPORT_LOCK = threading.RLock()


class CodeChangedWarning(UserWarning):
    """A local module used at load differs from the copy bundled when the model was saved."""


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def module_kind(module: str) -> str | None:
    """``"main"``, ``"local"`` (custom code to bundle), or None (installed, stdlib, builtin)."""
    from modelsafe.checks.environment import distribution_for_module, is_stdlib

    root = module.split(".")[0]
    if root in INTERACTIVE:
        return KIND_MAIN
    if module in _BUNDLED_SOURCES:
        return KIND_LOCAL
    if is_stdlib(module) or distribution_for_module(module) is not None:
        return None
    mod = sys.modules.get(module)
    if mod is not None and getattr(mod, "__file__", None):
        return KIND_LOCAL
    from modelsafe.checks.environment import is_local_module

    return KIND_LOCAL if is_local_module(module) else None


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
    source = _BUNDLED_SOURCES.get(module)
    origin = f"bundled copy {module}"
    if source is None:
        source, origin = _module_file_source(module)
    if source is None:
        return None, [(module, "module", f"the source of local module {module!r} cannot be read ({origin}); "
                       "make it an installed package, or pass its file with code=[...]")]
    return _Entry(module, KIND_LOCAL, set(symbols), source, origin, _local_imports(source, module)), []


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
    return _Entry(module, KIND_MAIN, set(extracted.symbols), extracted.source, str(origin), requires), []


def _module_file_source(module: str) -> tuple[str | None, str]:
    mod = sys.modules.get(module)
    path = getattr(mod, "__file__", None) if mod is not None else None
    if path is None:
        spec = importlib.util.find_spec(module)
        path = spec.origin if spec is not None else None
    if not path or not str(path).endswith(".py"):
        return None, f"no Python source file (origin {path!r})"
    try:
        return Path(path).read_text(encoding="utf-8"), str(path)
    except OSError as exc:
        return None, str(exc)


def _explicit_entry(item: Any) -> _Entry:
    if isinstance(item, types.ModuleType):
        module = item.__name__
        source, origin = _BUNDLED_SOURCES.get(module), module
        if source is None:
            source, origin = _module_file_source(module)
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
        source, origin = _module_file_source(module)
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
        records.append({"module": entry.module, "kind": entry.kind, "member": store.member_name(relname),
                        "sha256": _sha256(entry.source), "symbols": sorted(entry.symbols),
                        "requires": list(entry.requires), "origin": entry.origin})
    return records


# ---------------------------------------------------------------------------------------
# load: the trust gate, and isolated imports
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CodeRecord:
    module: str
    kind: str
    member: str
    sha256: str
    symbols: tuple[str, ...]
    requires: tuple[str, ...]

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "CodeRecord":
        return cls(str(raw["module"]), str(raw.get("kind", KIND_LOCAL)), str(raw["member"]), str(raw["sha256"]),
                   tuple(raw.get("symbols", ())), tuple(raw.get("requires", ())))


def _current_source_hash(module: str) -> str | None:
    source, _ = _module_file_source(module) if module in sys.modules or _findable(module) else (None, "")
    return None if source is None else _sha256(source)


def _findable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _uses_current(record: CodeRecord, mode: str) -> bool:
    if mode == "bundled" or record.kind == KIND_MAIN:
        return False
    if mode == "current":
        if not _findable(record.module):
            raise EnvironmentMismatchError(
                f"code='current' was asked, but module {record.module!r} is not importable here. The artifact "
                f"needs it for {', '.join(record.symbols) or 'its objects'}. Put {record.module}.py on the path, "
                "or load with code='auto' / 'bundled' and trust_code=True to use the bundled copy.",
                modules=[record.module])
        return True
    from modelsafe.checks.environment import is_local_module

    return is_local_module(record.module)


def prepare_code(manifest: "Manifest", reader: "ArtifactReader", options: "LoadOptions") -> "LoadOptions":
    """Decide, per bundled module, whether the importable or the bundled copy is used.

    Raises UntrustedContentError when bundled code would run without ``trust_code=True``.
    Imports nothing: modules are imported on first use by ``options.resolve``.
    """
    records = [CodeRecord.from_dict(r) for r in manifest.code]
    if not records:
        return options
    current = {r.module for r in records if _uses_current(r, options.code)}
    bundled = [r for r in records if r.module not in current]
    if bundled and not options.trust_code:
        raise _untrusted(bundled, str(reader.path))
    changed = tuple(sorted(r.module for r in records if r.module in current
                           and _current_source_hash(r.module) not in (None, r.sha256)))
    if changed:
        warnings.warn(
            f"Using the importable copy of {', '.join(changed)}, whose source differs from the copy bundled when "
            "the model was saved; the model may behave differently. Load with code='bundled' and trust_code=True "
            "to use the saved code.", CodeChangedWarning, stacklevel=4)
    loader = _BundleLoader(reader, bundled)
    return dataclasses.replace(options, allowed_modules=(*options.allowed_modules, *(r.module for r in records)),
                               resolve=loader.resolve, code_changes=changed)


def _untrusted(records: list[CodeRecord], path: str) -> UntrustedContentError:
    lines = "\n".join(f"  - {r.module} ({'definitions from the saving script or notebook' if r.kind == KIND_MAIN else 'local module'}): "
                      f"{', '.join(r.symbols) or 'whole module'}" for r in records)
    return UntrustedContentError(
        f"Refusing to import code bundled in {path!r}: it carries the source of {len(records)} module(s) that would "
        f"run in this process:\n{lines}\nBundled code runs with your privileges, so it must come from someone you "
        "trust. Nothing was imported. If you trust the artifact's source, load it with trust_code=True (CLI: "
        "--trust-code); to use your own copy of a local module instead, make it importable (code='current').",
        modules=[r.module for r in records], symbols={r.module: list(r.symbols) for r in records},
        globals=[f"{r.module}.{s}" for r in records for s in r.symbols])


class _BundleLoader:
    """Imports bundled modules on first use, each under a name unique to its content."""

    def __init__(self, reader: "ArtifactReader", records: list[CodeRecord]) -> None:
        self._reader = reader
        self._records = {r.module: r for r in records}
        digest = hashlib.sha256("".join(sorted(r.sha256 for r in records)).encode()).hexdigest()[:16]
        self._package = f"{BUNDLE_PREFIX}{digest}"
        self._loaded: dict[str, types.ModuleType] = {}

    def resolve(self, module: str, qualname: str) -> Any:
        mod = self._module(module) if module in self._records else importlib.import_module(module)
        target: Any = mod
        for part in qualname.split("."):
            target = getattr(target, part)
        return target

    def _module(self, module: str) -> types.ModuleType:
        with _IMPORT_LOCK:
            if module not in self._loaded:
                record = self._records[module]
                for dep in record.requires:
                    if dep in self._records:
                        self._module(dep)
                self._loaded[module] = self._execute(record)
            return self._loaded[module]

    def _execute(self, record: CodeRecord) -> types.ModuleType:
        name = f"{self._package}.{record.module}"
        if name in sys.modules:  # the same code, already imported from another artifact
            return sys.modules[name]
        source = bytes(self._reader.view(record.member)).decode("utf-8")
        filename = f"<modelsafe bundle {record.module}@{record.sha256[:12]}>"
        _ensure_packages(name)
        mod = types.ModuleType(name)
        mod.__file__ = filename
        mod.__package__ = name.rpartition(".")[0]
        linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
        sys.modules[name] = mod
        _BUNDLED_SOURCES[name] = source
        aliases = {dep: self._loaded[dep] for dep in record.requires if dep in self._loaded}
        try:
            with _aliased(aliases):
                exec(compile(source, filename, "exec"), mod.__dict__)  # noqa: S102 - trusted by the caller
        except BaseException:
            sys.modules.pop(name, None)
            _BUNDLED_SOURCES.pop(name, None)
            raise
        return mod


def _ensure_packages(name: str) -> None:
    parts = name.split(".")
    for i in range(1, len(parts)):
        parent = ".".join(parts[:i])
        if parent not in sys.modules:
            pkg = types.ModuleType(parent)
            pkg.__path__ = []
            sys.modules[parent] = pkg


class _aliased:
    """Temporarily make ``import features`` inside bundled code find the bundled ``features``."""

    def __init__(self, aliases: Mapping[str, types.ModuleType]) -> None:
        self._aliases = aliases
        self._saved: dict[str, types.ModuleType | None] = {}

    def __enter__(self) -> None:
        for name, mod in self._aliases.items():
            self._saved[name] = sys.modules.get(name)
            sys.modules[name] = mod

    def __exit__(self, *exc: object) -> None:
        for name, previous in self._saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous


# ---------------------------------------------------------------------------------------
# symbols named by a flavor's data (a torch class path, a Keras custom layer)
# ---------------------------------------------------------------------------------------


def check_symbol(options: "LoadOptions", module: str, qualname: str) -> None:
    """Refuse, before anything is imported, a class path the load could not or should not import.

    Allowed: bundled or local code recorded in the manifest (already trust-gated), names the
    caller listed in ``trusted``, and modules of installed distributions (the flavor still
    checks the type of what it gets). Raises UntrustedContentError or EnvironmentMismatchError.
    """
    from modelsafe.checks.environment import (
        distribution_for_module,
        is_local_module,
        is_stdlib,
    )

    qualified = f"{module}.{qualname}"
    if module in options.allowed_modules or qualified in options.trusted or f"{module}.*" in options.trusted:
        return
    if module.split(".")[0] in INTERACTIVE or module.startswith(BUNDLE_PREFIX):
        raise EnvironmentMismatchError(
            f"The artifact needs {qualified}, which was defined in the saving process ({module}) and whose source "
            "is not bundled in the artifact, so no process can import it. Re-save the model with this modelsafe "
            "(it bundles such code), or move the class into an importable module.", modules=[module])
    if is_stdlib(module):
        raise UntrustedContentError(
            f"The artifact names {qualified} as a class to construct; a model class never comes from the standard "
            "library, so the artifact was tampered with. Nothing was imported. Do not use this file.",
            globals=[qualified])
    if distribution_for_module(module) is None and not is_local_module(module):
        raise EnvironmentMismatchError(
            f"The artifact needs {qualified}, but module {module!r} is not importable here: it was a local module "
            "or a package installed where the model was saved. Install the package that provides it, or put "
            f"{module.replace('.', '/')}.py on the Python path (e.g. run from the project folder).",
            modules=[module])


def import_symbol(options: "LoadOptions", module: str, qualname: str) -> Any:
    """Return ``module.qualname`` as :func:`check_symbol` allows: bundled copy, local module or package."""
    check_symbol(options, module, qualname)
    try:
        if options.resolve is not None and module in options.allowed_modules:
            return options.resolve(module, qualname)
        target: Any = importlib.import_module(module)
        for part in qualname.split("."):
            target = getattr(target, part)
        return target
    except (ImportError, AttributeError) as exc:
        changed = f" Its source changed since saving ({', '.join(options.code_changes)})." if options.code_changes else ""
        raise EnvironmentMismatchError(
            f"Cannot import {module}.{qualname} ({type(exc).__name__}: {exc}).{changed} The class the model was "
            "saved with is not available here under that name. Install the version of the code the model was "
            "saved with, or load with code='bundled' and trust_code=True to use the copy bundled at save.",
            modules=[module]) from exc
