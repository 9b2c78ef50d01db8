"""Checks of LightGBM model text, run before LightGBM reads it.

LightGBM's parser aborts the whole process (``terminate called``) on some malformed
model text, because it parses trees in parallel from the ``tree_sizes`` header, and its
predictor walks trees without bounds checks. A crafted artifact (its hashes recomputed)
could therefore kill or corrupt the process that loads it. This module reads the text
in Python first: every tree's arrays have the lengths its ``num_leaves`` implies, child
indices stay inside the tree and point forward, split features and categorical
thresholds stay in range. LightGBM is then given the text without ``tree_sizes``, so it
parses sequentially and reports any remaining problem as a Python exception.
"""

from __future__ import annotations

from typing import Any

from modelsafe.errors import FormatError, UntrustedContentError

__all__ = ["check_model_text"]

_INTERNAL = ("split_feature", "threshold", "decision_type", "left_child", "right_child")
_CATEGORICAL_BIT = 1


def _bad(detail: str) -> UntrustedContentError:
    return UntrustedContentError(
        f"The LightGBM model in this artifact is malformed: {detail}. LightGBM walks its trees without bounds "
        "checks (and aborts the process on some malformed text), so such a model could crash or read arbitrary "
        "memory (a crafted or corrupted file). Nothing was run. Do not use this file; re-export the model.",
        globals=[],
    )


def _fields(block: str) -> dict[str, str]:
    fields = {}
    for line in block.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def _ints(fields: dict[str, str], key: str, where: str) -> list[int]:
    try:
        return [int(v) for v in fields.get(key, "").split()]
    except ValueError as exc:
        raise _bad(f"{where}: {key} holds a value that is not an integer") from exc


def _floats(fields: dict[str, str], key: str, where: str) -> list[float]:
    try:
        return [float(v) for v in fields.get(key, "").split()]
    except ValueError as exc:
        raise _bad(f"{where}: {key} holds a value that is not a number") from exc


def check_model_text(text: str) -> str:
    """Validate LightGBM model text; return it without ``tree_sizes`` (see module doc)."""
    if not text.startswith("tree\n"):
        raise FormatError("The LightGBM member is not LightGBM model text (it does not start with 'tree'). "
                          "Re-export the model from its source.")
    body, sep, rest = text.partition("\nend of trees")
    if not sep:
        raise _bad("the model text has no 'end of trees' line (it is truncated)")
    header, *trees = body.split("\nTree=")
    head = _fields(header)
    n_features = _single_int(head, "max_feature_idx", "the header") + 1
    per_iteration = _single_int(head, "num_tree_per_iteration", "the header")
    if n_features < 1 or per_iteration < 1 or len(head.get("feature_names", "").split(" ")) != n_features:
        raise _bad("the header's max_feature_idx, feature_names and num_tree_per_iteration disagree")
    if len(trees) % per_iteration:
        raise _bad(f"{len(trees)} trees is not a multiple of num_tree_per_iteration={per_iteration}")
    sizes = head.get("tree_sizes")
    if sizes is not None and len(sizes.split()) != len(trees):
        raise _bad(f"tree_sizes lists {len(sizes.split())} trees but the text holds {len(trees)}")
    for index, block in enumerate(trees):
        _check_tree(index, _fields("Tree=" + block), n_features)
    kept = "\n".join(line for line in header.split("\n") if not line.startswith("tree_sizes="))
    return "\nTree=".join([kept, *trees]) + sep + rest


def _single_int(fields: dict[str, str], key: str, where: str) -> int:
    values = _ints(fields, key, where)
    if len(values) != 1:
        raise _bad(f"{where} has no single integer {key}")
    return values[0]


def _check_tree(index: int, fields: dict[str, str], n_features: int) -> None:
    where = f"tree {index}"
    leaves = _single_int(fields, "num_leaves", where)
    n_cat = _single_int(fields, "num_cat", where) if "num_cat" in fields else 0
    if leaves < 1 or n_cat < 0:
        raise _bad(f"{where} has num_leaves={leaves}, num_cat={n_cat}")
    if len(_floats(fields, "leaf_value", where)) != leaves:
        raise _bad(f"{where} has {leaves} leaves but a different number of leaf values")
    if leaves == 1:
        return
    arrays: dict[str, list[Any]] = {k: (_floats if k == "threshold" else _ints)(fields, k, where) for k in _INTERNAL}
    if any(len(v) != leaves - 1 for v in arrays.values()):
        raise _bad(f"{where} has {leaves - 1} splits but split arrays of other lengths")
    inner = leaves - 1
    for node, (left, right) in enumerate(zip(arrays["left_child"], arrays["right_child"])):
        for child in (left, right):
            if (child >= 0 and not node < child < inner) or (child < 0 and not 0 <= ~child < leaves):
                raise _bad(f"{where}, node {node} has a child {child} outside the tree")
    for node, feature in enumerate(arrays["split_feature"]):
        if not 0 <= feature < n_features:
            raise _bad(f"{where}, node {node} splits on feature {feature} of a model with {n_features}")
    _check_categorical(where, fields, arrays, n_cat)
    if fields.get("is_linear", "0") == "1":
        _check_linear(where, fields, leaves, n_features)


def _check_categorical(where: str, fields: dict[str, str], arrays: dict[str, list[Any]], n_cat: int) -> None:
    categorical = [(node, t) for node, (d, t) in enumerate(zip(arrays["decision_type"], arrays["threshold"]))
                   if d & _CATEGORICAL_BIT]
    if not categorical and not n_cat:
        return
    bounds = _ints(fields, "cat_boundaries", where)
    words = _ints(fields, "cat_threshold", where)
    if len(bounds) != n_cat + 1 or bounds[0] != 0 or bounds[-1] != len(words) or bounds != sorted(bounds):
        raise _bad(f"{where} has cat_boundaries that do not describe its {n_cat} categorical splits")
    for node, threshold in categorical:
        if threshold != int(threshold) or not 0 <= int(threshold) < n_cat:
            raise _bad(f"{where}, node {node} refers to categorical split {threshold} of {n_cat}")


def _check_linear(where: str, fields: dict[str, str], leaves: int, n_features: int) -> None:
    counts = _ints(fields, "num_features", where)
    features = _ints(fields, "leaf_features", where)
    if len(counts) != leaves or len(_floats(fields, "leaf_const", where)) != leaves or sum(counts) != len(features):
        raise _bad(f"{where} is a linear tree whose leaf arrays disagree")
    if any(not 0 <= f < n_features for f in features):
        raise _bad(f"{where} is a linear tree using a feature outside the model's {n_features}")
