"""Checks of an XGBoost booster's trees, run after parsing and before any prediction.

XGBoost parses a model file carefully, but walks the parsed trees at predict time
without bounds checks: a child index past the node array, or a split on a feature the
model does not have, makes it read arbitrary memory (a crafted or corrupted artifact
crashes the process, or worse). The artifact's hashes do not help against a file
crafted with matching hashes, so every loaded booster is checked here first, from its
JSON form.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Mapping

from modelsafe.errors import UntrustedContentError

if TYPE_CHECKING:
    import numpy as np
    import xgboost

__all__ = ["check_booster"]


def _bad(detail: str) -> UntrustedContentError:
    return UntrustedContentError(
        f"The XGBoost model in this artifact is malformed: {detail}. XGBoost walks its trees without bounds "
        "checks, so such a model could read arbitrary memory at predict time (a crafted or corrupted file). "
        "Nothing was run. Do not use this file; re-export the model from its source.",
        globals=[],
    )


def check_booster(booster: "xgboost.Booster") -> None:
    """Raise UntrustedContentError unless every tree (or the linear weights) is well formed."""
    learner = json.loads(booster.save_raw(raw_format="json")).get("learner", {})
    params = learner.get("learner_model_param", {})
    n_features = int(params.get("num_feature", 0))
    n_groups = max(int(params.get("num_class", 0)), int(params.get("num_target", 1)), 1)
    gradient = learner.get("gradient_booster", {})
    name = gradient.get("name")
    if name == "gblinear":
        weights = gradient.get("model", {}).get("weights", [])
        if len(weights) != (n_features + 1) * n_groups:
            raise _bad(f"the linear model has {len(weights)} weights, expected {(n_features + 1) * n_groups}")
        return
    model = gradient.get("model") if name == "gbtree" else gradient.get("gbtree", {}).get("model")
    if not isinstance(model, dict):
        raise _bad(f"unknown booster {name!r}")
    trees = model.get("trees", [])
    info = model.get("tree_info", [])
    declared = int(model.get("gbtree_model_param", {}).get("num_trees", len(trees)))
    if not (len(trees) == len(info) == declared):
        raise _bad(f"{len(trees)} trees, {len(info)} tree groups and num_trees={declared} disagree")
    if any(not 0 <= int(g) < n_groups for g in info):
        raise _bad(f"a tree belongs to an output group outside 0..{n_groups - 1}")
    for index, tree in enumerate(trees):
        _check_tree(index, tree, n_features)


def _array(tree: Mapping[str, Any], key: str, index: int) -> "np.ndarray":
    import numpy as np

    if key not in tree:
        raise _bad(f"tree {index} has no {key!r}")
    try:
        return np.asarray(tree[key], dtype=np.int64).reshape(-1)
    except (TypeError, ValueError, OverflowError) as exc:
        raise _bad(f"tree {index} has a non-integer {key!r} ({exc})") from exc


def _check_tree(index: int, tree: Mapping[str, Any], n_features: int) -> None:
    import numpy as np

    count = int(tree.get("tree_param", {}).get("num_nodes", -1))
    left, right = _array(tree, "left_children", index), _array(tree, "right_children", index)
    feature = _array(tree, "split_indices", index)
    sizes = {key: len(tree.get(key, ())) for key in ("parents", "split_conditions", "default_left")}
    if count < 1 or any(len(a) != count for a in (left, right, feature)) or any(s != count for s in sizes.values()):
        raise _bad(f"tree {index} declares {count} nodes but its node arrays have other lengths")
    leaf = left == -1
    if np.any(leaf != (right == -1)):
        bad = int(np.flatnonzero(leaf != (right == -1))[0])
        raise _bad(f"tree {index}, node {bad} has exactly one child")
    node = np.arange(count)
    inner = ~leaf
    outside = inner & ((left <= node) | (left >= count) | (right <= node) | (right >= count))
    if np.any(outside):
        bad = int(np.flatnonzero(outside)[0])
        raise _bad(f"tree {index}, node {bad} has children ({left[bad]}, {right[bad]}) outside ({bad}, {count})")
    if np.any(inner & ((feature < 0) | (feature >= n_features))):
        bad = int(np.flatnonzero(inner & ((feature < 0) | (feature >= n_features)))[0])
        raise _bad(f"tree {index}, node {bad} splits on feature {feature[bad]} of a model with {n_features}")
    if "split_type" in tree:
        _check_categories(index, tree, count)


def _check_categories(index: int, tree: Mapping[str, Any], count: int) -> None:
    import numpy as np

    kinds = _array(tree, "split_type", index)
    if len(kinds) != count or np.any((kinds != 0) & (kinds != 1)):
        raise _bad(f"tree {index} has an invalid split_type array")
    nodes = _array(tree, "categories_nodes", index)
    segments = _array(tree, "categories_segments", index)
    lengths = _array(tree, "categories_sizes", index)
    total = len(tree.get("categories", ()))
    if not (len(nodes) == len(segments) == len(lengths)):
        raise _bad(f"tree {index} has categorical split arrays of different lengths")
    if np.any((nodes < 0) | (nodes >= count) | (segments < 0) | (lengths < 0) | (segments + lengths > total)):
        raise _bad(f"tree {index} has a categorical split that points outside its {total} categories")
    if not set(nodes.tolist()) >= set(np.flatnonzero(kinds == 1).tolist()):
        raise _bad(f"tree {index} has a categorical split without categories")
