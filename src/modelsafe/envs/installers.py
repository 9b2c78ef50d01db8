"""The two installers: uv (fast; ``modelsafe[envs]`` installs it) and venv + pip (the fallback).

Each makes a virtual environment on a given interpreter and installs, in one resolution, the
pinned requirements and modelsafe. The pinned distributions are installed from wheels only
(``--only-binary``), so a version without a wheel here fails at once and clearly instead of
after a long source build. The installers read their own configuration as usual: uv its
``UV_*`` settings and ``uv.toml``, pip its configuration files and ``PIP_*`` settings.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

from modelsafe.envs.failures import classify
from modelsafe.envs.pythons import uv_binary
from modelsafe.envs.requirements import Requirements
from modelsafe.errors import EnvironmentBuildError

__all__ = ["INSTALLERS", "choose", "install", "make_venv", "run_tool", "tool_environment"]

INSTALLERS = ("auto", "uv", "pip")
#: A build step that takes longer than this is stopped (a stuck download, a resolver that never ends).
STEP_TIMEOUT = 3600.0


def choose(installer: str, requirements: Requirements) -> str:
    """``"uv"`` or ``"pip"`` for ``installer`` (``"auto"``: uv when it is installed and no pin needs pip)."""
    if installer not in INSTALLERS:
        raise ValueError(f"Invalid `installer`: expected one of {', '.join(map(repr, INSTALLERS))}. "
                         f"Received: installer={installer!r}")
    if installer == "auto":
        return "pip" if requirements.needs_pip or uv_binary() is None else "uv"
    if installer == "uv" and uv_binary() is None:
        from modelsafe.envs.extra import require

        require("uv")
    return installer


def make_venv(installer: str, interpreter: Path, folder: Path) -> None:
    """A virtual environment at ``folder`` (which exists, holding only the build marker) on ``interpreter``."""
    if installer == "uv":
        command = [str(uv_binary()), "venv", "--no-project", "--allow-existing", "--python", str(interpreter),
                   str(folder)]
    else:
        command = [str(interpreter), "-m", "venv", str(folder)]
    run_tool(command, installer, "creating the virtual environment")


def install(installer: str, python: Path, requirements_file: Path, modelsafe: str, requirements: Requirements) -> None:
    """Install the pins of ``requirements_file`` and ``modelsafe`` (a wheel or a requirement) into ``python``'s env."""
    binary = list(requirements.names)
    if installer == "uv":
        command = [str(uv_binary()), "pip", "install", "--python", str(python), "--color", "never", "--compile-bytecode"]
        command += [arg for name in binary for arg in ("--only-binary", name)]
    else:
        command = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
        command += ["--only-binary", ",".join(binary)] if binary else []
    command += ["-r", str(requirements_file), modelsafe]
    try:
        run_tool(command, installer, "installing the recorded packages", requirements.pins, requirements.python)
    except EnvironmentBuildError as exc:
        if installer == "pip" and exc.reason == "version-missing":  # type: ignore[attr-defined]
            raise _refined(exc, python) from None
        raise


def run_tool(command: Sequence[str], installer: str, what: str, pins: Sequence[str] = (), python: str = "") -> str:
    """Run an installer's command; its output, or the EnvironmentBuildError its failure means."""
    try:
        proc = subprocess.run(list(command), check=False, capture_output=True, text=True, env=tool_environment(),
                              timeout=STEP_TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise EnvironmentBuildError(
            f"{installer} was still {what} after {STEP_TIMEOUT:.0f} s and was stopped. The environment was not "
            "built. Check the network and the index, then run again.", reason="installer", installer=installer,
            output=str(exc.stdout or "")[-4000:]) from None
    except OSError as exc:
        raise EnvironmentBuildError(
            f"{installer} could not be started for {what} ({command[0]}: {exc}). Install it ({'pip install uv' if installer == 'uv' else 'the python3-venv package of your system'}) "
            "or choose the other installer.", reason="installer", installer=installer, output="") from None
    output = (proc.stdout or "") + (proc.stderr or "")
    if proc.returncode != 0:
        raise classify(output, installer, what, pins, python)
    return output


def tool_environment() -> dict[str, str]:
    """The installers' environment: this one, without what would point them at another Python."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}


def _refined(exc: EnvironmentBuildError, python: Path) -> EnvironmentBuildError:
    """pip says "no matching distribution" both for a version that is gone and for one without a wheel
    here: ask pip again, verbosely, for that one version, and read whether it skipped files of it."""
    name, version = exc.package, exc.version  # type: ignore[attr-defined]
    command = [str(python), "-m", "pip", "install", "--dry-run", "--no-deps", "--ignore-installed", "-vv",
               "--disable-pip-version-check", "--only-binary", name, f"{name}=={version}"]
    try:
        proc = subprocess.run(command, check=False, capture_output=True, text=True, env=tool_environment(),
                              timeout=600, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return exc
    wanted = _canonical(f"/{name}-{version}-")  # a file of that version: name-version-tags.whl
    skipped = [line for line in proc.stdout.splitlines() if "Skipping link" in line and wanted in _canonical(line)]
    if not skipped:
        return exc
    return classify(exc.output + "\n" + "\n".join(skipped[-5:]), "pip",  # type: ignore[attr-defined]
                    "installing the recorded packages", (), exc.python, no_wheel=True)  # type: ignore[attr-defined]


def _canonical(text: str) -> str:
    """Lower case, every run of ``-``, ``_`` and ``.`` as one ``-`` (how file names spell project names vary)."""
    return re.sub(r"[-_.]+", "-", text.lower())
