"""The keywords of ``save`` and ``load`` that flavors read, checked against the flavors actually used.

A flavor declares them as ``save_options`` / ``load_options`` (class attributes of
:class:`~modelsafe.flavors._base.Flavor`). ``save`` hands its options to the model's flavor
only; ``load`` hands them to every component's flavor and to the components nested in them
(``Flavor.load_keywords``). A keyword no flavor and no verb declares is refused; one
that only another flavor reads is refused naming that flavor (see :func:`modelsafe._keywords.check_keywords`). ``load`` checks once the
manifest names the flavors (before any member is read), ``save`` once the model's flavor is
detected, ``convert`` before the file is read (against every flavor's options).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Collection, Iterable, Mapping

from modelsafe._keywords import check_keywords, declared

if TYPE_CHECKING:
    from modelsafe.flavors._base import Flavor

__all__ = ["owners", "check_save_keywords", "check_load_keywords"]


def owners(kind: str) -> dict[str, str]:
    """Every flavor's ``{kind}_options`` (kind: "save" or "load"): keyword -> flavor name(s).

    Reads the class attributes only (no flavor is instantiated), but importing a flavor's module
    may import its framework (the torch flavor's does): called only to explain a refusal.
    """
    from modelsafe.flavors import REGISTRY

    found: dict[str, list[str]] = {}
    for name, spec in sorted(REGISTRY.items()):
        try:
            cls = getattr(importlib.import_module(spec.module), spec.class_name)
        except (ImportError, AttributeError):
            continue  # a flavor that cannot be imported here declares nothing here
        for keyword in getattr(cls, f"{kind}_options", ()):
            found.setdefault(keyword, []).append(name)
    return {keyword: " or ".join(names) for keyword, names in found.items()}


def check_save_keywords(verb: str, options: Collection[str], signature: Collection[str],
                        flavor: "Flavor | None" = None) -> None:
    """Refuse keywords that neither ``save`` nor the model's flavor reads (UnknownKeywordError).

    Without ``flavor`` (``convert``, before the file is read) only keywords no flavor declares.
    """
    accepted = {*signature, *declared("save")}
    if accepted.issuperset(options):
        return
    if flavor is None:
        check_keywords(verb, options, accepted | set(owners("save")))
        return
    accepted |= flavor.save_options
    check_keywords(verb, options, accepted, owners=owners("save"), used=f"the {flavor.name} flavor")


def check_load_keywords(verb: str, extra: Collection[str], signature: Collection[str],
                        components: Iterable[tuple["Flavor", Mapping[str, Any]]]) -> None:
    """Refuse keywords ``load`` would not use (UnknownKeywordError): those neither ``load`` nor
    the flavors of ``components`` (``(flavor, component data)`` pairs) read."""
    accepted = {*signature, *declared("load")}
    used = list(components)
    for flavor, data in used:
        accepted |= flavor.load_keywords(data)
    if accepted.issuperset(extra):
        return
    names = sorted({flavor.name for flavor, _ in used})
    check_keywords(verb, extra, accepted, owners=owners("load"),
                   used=f"the {' and '.join(names)} flavor{'s' if len(names) > 1 else ''}")
