"""Where recreated environments live, the lock that makes two processes build one once, and the markers
that tell a finished environment from a half-built one.

The cache is ``$MODELSAFE_ENVS_DIR``, else ``$MODELSAFE_CACHE_DIR/envs``, else the user cache
directory (``platformdirs``: ``~/.cache/modelsafe/envs`` on Linux). Inside: ``envs/<key>/`` per
requirement set, ``wheels/`` (modelsafe built from a source tree) and ``locks/``.

An environment folder is built in place (a virtual environment cannot be moved: pip writes its
absolute path into every script and the activation files). Two markers make that safe:
``.modelsafe-building`` is written first, ``modelsafe-env.json`` last (atomically, by rename).
Only a folder with the second one is ever used; one with only the first is a build that was
interrupted, and is removed by the next build, which holds the lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelsafe.errors import EnvironmentBuildError

__all__ = ["BUILDING", "COMPLETE", "LOCK_TIMEOUT", "EnvFolder", "lock", "root"]

COMPLETE = "modelsafe-env.json"
BUILDING = ".modelsafe-building"
#: How long a process waits for another one's build of the same environment.
LOCK_TIMEOUT = 1800.0


def root() -> Path:
    """The cache folder of recreated environments (and of the wheels and locks they use)."""
    explicit = os.environ.get("MODELSAFE_ENVS_DIR")
    if explicit:
        return Path(explicit)
    shared = os.environ.get("MODELSAFE_CACHE_DIR")
    if shared:
        return Path(shared) / "envs"
    from modelsafe.envs.extra import require

    require("platformdirs")
    import platformdirs

    return Path(platformdirs.user_cache_dir("modelsafe", appauthor=False)) / "envs"


@contextlib.contextmanager
def lock(target: Path, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold the build lock of ``target`` (another process building it waits here, then finds it built)."""
    from modelsafe.envs.extra import require

    require("filelock")
    import filelock

    name = hashlib.sha256(str(target.resolve()).encode()).hexdigest()[:24]
    folder = root() / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with filelock.FileLock(str(folder / f"{name}.lock"), timeout=timeout):
            yield
    except filelock.Timeout:
        raise EnvironmentBuildError(
            f"Waited {timeout:.0f} s for another process building {target}, and it has not finished. If no "
            f"other build is running, remove the lock file {folder / (name + '.lock')} and run again.",
            reason="installer", destination=str(target)) from None


@dataclass(frozen=True)
class EnvFolder:
    """One environment's folder and its markers."""

    path: Path

    @property
    def python(self) -> Path:
        return self.path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")

    def record(self) -> dict[str, Any] | None:
        """What the build recorded (``modelsafe-env.json``), or None for a folder that is not a finished build."""
        try:
            data = json.loads((self.path / COMPLETE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and self.python.exists() else None

    def start(self) -> None:
        """Make the folder ready for a build: remove an interrupted one, refuse one that is not ours."""
        if self.path.exists():
            if (self.path / BUILDING).exists() or (self.path / COMPLETE).exists():
                shutil.rmtree(self.path)
            elif self.path.is_dir() and not any(self.path.iterdir()):
                self.path.rmdir()
            else:
                raise EnvironmentBuildError(
                    f"{self.path} exists and is not an environment modelsafe built (it has no {COMPLETE}), so it is "
                    "left as it is. Give another folder, or remove that one first.",
                    reason="destination", destination=str(self.path))
        self.path.mkdir(parents=True)
        (self.path / BUILDING).write_text(f"pid {os.getpid()} at {time.time():.0f}\n", encoding="utf-8")

    def finish(self, data: dict[str, Any]) -> None:
        """Mark the build complete (atomically); from now on the folder is used."""
        staged = self.path / f".{COMPLETE}.partial"
        staged.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
        os.replace(staged, self.path / COMPLETE)
        (self.path / BUILDING).unlink()

    def interrupted(self) -> bool:
        return (self.path / BUILDING).exists() and not (self.path / COMPLETE).exists()
