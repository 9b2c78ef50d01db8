"""Building an environment for a requirement set, once: look it up, lock, build in place, mark complete.

The steps: the requirement set (and its key) -> the recorded Python found here -> a finished
environment with that key reused, or: the lock taken -> looked up again (another process may
have built it meanwhile) -> an interrupted build removed -> virtual environment -> the pins and
modelsafe installed in one resolution -> the completion marker written. ``installer="auto"``
uses uv, and pip when uv is not installed or a pin needs pip (see
:attr:`~modelsafe.envs.requirements.Requirements.needs_pip`); when uv cannot find a version or
a wheel, pip is tried once more, since it reads this machine's pip configuration (extra
indexes, folders of wheels) and uv does not.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelsafe.envs import cache, installers
from modelsafe.envs.pythons import Interpreter, find_python
from modelsafe.envs.requirements import Requirements, requirements_of
from modelsafe.envs.source import running_modelsafe
from modelsafe.errors import EnvironmentBuildError

__all__ = ["BuiltEnv", "cached_folder", "ensure_env", "requirements_for"]

log = logging.getLogger("modelsafe.envs")
#: The requirements file written into every environment (what it was built from).
REQUIREMENTS_FILE = "modelsafe-requirements.txt"


@dataclass(frozen=True)
class BuiltEnv:
    """A finished environment: where it is, its Python, how it was built and whether this call built it."""

    path: Path
    python: Path
    installer: str
    reused: bool
    seconds: float
    requirements: Requirements


def requirements_for(environment: Mapping[str, Any] | None, where: str) -> Requirements:
    """The requirement set of a recorded environment, with the running modelsafe beside the pins."""
    return requirements_of(environment, running_modelsafe().identity, where)


def cached_folder(requirements: Requirements) -> Path:
    """Where the cache keeps the environment of ``requirements``."""
    return cache.root() / "envs" / requirements.key


def ensure_env(environment: Mapping[str, Any] | None, where: str, destination: str | os.PathLike[str] | None = None,
               installer: str = "auto") -> BuiltEnv:
    """The environment of the recorded ``environment`` (of the artifact at ``where``): reused, or built now."""
    started = time.perf_counter()
    requirements = requirements_for(environment, where)
    if installer not in installers.INSTALLERS:
        installers.choose(installer, requirements)  # raises the ValueError
    folder = cache.EnvFolder(Path(destination).absolute() if destination is not None else cached_folder(requirements))
    found = _finished(folder, requirements)
    if found is not None:
        return BuiltEnv(folder.path, folder.python, found, True, time.perf_counter() - started, requirements)
    interpreter = find_python(requirements.python, requirements.implementation)
    with cache.lock(folder.path):
        found = _finished(folder, requirements)  # built by another process while this one waited
        if found is not None:
            return BuiltEnv(folder.path, folder.python, found, True, time.perf_counter() - started, requirements)
        if folder.interrupted():
            log.warning("removing %s: an interrupted build, never used", folder.path)
        used = _build(folder, interpreter, requirements, installer)
    seconds = time.perf_counter() - started
    log.info("built %s with %s in %.1f s", folder.path, used, seconds)
    return BuiltEnv(folder.path, folder.python, used, False, seconds, requirements)


def _finished(folder: cache.EnvFolder, requirements: Requirements) -> str | None:
    """The installer of a finished environment of ``requirements`` at ``folder``, or None when there is none.

    A finished environment of *other* requirements at a folder the caller chose is refused.
    """
    record = folder.record()
    if record is None:
        return None
    if record.get("key") != requirements.key:
        raise EnvironmentBuildError(
            f"{folder.path} holds an environment recreated for other requirements ({', '.join(record.get('pins', []))}; "
            f"Python {record.get('python')}; {record.get('modelsafe')}), not for {', '.join(requirements.pins)} "
            f"with Python {requirements.python} and {requirements.modelsafe}. Give another folder (or none: the "
            "cache keeps one environment per requirement set), or remove that one first.",
            reason="destination", destination=str(folder.path))
    return str(record.get("installer", ""))


def _build(folder: cache.EnvFolder, interpreter: Interpreter, requirements: Requirements, installer: str) -> str:
    chosen = installers.choose(installer, requirements)
    try:
        _build_with(chosen, folder, interpreter, requirements)
        return chosen
    except EnvironmentBuildError as exc:
        retry = installer == "auto" and chosen == "uv" and exc.reason in ("version-missing", "no-wheel")  # type: ignore[attr-defined]
        if not retry:
            raise
        log.info("uv could not install %s (%s); trying pip, which reads this machine's pip configuration",
                 getattr(exc, "package", "?"), exc.reason)  # type: ignore[attr-defined]
        try:
            _build_with("pip", folder, interpreter, requirements)
        except EnvironmentBuildError:
            raise exc from None  # uv's reason names the cause more exactly than pip's
        return "pip"


def _build_with(installer: str, folder: cache.EnvFolder, interpreter: Interpreter, requirements: Requirements) -> None:
    started = time.perf_counter()
    folder.start()
    installers.make_venv(installer, interpreter.path, folder.path)
    requirements_file = folder.path / REQUIREMENTS_FILE
    requirements_file.write_text(requirements.text(
        f"Recreated by modelsafe from a recorded environment (Python {requirements.python_full}, "
        f"{requirements.implementation}).\nThe recorded distributions, at their recorded versions; "
        f"{requirements.modelsafe} is installed beside them."), encoding="utf-8")
    build_python = folder.python if installer == "pip" else interpreter.path
    modelsafe = running_modelsafe().requirement(build_python, requirements.python, installer)
    installers.install(installer, folder.python, requirements_file, modelsafe, requirements)
    folder.finish({**requirements.to_dict(), "installer": installer, "interpreter": str(interpreter.path),
                   "interpreter_source": interpreter.source, "built": time.time(),
                   "seconds": round(time.perf_counter() - started, 3)})
