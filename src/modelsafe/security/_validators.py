"""Checks of arrays that native code indexes without bounds checks, run before use.

The restricted unpickler returns a validating stand-in for each registered global.
scikit-learn's ``Tree`` walks its node arrays in C: a child index out of range, a
cycle, or a feature index past ``n_features`` would read arbitrary memory. The
stand-in is a subclass whose ``__setstate__`` checks the state first; the object
pickles back as a plain ``sklearn.tree._tree.Tree``.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from modelsafe.errors import UntrustedContentError

_TREE_LEAF = -1


def _bad_tree(detail: str) -> UntrustedContentError:
    return UntrustedContentError(
        f"A decision tree in this file is malformed: {detail}. Scikit-learn walks tree nodes without "
        "bounds checks, so such a tree could read arbitrary memory at predict time (a crafted or "
        "corrupted file). Do not use this file; re-export the model from its source.",
        globals=["sklearn.tree._tree.Tree"],
    )


def check_tree_state(state: dict[str, Any], n_features: int, n_outputs: int, max_n_classes: int) -> None:
    """Raise UntrustedContentError unless the node arrays describe a well-formed tree."""
    import numpy as np

    nodes = state.get("nodes")
    values = state.get("values")
    count = state.get("node_count")
    if not isinstance(nodes, np.ndarray) or nodes.dtype.names is None or not isinstance(values, np.ndarray):
        raise _bad_tree("the node or value arrays are missing or of the wrong type")
    layout = _node_layout(nodes.dtype)
    if isinstance(layout, str):
        raise _bad_tree(f"the node array has no {layout!r} field")
    if not isinstance(count, (int, np.integer)) or count != len(nodes) or count < 1:
        raise _bad_tree(f"node_count={count!r} does not match {len(nodes)} nodes")
    expected = (count, n_outputs, max_n_classes)
    if values.shape != expected:
        raise _bad_tree(f"the value array has shape {values.shape}, expected {expected}")
    if not _well_formed(nodes, int(count), n_features, layout):
        _explain(nodes, int(count), n_features)


_NODE_FIELDS = ("left_child", "right_child", "feature")


@functools.lru_cache(maxsize=64)  # a forest's trees share one node dtype: worked out once, not per tree
def _node_layout(dtype: Any) -> tuple[int, int, int, int] | str | None:
    """``(itemsize, offset of left_child, right_child, feature)`` of a record dtype whose three
    fields are int64; None if they are of another type; the name of a missing field."""
    import numpy as np

    fields = dtype.fields
    for name in _NODE_FIELDS:
        if name not in fields:
            return name
    if any(fields[name][0] != np.int64 for name in _NODE_FIELDS):
        return None
    return (dtype.itemsize, *(fields[name][1] for name in _NODE_FIELDS))


@functools.lru_cache(maxsize=None)  # once: a failing import searches sys.path, and a forest has hundreds of trees
def _native_check() -> Callable[..., bool] | None:
    """The C loop of the same rule (modelsafe._native), or None when it was not built."""
    try:
        from modelsafe._native import tree_nodes_ok
    except ImportError:
        return None
    return tree_nodes_ok


def _well_formed(nodes: Any, count: int, n_features: int, layout: tuple[int, int, int, int] | str | None) -> bool:
    """The checks of :func:`_explain`, fast (a forest has hundreds of trees).

    A leaf has both children -1; an inner node has both after itself and inside the array,
    and splits on a feature in [0, n_features). So: where the larger child is -1 the
    smaller must be -1 too; elsewhere the smaller must exceed the node's index, and no
    child may reach ``count``. One pass in C when modelsafe._native is built (a forest of
    200 trees: 1.5 ms instead of 3, most of it reading the nodes), else a few numpy passes.
    """
    import numpy as np

    if not isinstance(layout, tuple):
        return False  # not scikit-learn's node layout: the detailed checks say what is wrong
    native = _native_check()
    if native is not None and nodes.ndim == 1 and nodes.flags.c_contiguous:
        return native(nodes, count, *layout, n_features)
    left, right = nodes["left_child"], nodes["right_child"]
    low, high = np.minimum(left, right), np.maximum(left, right)
    inner = high != _TREE_LEAF
    if np.count_nonzero((low <= np.arange(count)) & inner) or np.count_nonzero(low < _TREE_LEAF):
        return False
    if np.maximum.reduce(high) >= count:
        return False
    # Negative features wrap to huge unsigned values: one comparison checks both bounds.
    return not np.count_nonzero((nodes["feature"].view(np.uint64) >= n_features) & inner)


def _explain(nodes: Any, count: int, n_features: int) -> None:
    """Raise UntrustedContentError naming the first malformed node."""
    import numpy as np

    left = nodes["left_child"]
    right = nodes["right_child"]
    index = np.arange(count)
    leaf = left == _TREE_LEAF
    if (leaf != (right == _TREE_LEAF)).any():
        bad = int(np.flatnonzero(leaf != (right == _TREE_LEAF))[0])
        raise _bad_tree(f"node {bad} has exactly one child")
    inner = ~leaf
    # Children come after their parent in every tree scikit-learn builds: this bounds the
    # indices and rules out cycles in one comparison.
    out = inner & ((left <= index) | (right <= index) | (left >= count) | (right >= count))
    if out.any():
        bad = int(np.flatnonzero(out)[0])
        raise _bad_tree(f"node {bad} has child indices ({left[bad]}, {right[bad]}) outside ({bad}, {count})")
    feature = nodes["feature"]
    wrong = inner & ((feature < 0) | (feature >= n_features))
    if wrong.any():
        bad = int(np.flatnonzero(wrong)[0])
        raise _bad_tree(f"node {bad} splits on feature {feature[bad]} but the tree has {n_features} features")
    raise _bad_tree("its node arrays are inconsistent")


def _checked_tree() -> type:
    from sklearn.tree._tree import Tree

    class CheckedTree(Tree):  # type: ignore[misc, valid-type]
        """A Tree whose state is validated before it is accepted."""

        def __setstate__(self, state: dict[str, Any]) -> None:
            # max_n_classes is what Tree.__setstate__ itself checks the value array against
            check_tree_state(state, self.n_features, self.n_outputs, self.max_n_classes)
            super().__setstate__(state)

    CheckedTree.__module__ = Tree.__module__
    CheckedTree.__qualname__ = "Tree"
    return CheckedTree


_FACTORIES: dict[str, Callable[[], Any]] = {"sklearn.tree._tree.Tree": _checked_tree}
_cache: dict[str, Any] = {}


def validating_standin(qualname: str) -> Any | None:
    """The validating replacement for ``qualname``, or None if it has no validator."""
    factory = _FACTORIES.get(qualname)
    if factory is None:
        return None
    if qualname not in _cache:
        _cache[qualname] = factory()
    return _cache[qualname]
