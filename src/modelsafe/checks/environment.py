"""The environment fingerprint: captured at save, compared at load.

Only distributions that provide a module the saved objects reference are recorded
(found from the objects, not ``pip freeze``), plus numpy and the Python runtime.
Comparison gives every difference a level: same, patch, minor, major, missing.
Importing this module imports neither numpy nor any framework.
"""

from __future__ import annotations

import enum
import functools
import importlib.metadata as metadata
import importlib.util
import os
import platform
import sys
import sysconfig
import threading
import warnings
from dataclasses import dataclass
from typing import Any, Iterable

from modelsafe._reports import Report
from modelsafe.errors import EnvironmentMismatchError, FormatError

#: Import name -> candidate distribution names (first installed wins). Avoids a scan of
#: every installed distribution for the common cases.
_KNOWN: dict[str, tuple[str, ...]] = {
    "sklearn": ("scikit-learn",), "numpy": ("numpy",), "scipy": ("scipy",), "pandas": ("pandas",),
    "torch": ("torch",), "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-intel"),
    "keras": ("keras",), "tf_keras": ("tf-keras",), "xgboost": ("xgboost",), "lightgbm": ("lightgbm",),
    "joblib": ("joblib",), "safetensors": ("safetensors",), "PIL": ("pillow",), "yaml": ("PyYAML",),
    "imblearn": ("imbalanced-learn",), "threadpoolctl": ("threadpoolctl",), "catboost": ("catboost",),
    "statsmodels": ("statsmodels",), "transformers": ("transformers",), "tokenizers": ("tokenizers",),
    "modelsafe": ("modelsafe",),
}


class EnvironmentWarning(UserWarning):
    """The environment differs from the one the artifact was saved in."""


class Level(str, enum.Enum):
    SAME = "same"
    PATCH = "patch"
    MINOR = "minor"
    MAJOR = "major"
    MISSING = "missing"


_RANK = {Level.SAME: 0, Level.PATCH: 1, Level.MINOR: 2, Level.MAJOR: 3, Level.MISSING: 4}


def is_stdlib(module: str) -> bool:
    return module.split(".")[0] in sys.stdlib_module_names or module.split(".")[0] == "builtins"


_DISTRIBUTIONS_READ = threading.Lock()


@functools.lru_cache(maxsize=1)
def _read_packages_distributions() -> dict[str, list[str]]:
    return metadata.packages_distributions()


def _packages_distributions() -> dict[str, list[str]]:
    """Which distributions provide each top-level module: read once per process (it parses every installed
    distribution's metadata, about a second), and by one thread: another caller waits for that reading."""
    with _DISTRIBUTIONS_READ:
        return _read_packages_distributions()


def read_distributions() -> None:
    """Read now what :func:`distribution_for_module` needs (see :func:`_packages_distributions`): a caller
    that has time to spare (an async ``Checkpointer``'s background thread) spares a later save the wait."""
    _packages_distributions()


@functools.lru_cache(maxsize=512)
def installed_version(dist: str) -> str | None:
    """The installed version of distribution ``dist``, or None (cached: each lookup reads files).

    Versions are read once per process: what matters is the code this process runs.
    """
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=512)
def distribution_for_module(module: str) -> tuple[str, str] | None:
    """``(distribution, version)`` providing ``module``; None for stdlib and local modules."""
    root = module.split(".")[0]
    if not root or is_stdlib(root) or root in ("__main__", "__mp_main__"):
        return None
    for candidates in (lambda: _KNOWN.get(root, ()), lambda: _packages_distributions().get(root, ())):
        for dist in candidates():  # the scan of every installed distribution only when needed
            version = installed_version(dist)
            if version is not None:
                return dist, version
    return None


def is_local_module(module: str) -> bool:
    """Importable here from a file that belongs to no installed distribution and not stdlib."""
    if is_stdlib(module) or module.split(".")[0] in ("__main__", "__mp_main__"):
        return False
    if distribution_for_module(module) is not None:
        return False
    try:
        spec = importlib.util.find_spec(module.split(".")[0])
    except (ImportError, ValueError):
        return False
    if spec is None or not spec.origin or spec.origin in ("built-in", "frozen"):
        return False
    paths = sysconfig.get_paths()
    site_dirs = {os.path.realpath(paths[k]) for k in ("purelib", "platlib", "stdlib", "platstdlib") if k in paths}
    origin = os.path.realpath(spec.origin)
    return not any(origin.startswith(d + os.sep) for d in site_dirs)


def _devices() -> dict[str, Any]:
    torch = sys.modules.get("torch")  # never import a framework here
    if torch is None:
        return {}
    info: dict[str, Any] = {"torch_cuda": getattr(torch.version, "cuda", None)}
    try:
        if torch.cuda.is_available():
            info["cudnn"] = torch.backends.cudnn.version()
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - device facts are best effort
        pass
    return info


def capture_environment(modules: Iterable[str] = (), *, extra_distributions: Iterable[str] = ()) -> dict[str, Any]:
    """Fingerprint of this environment for the given referenced modules (JSON-able)."""
    packages: dict[str, dict[str, Any]] = {}
    for module in sorted(set(modules) | {"numpy"}):
        found = distribution_for_module(module)
        if found is None:
            continue
        dist, version = found
        entry = packages.setdefault(dist, {"version": version, "modules": []})
        root = module.split(".")[0]
        if root not in entry["modules"]:
            entry["modules"].append(root)
    for dist in extra_distributions:
        version = installed_version(dist) if dist not in packages else None
        if version is not None:
            packages[dist] = {"version": version, "modules": []}
    return {
        "python": {"version": platform.python_version(), "implementation": platform.python_implementation()},
        "platform": {"system": platform.system(), "machine": platform.machine(), "release": platform.release()},
        "numpy": packages.get("numpy", {}).get("version"),
        "packages": packages,
        "devices": _devices(),
        "requirements": [f"{dist}=={info['version']}" for dist, info in sorted(packages.items())],
    }


def _release(version: str) -> tuple[int, ...] | None:
    from packaging.version import InvalidVersion, Version

    try:
        return Version(version).release
    except InvalidVersion:
        return None


def version_level(saved: str | None, current: str | None) -> tuple[Level, str]:
    """(level, direction) of the change from ``saved`` to ``current``; direction is newer/older/''."""
    if saved is None or current is None:
        return Level.MISSING, ""
    a, b = _release(saved), _release(current)
    if a is None or b is None:
        return (Level.SAME, "") if saved == current else (Level.MAJOR, "")
    a3 = (a + (0, 0, 0))[:3]
    b3 = (b + (0, 0, 0))[:3]
    if a3 == b3:
        return Level.SAME, ""
    direction = "newer" if b3 > a3 else "older"
    if a3[0] != b3[0]:
        return Level.MAJOR, direction
    if a3[1] != b3[1]:
        return Level.MINOR, direction
    return Level.PATCH, direction


@dataclass(frozen=True)
class Difference:
    package: str
    saved: str | None
    current: str | None
    level: Level
    direction: str
    hint: str

    def describe(self) -> str:
        how = f" ({self.direction})" if self.direction else ""
        return f"  {self.package:<16} {self.saved or '-':<14} {self.current or 'not installed':<14} {self.level.value}{how}"


@dataclass(frozen=True)
class EnvReport(Report):
    """Saved vs current environment. ``ok`` when nothing differs beyond a patch release."""

    error_class = EnvironmentMismatchError

    differences: tuple[Difference, ...]
    saved_python: str
    current_python: str
    saved_platform: str
    current_platform: str

    @property
    def strict_ok(self) -> bool:
        return all(_RANK[d.level] <= _RANK[Level.PATCH] for d in self.differences)

    @property
    def ok(self) -> bool:
        return self.strict_ok

    def notable(self) -> list[Difference]:
        return [d for d in self.differences if d.level is not Level.SAME]

    def summary(self) -> str:
        """The differences in one line: ``scikit-learn 1.4.2 -> 1.9.1 (minor), ...``."""
        return ", ".join(f"{d.package} {d.saved or '-'} -> {d.current or 'not installed'} ({d.level.value})"
                         for d in self.notable())

    def _lines(self) -> list[str]:
        lines = [f"environment: saved on Python {self.saved_python} ({self.saved_platform}), "
                 f"now Python {self.current_python} ({self.current_platform})",
                 f"  {'package':<16} {'saved':<14} {'current':<14} level"]
        lines.extend(d.describe() for d in self.differences)
        if self.ok:
            lines.append("ok: no relevant package differs beyond a patch release")
        else:
            fixes = [d.hint for d in self.differences if _RANK[d.level] > _RANK[Level.PATCH] and d.hint]
            lines.append("Differences beyond a patch release can change how the model loads or predicts. "
                         "To recreate the saved environment: " + "; ".join(fixes))
        return lines


def compare_environments(saved: dict[str, Any], current: dict[str, Any] | None = None) -> EnvReport:
    """Compare a saved fingerprint with ``current`` (default: this environment)."""
    saved_packages = saved.get("packages", {})
    if current is None:
        current = capture_environment(extra_distributions=list(saved_packages))
    diffs = []
    saved_py = saved.get("python", {}).get("version", "?")
    current_py = current.get("python", {}).get("version", "?")
    level, direction = version_level(saved_py, current_py)
    diffs.append(Difference("python", saved_py, current_py, level, direction,
                            f"use Python {saved_py}" if level is not Level.SAME else ""))
    current_packages = current.get("packages", {})
    for dist, info in sorted(saved_packages.items()):
        old = info.get("version") if isinstance(info, dict) else str(info)
        new = current_packages.get(dist, {}).get("version")
        level, direction = version_level(old, new)
        diffs.append(Difference(dist, old, new, level, direction,
                                f"pip install '{dist}=={old}'" if level is not Level.SAME else ""))

    def plat(env: dict[str, Any]) -> str:
        p = env.get("platform", {})
        return f"{p.get('system', '?')} {p.get('machine', '?')}"

    return EnvReport(tuple(diffs), saved_py, current_py, plat(saved), plat(current))


ENV_MODES = ("strict", "warn", "ignore")


def manifest_environment(environment: Any, where: str) -> EnvReport:
    """The comparison of an artifact's recorded ``environment`` with this one (FormatError when none)."""
    if not environment:
        raise FormatError(f"{where!r} records no environment; re-save it with this modelsafe.", path=where)
    return compare_environments(dict(environment))


def check_environment(saved: dict[str, Any], mode: str) -> EnvReport:
    """Compare with this environment; under ``"strict"`` raise beyond a patch release.

    ``"warn"`` does not warn here: ``load`` warns (:func:`warn_environment`) only once the
    model has loaded and verified, so a load that fails gives one error that names the
    versions instead of a warning followed by an error.
    """
    if mode not in ENV_MODES:
        raise ValueError(f"Invalid `env`: expected one of 'strict', 'warn', 'ignore'. Received: env={mode!r}")
    report = compare_environments(saved)
    if mode == "strict" and not report.strict_ok:
        raise EnvironmentMismatchError(
            "Refusing to load under env='strict': the environment differs beyond a patch release.\n"
            + str(report), report=report,
            packages=[d.package for d in report.differences if _RANK[d.level] > _RANK[Level.PATCH]],
        )
    return report


def warn_environment(report: EnvReport, *, stacklevel: int = 2) -> None:
    """One readable warning listing every difference from the saved environment (if any)."""
    if report.notable():
        warnings.warn(f"The model was saved in a different environment: {report.summary()}. It loaded and its "
                      "predictions on the stored sample were re-verified; run `modelsafe env` for details.",
                      EnvironmentWarning, stacklevel=stacklevel + 1)
