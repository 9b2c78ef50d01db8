"""The packages each batch capability needs, and the error naming the extra that installs them."""

from __future__ import annotations

import importlib.util

from modelsafe.errors import FlavorNotInstalledError

__all__ = ["require"]


def require(capability: str, packages: tuple[str, ...]) -> None:
    """Raise FlavorNotInstalledError naming the missing ``packages`` and ``pip install 'modelsafe[capability]'``."""
    missing = [name for name in packages if importlib.util.find_spec(name) is None]
    if missing:
        hint = f"pip install 'modelsafe[{capability}]'"
        raise FlavorNotInstalledError(
            f"modelsafe.{capability} needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not "
            f"installed here. Install {'it' if len(missing) == 1 else 'them'} with: {hint}",
            flavor=capability, hint=hint, missing=missing)
