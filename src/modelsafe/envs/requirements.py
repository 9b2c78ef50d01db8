"""The requirement set of a recorded environment: the Python minor version, the exact pins, and its hash.

The pins are the recorded distributions at their recorded versions, exactly (``name==version``,
a local label such as ``+cpu`` included). One rewrite keeps a PyTorch build on the CPU: PyPI's
Linux wheels of a plain ``torch==X`` pull CUDA, so a PyTorch distribution recorded without a
local label, by an environment with no CUDA, is pinned as ``X+cpu`` on Linux (the same release:
the environment check calls it ``same``). modelsafe itself is never pinned from the record: the
running modelsafe is installed beside the pins (see :mod:`modelsafe.envs.source`).

The set's :attr:`~Requirements.key` (a SHA-256 of the Python version, the platform, the pins and
the modelsafe installed) names its environment in the cache: two artifacts with the same
requirements share one environment.
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelsafe.errors import EnvironmentBuildError, FormatError

__all__ = ["PYTORCH", "Requirements", "requirements_of"]

#: Distributions whose plain Linux wheels on PyPI bundle CUDA.
PYTORCH = frozenset({"torch", "torchvision", "torchaudio"})


@dataclass(frozen=True)
class Requirements:
    """What an environment needs: a Python minor version and exact versions of the recorded distributions."""

    python: str  # the minor version, "3.11"
    python_full: str  # as recorded, "3.11.7"
    implementation: str  # "CPython"
    pins: tuple[str, ...]  # "numpy==1.26.4", sorted by name
    modelsafe: str  # what provides modelsafe in the environment (see modelsafe.envs.source)
    platform: str = f"{platform.system()} {platform.machine()}"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(pin.split("==")[0] for pin in self.pins)

    def version(self, name: str) -> str | None:
        return next((pin.split("==", 1)[1] for pin in self.pins if pin.split("==")[0] == name), None)

    @property
    def local_builds(self) -> tuple[str, ...]:
        """Pinned distributions with a local version label (``torch==2.13.0+cpu``): not on PyPI itself."""
        return tuple(pin.split("==")[0] for pin in self.pins if "+" in pin)

    @property
    def needs_pip(self) -> tuple[str, ...]:
        """Pins that ``installer="auto"`` installs with pip: local builds and PyTorch.

        pip reads this machine's pip configuration (extra indexes, ``find-links`` folders, constraint
        files), where such builds are found; uv reads its own, and from PyPI alone would fetch a
        CUDA build or nothing.
        """
        return tuple(sorted({*self.local_builds, *(n for n in self.names if n.lower() in PYTORCH)}))

    @property
    def key(self) -> str:
        """The cache key: the same for every artifact with these requirements."""
        data = {"python": self.python, "implementation": self.implementation, "platform": self.platform,
                "pins": list(self.pins), "modelsafe": self.modelsafe}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:20]

    def text(self, header: str = "") -> str:
        """A requirements file of the pins (one per line), after a comment."""
        lines = [f"# {line}" for line in header.splitlines()] if header else []
        return "\n".join([*lines, *self.pins]) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {"python": self.python_full, "implementation": self.implementation, "platform": self.platform,
                "pins": list(self.pins), "modelsafe": self.modelsafe, "key": self.key}


def requirements_of(environment: Mapping[str, Any] | None, modelsafe: str, where: str = "the artifact") -> Requirements:
    """The requirement set of a manifest's recorded ``environment``."""
    if not environment or not environment.get("python", {}).get("version"):
        raise FormatError(f"{where!r} records no environment (no Python version, no packages), so there is "
                          "nothing to recreate. Re-save it with this modelsafe.", path=where)
    python = environment["python"]
    full = str(python["version"])
    minor = ".".join(full.split(".")[:2])
    cuda = (environment.get("devices") or {}).get("torch_cuda")
    pins = []
    for name, info in sorted((environment.get("packages") or {}).items(), key=lambda item: item[0].lower()):
        if name.lower() == "modelsafe":
            continue  # the running modelsafe is installed instead (it reads this artifact's format)
        version = info.get("version") if isinstance(info, Mapping) else str(info)
        pins.append(f"{name}=={_pinned_version(name, str(version), cuda, where)}")
    return Requirements(python=minor, python_full=full, implementation=str(python.get("implementation") or "CPython"),
                        pins=tuple(pins), modelsafe=modelsafe)


def _pinned_version(name: str, version: str, cuda: Any, where: str) -> str:
    from packaging.version import InvalidVersion, Version

    try:
        parsed = Version(version)
    except InvalidVersion:
        raise EnvironmentBuildError(
            f"{where!r} records {name} at version {version!r}, which is not a version an index can serve "
            "(PEP 440), so the environment cannot be recreated exactly. Load the artifact where it was saved and "
            "re-save it from an environment installed from an index.",
            reason="version-missing", package=name, version=version) from None
    if name.lower() in PYTORCH and parsed.local is None and not cuda and platform.system() == "Linux":
        return f"{version}+cpu"
    return version
