"""What the caller of ``load`` allowed, passed to the code gate and to every flavor."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

__all__ = ["LoadOptions"]


@dataclass(frozen=True)
class LoadOptions:
    """What the caller of ``load`` allowed, passed to every flavor."""

    trusted: tuple[str, ...] = ()
    trust_code: bool = False
    device: str | None = None
    code: str = "auto"
    strict: bool = True
    #: Maps bundled-code module names (as referenced by the artifact) to loaded modules.
    resolve: Callable[[str, str], Any] | None = None
    #: Module names the caller has decided to trust (bundled or local code).
    allowed_modules: tuple[str, ...] = ()
    #: Local modules used at load whose source differs from the copy bundled at save.
    code_changes: tuple[str, ...] = ()
    #: The environment fingerprint recorded at save (to name saved versions in messages).
    environment: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)
