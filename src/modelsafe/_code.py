"""Custom code referenced by saved objects: bundling at save, the trust gate at load."""

from __future__ import annotations

from typing import Any, Iterable

from modelsafe._archive import ArtifactReader
from modelsafe._manifest import Manifest
from modelsafe.errors import SaveError
from modelsafe.flavors._base import ComponentStore, LoadOptions

_INTERACTIVE = ("__main__", "__mp_main__")


def bundle_code(modules: Iterable[str], code: Iterable[Any], store: ComponentStore) -> list[dict[str, Any]]:
    """Bundle the source of custom modules; return their manifest records."""
    interactive = sorted(m for m in modules if m.split(".")[0] in _INTERACTIVE)
    if interactive or tuple(code):
        raise SaveError(
            f"The object references code defined in {', '.join(interactive) or 'explicit code= modules'}, "
            "which a fresh process cannot import, and this modelsafe cannot bundle it yet. Move the "
            "classes and functions into an importable module and save again.",
            modules=interactive,
        )
    return []


def prepare_code(manifest: Manifest, reader: ArtifactReader, options: LoadOptions) -> LoadOptions:
    """Return load options that make bundled code resolvable (nothing bundled: unchanged)."""
    return options
