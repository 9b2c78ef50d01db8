"""An installer's failure, read from its output and said as an EnvironmentBuildError that names the
package and what to do.

The cases: a recorded version the index no longer has (``version-missing``), a version with no
wheel for this Python or platform (``no-wheel``; the recorded distributions are installed from
wheels only, so this is found at once instead of after a long source build), the index that
cannot be reached (``network``), a constraint in pip's configuration that excludes the version
(``constraint``), a recorded version this modelsafe itself cannot run with (``modelsafe``), and anything else (``installer``, with the installer's last lines).
"""

from __future__ import annotations

import platform
import re
from collections.abc import Sequence

from modelsafe.errors import EnvironmentBuildError

__all__ = ["NETWORK_SIGNS", "classify"]

#: Lines of uv's or pip's output that mean the index could not be reached.
NETWORK_SIGNS = ("Failed to fetch", "tcp connect error", "dns error", "error sending request", "Connection refused",
                 "Could not fetch URL", "Failed to establish a new connection", "NewConnectionError",
                 "Max retries exceeded", "Temporary failure in name resolution", "Network is unreachable",
                 "Name or service not known", "operation timed out", "Read timed out")
_UV_MISSING = re.compile(r"there is no version of ([A-Za-z0-9_.\-]+)==([^\s,]+)")
_UV_NO_WHEEL = re.compile(r"([A-Za-z0-9_.\-]+)==([^\s,]+) (?:has no usable wheels|has no wheels with a matching)")
_UV_PYTHON = re.compile(r"([A-Za-z0-9_.\-]+)==([^\s,]+) depends on Python([^\s,]+)")
_PIP_MISSING = re.compile(r"No matching distribution found for ([A-Za-z0-9_.\-]+)==([^\s,]+)")
_PIP_AVAILABLE = re.compile(r"\(from versions: ([^)]*)\)")
_PIP_CONSTRAINT = re.compile(r"The user requested \(constraint\) ([^\n]+)")
_PIP_PYTHON = re.compile(r"Requires-Python ([^\s;]+)|requires a different Python")
#: modelsafe's own requirement on a recorded distribution (uv, then pip).
_NEEDED_BY_MODELSAFE = re.compile(
    r"modelsafe(?:==| )\S+ depends on ([A-Za-z0-9_.\-]+) ?([<>=!~]\S*?(?: and [<>=!~]\S*?)*)(?=[,.]? |[,.]?$)")


def classify(output: str, installer: str, what: str, pins: Sequence[str] = (), python: str = "",
             no_wheel: bool | None = None) -> EnvironmentBuildError:
    """The error for ``output`` of ``installer`` failing at ``what``. ``no_wheel`` (pip only): whether
    a follow-up look found files of the missing version that do not fit this platform."""
    tail = "\n".join(output.strip().splitlines()[-25:])
    here = f"CPython {python or platform.python_version()} on {platform.system()} {platform.machine()}"
    facts = {"installer": installer, "output": tail, "python": python}
    flat = " ".join(output.split())  # uv wraps its explanations to the terminal's width, anywhere between words
    needed = _NEEDED_BY_MODELSAFE.search(flat)
    if needed:
        return _needed_by_modelsafe(needed.group(1), needed.group(2).strip(), pins, facts)
    found = _UV_NO_WHEEL.search(flat) or _UV_PYTHON.search(flat)
    if installer == "uv" and found:
        return _no_wheel(found.group(1), found.group(2), here, facts)
    found = _UV_MISSING.search(flat)
    if installer == "uv" and found:
        return _missing(found.group(1), found.group(2), facts, installer)
    constraint = _PIP_CONSTRAINT.search(output)
    if installer == "pip" and constraint:
        return _constrained(constraint.group(1).strip(), pins, facts)
    missing = _PIP_MISSING.search(output)
    if any(sign in output for sign in NETWORK_SIGNS) and (missing is None or "from versions: none" in output):
        return _network(installer, what, pins, facts)
    if installer == "pip" and missing:
        name, version = missing.group(1), missing.group(2)
        if no_wheel or _PIP_PYTHON.search(output):
            return _no_wheel(name, version, here, facts)
        available = _PIP_AVAILABLE.search(output)
        return _missing(name, version, facts, installer, available.group(1) if available else "")
    return EnvironmentBuildError(
        f"{installer} failed while {what}, for a reason modelsafe does not recognise. Its last lines:\n{tail}\n"
        "The environment was not built (nothing half-built is ever used). Fix what the installer says, or try "
        f"the other installer (installer={'pip' if installer == 'uv' else 'uv'!r}).", reason="installer", **facts)


def _needed_by_modelsafe(name: str, needs: str, pins: Sequence[str], facts: dict[str, str]) -> EnvironmentBuildError:
    pinned = next((p for p in pins if p.split("==")[0].lower() == name.lower()), name)
    return EnvironmentBuildError(
        f"The artifact records {pinned}, and this modelsafe needs {name}{needs}: it cannot run in that environment, "
        "so the model cannot be loaded and checked there. Use an older modelsafe that supports it (in an environment "
        f"you build yourself, passed as isolate='/path/to/env'), or load the artifact where it was saved and re-save "
        f"it with {name}{needs}.", reason="modelsafe", package=name, version=pinned.partition("==")[2] or None,
        needs=needs, **facts)


def _missing(name: str, version: str, facts: dict[str, str], installer: str, available: str = "") -> EnvironmentBuildError:
    offers = f" (for this platform it offers: {_last(available)})" if available and available != "none" else ""
    local = ("+" in version and f" {name} {version} is a local build (the '+{version.split('+', 1)[1]}' label), which "
             "indexes like PyPI do not serve: point the installer at the index or folder that has it (PyTorch's CPU "
             "builds: PIP_EXTRA_INDEX_URL or UV_INDEX=https://download.pytorch.org/whl/cpu; a folder of wheels: "
             "PIP_FIND_LINKS or UV_FIND_LINKS), or use installer='pip', which reads this machine's pip "
             "configuration." if "+" in version else "")
    either = (" pip cannot tell a version that is gone from one with no file for this platform: either applies."
              if installer == "pip" else "")
    return EnvironmentBuildError(
        f"The artifact needs {name}=={version}, and the package index has no such version{offers}.{either}{local} "
        "Without it the environment would not be the one the model was saved in. Use an index that still has "
        f"{name} {version} (a mirror or your private index: UV_INDEX_URL / PIP_INDEX_URL), or load the artifact "
        "where it was saved and re-save it with versions the index has. If it is your own package, install it into "
        "the environment yourself and pass the environment's path: ms.load(path, isolate='/path/to/env').",
        reason="version-missing", package=name, version=version, **facts)


def _no_wheel(name: str, version: str, here: str, facts: dict[str, str]) -> EnvironmentBuildError:
    return EnvironmentBuildError(
        f"{name}=={version} has no wheel for {here}, so it cannot be installed here as it was recorded (modelsafe "
        "installs the recorded versions from wheels only, so that the environment is the one the model was saved "
        f"in, not a local build of it). Recreate the environment on the platform it was saved on, or with the "
        f"Python it was saved with, or load the artifact where it was saved and re-save it with a {name} release "
        "that has a wheel here.", reason="no-wheel", package=name, version=version, **facts)


def _network(installer: str, what: str, pins: Sequence[str], facts: dict[str, str]) -> EnvironmentBuildError:
    packages = ", ".join(pins) or "the recorded packages"
    return EnvironmentBuildError(
        f"{installer} could not reach the package index while {what} ({packages}): the network or the index is "
        "down, or the index address is wrong. Nothing was installed and nothing half-built will be used. Check the "
        "connection and the index settings (UV_INDEX_URL / PIP_INDEX_URL, a proxy: HTTPS_PROXY), then run again; "
        "once the packages are in the installer's cache, a rebuild needs no network.",
        reason="network", package=pins[0].split("==")[0] if len(pins) == 1 else None, **facts)


def _constrained(constraint: str, pins: Sequence[str], facts: dict[str, str]) -> EnvironmentBuildError:
    name = re.split(r"[<>=!~ ;\[]", constraint, maxsplit=1)[0]
    pinned = next((p for p in pins if p.split("==")[0].lower() == name.lower()), name)
    return EnvironmentBuildError(
        f"pip's configuration on this machine constrains {constraint}, which excludes the recorded {pinned}: pip "
        "applies a constraint file given in its configuration (`pip config list` shows it, e.g. global.constraint) "
        "or in PIP_CONSTRAINT to every install. Lift or widen that constraint for this build (PIP_CONSTRAINT= with "
        "an empty value overrides it), or install on a machine without it.",
        reason="constraint", package=name, version=pinned.partition("==")[2] or None, **facts)


def _last(versions: str, count: int = 8) -> str:
    items = [v.strip() for v in versions.split(",") if v.strip()]
    return ", ".join(items[-count:]) + (f" and {len(items) - count} earlier" if len(items) > count else "")
