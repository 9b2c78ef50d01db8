"""Which installed distribution provides a module, and its version (for messages that name versions).

The security layer sits below :mod:`modelsafe.checks`, so it asks :mod:`importlib.metadata` itself.
"""

from __future__ import annotations

import functools
import importlib.metadata as metadata
import sys


@functools.lru_cache(maxsize=1)
def _providers() -> dict[str, list[str]]:
    return metadata.packages_distributions()


def installed(module: str) -> tuple[str, str] | None:
    """``(distribution, version)`` providing ``module``; None for the standard library and local code."""
    root = module.split(".")[0]
    if not root or root in sys.stdlib_module_names:
        return None
    for dist in _providers().get(root, ()):
        try:
            return dist, metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None
