"""The packages of the extra ``modelsafe[envs]``, each checked where it is needed.

Using an environment that is already built needs none of them (a worker is started with the
environment's own Python), so a process with only modelsafe can run an isolated model that
another process recreated.
"""

from __future__ import annotations

import importlib.util

from modelsafe.errors import FlavorNotInstalledError

__all__ = ["HINT", "require"]

HINT = "pip install 'modelsafe[envs]'"
_WHAT = {"platformdirs": "find the user cache folder", "filelock": "lock a build against concurrent ones",
         "uv": "install packages quickly"}


def require(package: str) -> None:
    """Raise FlavorNotInstalledError naming ``package`` and the extra when it is not installed."""
    if importlib.util.find_spec(package) is None:
        raise FlavorNotInstalledError(
            f"Recreating environments needs {package} (to {_WHAT.get(package, 'do its work')}), which is not installed "
            f"here. Install it with: {HINT}", flavor="envs", hint=HINT, missing=[package])
