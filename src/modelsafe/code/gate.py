"""Bundled code at load: the trust gate, and isolated imports under names unique to the artifact.

Bundled code runs only with ``trust_code=True``. It is imported under module names unique to
its content (``_modelsafe_code_<hash>.<module>``), ``sys.path`` is never touched, and two
artifacts bundling different ``features.py`` coexist in one process. An importable local
module is used instead of its bundled copy (``code="auto"``), and a change is reported.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import linecache
import sys
import types
import warnings
from typing import TYPE_CHECKING, Any, Mapping

from modelsafe.code.modules import (
    BUNDLE_PREFIX,
    BUNDLED_SOURCES,
    IMPORT_LOCK,
    INTERACTIVE,
    KIND_LOCAL,
    KIND_MAIN,
    CodeChangedWarning,
    module_file_source,
    sha256_text,
)
from modelsafe.errors import EnvironmentMismatchError, UntrustedContentError

if TYPE_CHECKING:
    from modelsafe._options import LoadOptions
    from modelsafe.artifact.manifest import Manifest
    from modelsafe.artifact.reader import ArtifactReader


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
    #: numpy constants of the module: name -> its ``.npy`` member (see modelsafe.code.source.ARRAYS_NAME).
    arrays: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "CodeRecord":
        return cls(str(raw["module"]), str(raw.get("kind", KIND_LOCAL)), str(raw["member"]), str(raw["sha256"]),
                   tuple(raw.get("symbols", ())), tuple(raw.get("requires", ())),
                   {str(k): str(v) for k, v in dict(raw.get("arrays") or {}).items()})


def _current_source_hash(module: str) -> str | None:
    source, _ = module_file_source(module) if module in sys.modules or _findable(module) else (None, "")
    return None if source is None else sha256_text(source)


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
        with IMPORT_LOCK:
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
        if record.arrays:  # its numpy constants, read as .npy (never pickle) before its source runs
            from modelsafe.checks.data import npy_load
            from modelsafe.code.source import ARRAYS_NAME

            mod.__dict__[ARRAYS_NAME] = {k: npy_load(self._reader.view(m)) for k, m in record.arrays.items()}
        sys.modules[name] = mod
        BUNDLED_SOURCES[name] = source
        aliases = {dep: self._loaded[dep] for dep in record.requires if dep in self._loaded}
        try:
            with _aliased(aliases):
                exec(compile(source, filename, "exec"), mod.__dict__)  # noqa: S102 - trusted by the caller
        except BaseException:
            sys.modules.pop(name, None)
            BUNDLED_SOURCES.pop(name, None)
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
