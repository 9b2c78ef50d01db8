"""Cython extension types pickled by an older release of their library, rebuilt by the installed one.

Cython pickles a ``cdef class`` without ``__reduce__`` through a generated
``<module>.__pyx_unpickle_<Type>(Type, checksum, state)``, which rebuilds the type from its
state after checking that the layout checksum is one it knows. scikit-learn wrote its losses
that way up to 1.5 (``__pyx_unpickle_CyHalfBinomialLoss``...), then gave them a ``__reduce__``
returning ``(Type, args)``, and the reconstructors disappeared: a model saved with 1.4 no longer
unpickles with 1.6+, although the type and its state are unchanged.

When the installed module lacks the reconstructor but has the type, :func:`substitute` gives one
that rebuilds ``Type(*state)`` and accepts the result only if it reduces back to exactly
``(Type, state)``: the installed type is built from the same state and pickles it the same way,
which is what the checksum stood for. Anything else is refused with the versions named.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable

from modelsafe.errors import FormatError
from modelsafe.security._allowlist import PYX_PREFIX, pyx_type


def substitute(module: str, name: str) -> Callable[..., Any] | None:
    """A reconstructor for ``module.name`` (a ``__pyx_unpickle_<Type>`` the installed module lacks), or None."""
    target = pyx_type(module, name)
    if target is None:
        return None
    try:
        mod = sys.modules.get(module) or importlib.import_module(module)
    except ImportError:
        return None
    cls = getattr(mod, target, None)
    if hasattr(mod, name) or not isinstance(cls, type):
        return None

    def rebuild(given: Any, checksum: Any, state: Any) -> Any:
        if given is not cls or not isinstance(state, tuple):
            raise _incompatible(module, target, f"it is called with {given!r} and a state of {type(state).__name__}")
        try:
            obj = cls(*state)
            reduced = obj.__reduce_ex__(2)
        except (TypeError, ValueError) as exc:
            raise _incompatible(module, target, f"{target}{state!r} fails ({exc})") from exc
        if reduced[:2] != (cls, state):
            raise _incompatible(module, target, f"{target}{state!r} pickles back as {reduced[:2]!r}")
        return obj

    rebuild.__name__ = rebuild.__qualname__ = f"{PYX_PREFIX}{target}"
    return rebuild


def _incompatible(module: str, target: str, detail: str) -> FormatError:
    from modelsafe.security._versions import installed as distribution_for_module

    found = distribution_for_module(module)
    dist, version = found if found is not None else (module.split(".")[0], "installed")
    return FormatError(
        f"The file holds a {module}.{target} pickled by an older {dist} (through its Cython reconstructor), and "
        f"{dist} {version} installed here cannot rebuild it from that state: {detail}. The object's layout changed "
        f"between the versions. Load the model with the {dist} version that saved it and re-save it with ms.save.",
        module=module, type_name=target)
