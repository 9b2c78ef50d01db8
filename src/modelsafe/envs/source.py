"""The modelsafe that goes into a recreated environment: the running one.

A worker in the recreated environment must read the artifact's format and speak the client's
protocol, so the environment gets the modelsafe that is running here, not whatever an index
has under that name:

* run from a source tree (an editable install, a checkout): the tree's package files are copied
  aside, hashed (the identity becomes ``modelsafe 0.1.0+src.<digest>``, so a changed tree gets a
  new environment) and built into a wheel once per Python minor version, kept in the cache;
* installed as a release: the requirement ``modelsafe==<version>`` (from the index).

Building from a copy leaves nothing (``build/``, ``*.egg-info``) in the source tree.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from modelsafe._version import __version__
from modelsafe.envs import cache
from modelsafe.errors import EnvironmentBuildError

__all__ = ["ModelsafeSource", "running_modelsafe"]

#: The files of a source tree that make the distribution (besides the package folder).
_PROJECT_FILES = ("pyproject.toml", "setup.py", "README.md")
_SKIPPED_SUFFIXES = (".pyc", ".so", ".pyd")


@dataclass(frozen=True)
class ModelsafeSource:
    """Where the running modelsafe comes from, and how an environment gets the same."""

    version: str
    project: Path | None  # the source tree, or None for an installed release
    digest: str = ""  # of the source tree's package files

    @property
    def identity(self) -> str:
        return f"modelsafe {self.version}+src.{self.digest[:16]}" if self.project else f"modelsafe=={self.version}"

    def requirement(self, python: Path, minor: str, installer: str) -> str:
        """What to give the installer: a wheel built once from the tree (with ``python``, a Python ``minor``
        that has pip for ``installer="pip"``), or ``modelsafe==version`` for a release."""
        if self.project is None:
            return f"modelsafe=={self.version}"
        return str(self.wheel(python, minor, installer))

    def wheel(self, python: Path, minor: str, installer: str) -> Path:
        """The wheel of the source tree for Python ``minor``, built on first use (under a lock)."""
        assert self.project is not None
        folder = cache.root() / "wheels" / f"{self.digest[:24]}-py{minor}"
        found = sorted(folder.glob("modelsafe-*.whl"))
        if found:
            return found[0]
        with cache.lock(folder):
            found = sorted(folder.glob("modelsafe-*.whl"))
            if found:
                return found[0]
            with tempfile.TemporaryDirectory(prefix="modelsafe-wheel-") as work:
                tree = Path(work) / "modelsafe"
                self.copy_tree(tree)
                out = Path(work) / "dist"
                _build_wheel(tree, out, python, installer)
                built = sorted(out.glob("modelsafe-*.whl"))
                if not built:
                    raise EnvironmentBuildError(
                        f"Building modelsafe's wheel from {self.project} produced no wheel, so the environment cannot "
                        "get this modelsafe. Check that the tree builds: pip wheel --no-deps <tree>.",
                        reason="installer", installer=installer, output="")
                folder.mkdir(parents=True, exist_ok=True)
                staged = folder / f".{built[0].name}.partial"
                shutil.copyfile(built[0], staged)
                os.replace(staged, folder / built[0].name)  # appears whole, or not at all
        return folder / built[0].name

    def copy_tree(self, destination: Path) -> None:
        """Copy the files that make the distribution (the same files the digest covers) to ``destination``."""
        assert self.project is not None
        for relative in _tree_files(self.project):
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.project / relative, target)


def _build_wheel(tree: Path, out: Path, python: Path, installer: str) -> None:
    from modelsafe.envs.installers import run_tool
    from modelsafe.envs.pythons import uv_binary

    uv = uv_binary() if installer == "uv" else None
    if uv is not None:
        command = [str(uv), "build", "--wheel", "--no-config", "--python", str(python), "--out-dir", str(out), str(tree)]
    else:
        command = [str(python), "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(out), str(tree)]
    run_tool(command, installer, "building modelsafe's wheel")


@functools.lru_cache(maxsize=1)
def running_modelsafe() -> ModelsafeSource:
    """The running modelsafe: its source tree (hashed) when it runs from one, else the installed release."""
    package = Path(__file__).resolve().parents[1]
    project = package.parents[1] if package.parent.name == "src" else None
    if project is None or not all((project / name).is_file() for name in _PROJECT_FILES):
        return ModelsafeSource(__version__, None)
    digest = hashlib.sha256()
    for relative in _tree_files(project):
        digest.update(relative.as_posix().encode() + b"\0")
        digest.update(hashlib.sha256((project / relative).read_bytes()).digest())
    return ModelsafeSource(__version__, project, digest.hexdigest())


def _tree_files(project: Path) -> list[Path]:
    files = [Path(name) for name in _PROJECT_FILES]
    package = project / "src" / "modelsafe"
    for folder, dirs, names in os.walk(package):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.endswith(".egg-info"))
        for name in sorted(names):
            if not name.endswith(_SKIPPED_SUFFIXES):
                files.append((Path(folder) / name).relative_to(project))
    return files

