"""Which modules are custom code (``__main__``, notebooks, local modules), and their source.

Shared by the save side (:mod:`.bundle`) and the load side (:mod:`.gate`): a module this
process imported from an artifact keeps its source here, so it can be saved again.
"""


from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass


INTERACTIVE = ("__main__", "__mp_main__")
BUNDLE_PREFIX = "_modelsafe_code_"
CODE_PREFIX = "code"
KIND_MAIN, KIND_LOCAL = "main", "local"

#: Source of every module this process imported from an artifact (so it can be saved again).
BUNDLED_SOURCES: dict[str, str] = {}
IMPORT_LOCK = threading.RLock()


class CodeChangedWarning(UserWarning):
    """A local module used at load differs from the copy bundled when the model was saved."""


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def module_kind(module: str) -> str | None:
    """``"main"``, ``"local"`` (custom code to bundle), or None (installed, stdlib, builtin)."""
    from modelsafe.checks.environment import distribution_for_module, is_stdlib

    root = module.split(".")[0]
    if root in INTERACTIVE:
        return KIND_MAIN
    if module in BUNDLED_SOURCES:
        return KIND_LOCAL
    if is_stdlib(module) or distribution_for_module(module) is not None:
        return None
    mod = sys.modules.get(module)
    if mod is not None and getattr(mod, "__file__", None):
        return KIND_LOCAL
    from modelsafe.checks.environment import is_local_module

    return KIND_LOCAL if is_local_module(module) else None


def module_file_source(module: str) -> tuple[str | None, str]:
    mod = sys.modules.get(module)
    path = getattr(mod, "__file__", None) if mod is not None else None
    if path is None:
        spec = importlib.util.find_spec(module)
        path = spec.origin if spec is not None else None
    if not path or not str(path).endswith(".py"):
        return None, f"no Python source file (origin {path!r})"
    try:
        return Path(path).read_text(encoding="utf-8"), str(path)
    except OSError as exc:
        return None, str(exc)
