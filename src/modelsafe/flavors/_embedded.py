"""The embedded components of a pickled graph, remembered per graph, and the replay context over them.

A Pipeline whose last step is a LightGBM model is saved as a pickled graph holding that
model as an *embedded component* (:mod:`modelsafe.flavors._pickled`). When the
verification sample replays through the Pipeline, the Pipeline calls the model, not
modelsafe, so the model's flavor cannot pass per-call options; its
:meth:`~modelsafe.flavors._base.Flavor.embedded_replay_context` sets what reaches calls
made by others. The graph remembers its components where it is saved and where it is
loaded (:func:`remember`), and :func:`replaying` enters every component's context
inside the graph's own.

A graph is remembered through a weak reference: a root that takes none (a plain dict or
list) replays its components with their usual thread pools.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Any, Iterable, Iterator

__all__ = ["components_of", "remember", "replaying"]

#: id(root) -> (weak reference to the root, ((flavor name, embedded object), ...)).
_FOUND: dict[int, tuple["weakref.ref[Any]", tuple[tuple[str, Any], ...]]] = {}


def remember(root: Any, components: Iterable[tuple[str, Any]]) -> None:
    """Record ``root``'s embedded components (flavor name, object) until ``root`` is freed."""
    key = id(root)
    found = tuple(components)
    if not found:
        _FOUND.pop(key, None)
        return
    try:
        ref = weakref.ref(root, lambda _, key=key, forget=_FOUND.pop: forget(key, None))
    except TypeError:
        return
    _FOUND[key] = (ref, found)


def components_of(root: Any) -> tuple[tuple[str, Any], ...]:
    """The embedded components remembered for ``root`` (none for a graph without any)."""
    found = _FOUND.get(id(root))
    return found[1] if found is not None and found[0]() is root else ()


@contextlib.contextmanager
def replaying(own: contextlib.AbstractContextManager[None], root: Any) -> Iterator[None]:
    """``own`` (the graph flavor's context), and inside it each embedded component's replay context."""
    from modelsafe.flavors import get_flavor

    with contextlib.ExitStack() as stack:
        stack.enter_context(own)
        for flavor, obj in components_of(root):
            stack.enter_context(get_flavor(flavor).embedded_replay_context(obj))
        yield
