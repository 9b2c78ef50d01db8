"""Finding the recorded Python minor version on this machine; nothing is downloaded.

Looked at, in order: the running interpreter; ``python3.X`` on ``PATH`` (each one run, since a
launcher such as a pyenv shim may be there and fail); a uv-managed Python that is already
installed (``uv python find --managed-python``). A version found nowhere is an
:class:`~modelsafe.errors.EnvironmentBuildError` naming it, what was tried, and how to install it.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from modelsafe.errors import EnvironmentBuildError

__all__ = ["Interpreter", "find_python", "uv_binary"]

_PROBE = "import platform, sys; print(sys.version_info[0], sys.version_info[1], platform.python_implementation())"


@dataclass(frozen=True)
class Interpreter:
    path: Path
    version: str  # "3.11"
    source: str  # "running", "PATH" or "uv"


def find_python(minor: str, implementation: str = "CPython") -> Interpreter:
    """An interpreter of Python ``minor`` ("3.11") and ``implementation``; EnvironmentBuildError if none."""
    tried: list[str] = []
    if f"{sys.version_info[0]}.{sys.version_info[1]}" == minor and platform.python_implementation() == implementation:
        return Interpreter(Path(sys.executable), minor, "running")
    tried.append(f"the running interpreter is {platform.python_implementation()} {platform.python_version()}")
    command = f"python{minor}"
    found = shutil.which(command)
    if found:
        problem = _probe(Path(found), minor, implementation)
        if problem is None:
            return Interpreter(Path(found), minor, "PATH")
        tried.append(f"{command} on PATH ({found}) {problem}")
    else:
        tried.append(f"no {command} on PATH")
    uv = uv_binary()
    if uv is not None:
        managed = _uv_managed(uv, minor)
        if managed is not None and _probe(managed, minor, implementation) is None:
            return Interpreter(managed, minor, "uv")
        tried.append(f"no uv-managed Python {minor} is installed")
    raise EnvironmentBuildError(
        f"The artifact was saved with {implementation} {minor}, and no Python {minor} was found on this machine ("
        + "; ".join(tried) + f"). The environment needs that minor version: the recorded packages were built for "
        f"it, and some have no wheel for another. Install it, then run again: `uv python install {minor}` (uv "
        f"finds its own Pythons), or your system's package (python{minor}), or `pyenv install {minor}` with "
        f"python{minor} on PATH.", reason="python", python=minor, tried=tried)


def _probe(path: Path, minor: str, implementation: str) -> str | None:
    """None when ``path`` runs as Python ``minor``; otherwise what went wrong."""
    try:
        proc = subprocess.run([str(path), "-c", _PROBE], check=False, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"did not run ({exc})"
    if proc.returncode != 0:
        said = " ".join((proc.stderr or proc.stdout).split())[:300]
        return f"did not run (exit {proc.returncode}: {said})"
    major_minor_impl = proc.stdout.split()
    if len(major_minor_impl) != 3:
        return f"printed {proc.stdout!r}"
    found = f"{major_minor_impl[0]}.{major_minor_impl[1]}"
    if found != minor or major_minor_impl[2] != implementation:
        return f"is {major_minor_impl[2]} {found}"
    return None


def _uv_managed(uv: Path, minor: str) -> Path | None:
    try:
        proc = subprocess.run([str(uv), "python", "find", "--managed-python", "--no-python-downloads", minor],
                              check=False, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    path = proc.stdout.strip()
    return Path(path) if proc.returncode == 0 and path else None


def uv_binary() -> Path | None:
    """The uv executable: the one the ``uv`` package (``modelsafe[envs]``) installed, else ``uv`` on PATH."""
    try:
        from uv import find_uv_bin

        return Path(find_uv_bin())
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        return Path(found) if found else None
