"""The checks ``ms.doctor`` runs on a file, each returning :class:`modelsafe._reports.Problem` items.

Nothing here loads the file or imports a module named in it: importability is decided
with import *finders* (which locate a module's file without running it), and a class's
presence by reading the module's source with :mod:`ast`.
"""

from __future__ import annotations

import ast
import importlib.machinery
import importlib.metadata as metadata
import importlib.util
import pickle
import re
import sys
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from modelsafe._reports import Problem
from modelsafe.security._findings import explain
from modelsafe.security._verdict import blocks

if TYPE_CHECKING:
    from modelsafe.security.scanner import ScanReport

_MAIN = ("__main__", "__mp_main__")
_MAX_SOURCE = 4 << 20
_SEARCH_LIMIT = 512 << 20
_VERSION = re.compile(rb"(\d+\.\d+(?:\.\d+)?(?:(?:a|b|rc|\.post|\.dev)\d+)*)")
_CUDA = re.compile(rb"cuda(?::\d+)?")


def security(report: "ScanReport", covered: set[str] = frozenset()) -> list[Problem]:  # type: ignore[assignment]
    """Scan findings, as problems, with the scan's own verdict (:func:`modelsafe.security._verdict.blocks`):
    what makes ``scan`` say a file is not safe is an error here too.

    Findings about a subject in ``covered`` (one a specific check already diagnosed, such as a
    pickle protocol or a SavedModel) are left out, except those about globals.
    """
    out = []
    for f in report.findings:
        if f.subject in covered and not f.kind.endswith("-global"):
            continue
        why, fix = explain(f.kind, f.subject)
        where = f" (in {f.location})" if f.location else ""
        out.append(Problem(what=f"{f.what or f.subject}{where}", why=why, fix=fix,
                           severity="error" if blocks(f) else "warning", subject=f.subject))
    return out


# ---------------------------------------------------------------------------------------
# globals: defined in __main__, not importable, not defined, numpy 1 vs 2
# ---------------------------------------------------------------------------------------


def globals_here(report: "ScanReport") -> list[Problem]:
    seen: dict[str, str] = {}
    for stream in report.streams:
        for g in stream.globals:
            if report.kind == "zip:torchscript" and g.module.startswith("__torch__"):
                continue  # the archive's own TorchScript classes, compiled from its code: never Python modules
            if g.verdict != "dangerous" and g.module:
                seen[g.name] = g.module
    out: list[Problem] = []
    for name, module in sorted(seen.items()):
        out += _check_global(name, module)
    return out


def main_globals(report: "ScanReport") -> list[Problem]:
    """The problem of each class or function the file's pickles name in ``__main__`` (the script that saved it).

    ``ms.convert`` raises the same diagnosis for those its own process does not define.
    """
    seen = {g.name: g.module for s in report.streams for g in s.globals
            if g.verdict != "dangerous" and g.module.split(".")[0] in _MAIN}
    return [p for name, module in sorted(seen.items()) for p in _check_global(name, module)]


def _check_global(name: str, module: str) -> list[Problem]:
    root = module.split(".")[0]
    attr = name[len(module) + 1 :]
    if root in _MAIN:
        return [Problem(
            what=f"{attr} was defined in the __main__ script (or notebook) that saved the file",
            why="a pickle stores only the name '__main__." + attr + "', so loading fails with \"Can't get "
                f"attribute '{attr}' on <module '__main__'>\" in any other script",
            fix=f"define or import {attr} in the __main__ of the loading script before loading (e.g. `from "
                f"mymodule import {attr.split('.')[0]}`), then re-save it with ms.save, which bundles its source",
            subject=name)]
    numpy = _numpy_layout(module, name)
    if numpy:
        return numpy
    if root in sys.stdlib_module_names or root == "builtins":
        return []
    found, origin = locate(module)
    if found == "missing":
        return [_missing(name, module, root)]
    if found == "partial":
        return [Problem(
            what=f"{name}: the module {module!r} could not be found in the installed {_dist(root)} {_version(root)}",
            why="it may be created at import time; if not, loading fails with ModuleNotFoundError",
            fix=f"install the {_dist(root)} version the file was written with", severity="warning", subject=name)]
    if origin and origin.endswith(".py") and not defines(origin, attr.split(".")[0]):
        return [Problem(
            what=f"{module} (from {_dist(root)} {_version(root)}) does not define {attr.split('.')[0]}",
            why=f"the file needs {name}; loading fails with AttributeError (the name was renamed or removed "
                "in this version)",
            fix=f"install the {_dist(root)} version the file was written with, load it there, and re-save it with "
                "ms.save",
            subject=name)]
    return []


def _dist(root: str) -> str:
    """The distribution name usually providing the import name ``root`` (sklearn -> scikit-learn)."""
    from modelsafe.checks.environment import _KNOWN

    return _KNOWN.get(root, (root,))[0]


def _missing(name: str, module: str, root: str) -> Problem:
    dist = _dist(root)
    return Problem(
        what=f"{name} comes from the module {module!r}, which is not importable here",
        why="unpickling imports it, so loading fails with ModuleNotFoundError: No module named "
            f"{root!r}",
        fix=f"install it (pip install {dist}), or, if it is your own code, put {root} on the path of the loading "
            "script", subject=name)


def _numpy_layout(module: str, name: str) -> list[Problem]:
    if not module.startswith(("numpy._core", "numpy.core")):
        return []
    installed = _version("numpy")
    major = int(installed.split(".")[0]) if installed and installed[0].isdigit() else None
    if module.startswith("numpy._core") and major is not None and major < 2:
        if locate(module)[0] == "found":
            return []  # numpy 1.26 ships part of numpy._core so that such pickles load
        return [Problem(
            what=f"the file was written with numpy 2 (it names {name}) and numpy {installed} is installed",
            why=f"numpy {installed} has no {module} (numpy 1.26 provides only part of numpy._core), so loading "
                f"fails with ModuleNotFoundError: No module named '{module}'",
            fix="pip install 'numpy>=2', or re-save the model from an environment with numpy 1", subject=name)]
    if module.startswith("numpy.core") and major is not None and major >= 2:
        return [Problem(
            what=f"the file was written with numpy 1 (it names {name}) and numpy {installed} is installed",
            why="numpy 2 still reads it through a deprecated alias, with a DeprecationWarning",
            fix="re-save the model with numpy 2 (ms.convert does this)", severity="warning", subject=name)]
    return []


def locate(module: str) -> tuple[str, str | None]:
    """("found" | "partial" | "missing", origin file) for ``module``, found with import finders only."""
    parts = module.split(".")
    try:
        spec = importlib.util.find_spec(parts[0])
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return "missing", None
    for part in parts[1:]:
        locations = spec.submodule_search_locations
        if not locations:
            return "partial", None
        spec = importlib.machinery.PathFinder.find_spec(part, list(locations))
        if spec is None:
            return "partial", None
    return "found", spec.origin


def defines(origin: str, name: str) -> bool:
    """Whether the module source at ``origin`` defines ``name`` at top level (True when unsure)."""
    try:
        source = Path(origin).read_bytes()
        if len(source) > _MAX_SOURCE:
            return True
        tree = ast.parse(source)
    except (OSError, SyntaxError, ValueError):
        return True
    dynamic = {"globals", "vars", "exec", "setattr"}  # names made at import time: cannot tell statically
    if any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in dynamic
           for n in _module_level(tree)):
        return True
    names: set[str] = set()
    for node in _top_level(tree.body):
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            if any(alias.name == "*" for alias in node.names):
                return True
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
    return name in names or "__getattr__" in names


def _module_level(tree: ast.Module) -> Iterable[ast.AST]:
    """Every node that runs at import time (function and class bodies excluded)."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                stack.append(child)


def _top_level(body: list[ast.stmt]) -> Iterable[ast.stmt]:
    for node in body:
        yield node
        for field in ("body", "orelse", "finalbody", "handlers"):
            inner = getattr(node, field, None)
            if isinstance(node, (ast.If, ast.Try, ast.With, ast.ExceptHandler)) and isinstance(inner, list):
                yield from _top_level(inner)


def _version(dist_or_root: str) -> str:
    from modelsafe.checks.environment import _KNOWN

    for dist in (*_KNOWN.get(dist_or_root, ()), dist_or_root):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return ""


def protocol(report: "ScanReport") -> list[Problem]:
    newest = max((s.protocol for s in report.streams), default=0)
    if newest <= pickle.HIGHEST_PROTOCOL:
        return []
    return [Problem(
        what=f"the file uses pickle protocol {newest}; this Python {sys.version.split()[0]} reads up to "
             f"{pickle.HIGHEST_PROTOCOL}",
        why="loading fails with ValueError: unsupported pickle protocol",
        fix="load it with the newer Python that wrote it and re-save it with a lower protocol or with ms.save",
        subject=f"protocol {newest}")]


# ---------------------------------------------------------------------------------------
# versions recorded inside the file
# ---------------------------------------------------------------------------------------


def recorded_versions(path: Path, report: "ScanReport", facts: dict[str, Any]) -> list[Problem]:
    """scikit-learn's ``_sklearn_version`` (read from the stream's bytes) vs the installed version."""
    if report.kind not in ("pickle", "joblib") and not report.kind.startswith("compressed:"):
        return []
    if not any(g.startswith("sklearn.") for g in report.globals()):
        return []
    saved = _find_after(path, b"_sklearn_version")
    if saved is None:
        return []
    facts["scikit-learn (saved)"] = saved
    return compare_version("scikit-learn", saved, _version("sklearn"))


def compare_version(dist: str, saved: str, installed: str) -> list[Problem]:
    """A problem when the installed ``dist`` differs from the one that wrote the file beyond a patch."""
    from modelsafe.checks.environment import Level, version_level

    if not installed:
        return [Problem(what=f"the file was written with {dist} {saved}, which is not installed here",
                        why="loading needs it", fix=f"pip install '{dist}=={saved}'", subject=dist)]
    level, direction = version_level(saved, installed)
    if level in (Level.SAME, Level.PATCH):
        return []
    older = direction == "older"
    return [Problem(
        what=f"the file was written with {dist} {saved}; {dist} {installed} is installed ({level.value} "
             f"version {'older' if older else 'newer'})",
        why=("an older version lacks attributes the file sets, so loading or predicting fails" if older else
             "objects pickled by another version may load with warnings, fail, or predict differently"),
        fix=f"pip install '{dist}=={saved}' to load it, then re-save it with ms.save (which records and checks "
            "versions)", severity="error" if older or level is Level.MAJOR else "warning", subject=dist)]


def _find_after(path: Path, needle: bytes) -> str | None:
    """The first version string within 48 bytes after ``needle`` in the (decompressed) stream."""
    from modelsafe.security._joblib import open_stream

    try:
        with open_stream(path) as (stream, _kind):
            tail = b""
            read = 0
            while read < _SEARCH_LIMIT:
                chunk = stream.read(1 << 20)
                if not chunk:
                    return None
                read += len(chunk)
                data = tail + chunk
                at = data.find(needle)
                if at >= 0:
                    after = data[at + len(needle) : at + len(needle) + 48]
                    if len(after) < 48 and read < _SEARCH_LIMIT:
                        after += stream.read(48)
                    match = _VERSION.search(after)
                    return match.group(1).decode() if match else None
                tail = data[-len(needle) :]
    except (OSError, EOFError, ValueError):
        return None
    return None


# ---------------------------------------------------------------------------------------
# torch, Keras, modelsafe artifacts
# ---------------------------------------------------------------------------------------


def artifact_checks(path: Path, report: "ScanReport") -> list[Problem]:
    if report.kind not in ("zip:modelsafe", "modelsafe-directory"):
        return []
    from modelsafe.artifact.reader import manifest_of
    from modelsafe.checks.environment import Level, manifest_environment
    from modelsafe.errors import ModelsafeError

    try:
        env = manifest_environment(manifest_of(path).environment, str(path))
    except ModelsafeError as exc:
        return [Problem(what=f"the artifact's environment cannot be read ({exc})", why="it cannot be compared",
                        fix="re-export the model", severity="warning", subject="environment")]
    out = []
    for d in env.differences:
        if d.level in (Level.SAME, Level.PATCH):
            continue
        out.append(Problem(
            what=f"{d.package}: saved with {d.saved or '-'}, installed {d.current or 'nothing'} ({d.level.value}"
                 f"{', ' + d.direction if d.direction else ''})",
            why="load(env='strict') refuses this, and predictions may differ (verification will tell)",
            fix=d.hint or f"pip install '{d.package}=={d.saved}'",
            severity="error" if d.level in (Level.MAJOR, Level.MISSING) else "warning", subject=d.package))
    return out


def zip_member(path: Path, suffix: str, limit: int = 64 << 20) -> bytes | None:
    """The first member of the zip at ``path`` whose name ends with ``suffix`` (small members only)."""
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if info.filename.endswith(suffix) and info.file_size <= limit:
                    return zf.read(info)
    except (OSError, zipfile.BadZipFile, KeyError):
        return None
    return None


def cuda_tags(data: bytes) -> list[str]:
    return sorted({m.group(0).decode() for m in _CUDA.finditer(data)})


def installed_version(dist: str) -> str:
    return _version(dist)
