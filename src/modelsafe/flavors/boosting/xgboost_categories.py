"""The categories an XGBoost booster stores for its categorical features.

XGBoost (3.1 and later) keeps each categorical feature's training categories in the
model and re-codes DataFrame input against them by name. Two things follow here:

* :func:`describe` reads them (from the booster's JSON form) for the manifest.
* :func:`check_frame` refuses input whose categories XGBoost would re-code wrongly.
  XGBoost 3.2 computes the offsets of string categories in characters but stores
  UTF-8 bytes, so a feature with non-ASCII categories keeps a garbled copy of them,
  and input whose categories are not exactly the training list (other order, a
  subset) is silently mapped to the wrong categories. Input with the training list
  is still correct, so only that is accepted for such features.
"""

from __future__ import annotations

import json
import weakref
from dataclasses import dataclass
from itertools import accumulate
from typing import TYPE_CHECKING, Any

from modelsafe.errors import SchemaError

if TYPE_CHECKING:
    import xgboost

__all__ = ["describe", "check_frame"]


@dataclass(frozen=True)
class _Feature:
    index: int
    name: str
    values: list[Any] | None
    offsets: tuple[int, ...] = ()
    raw: bytes = b""

    @property
    def exact(self) -> bool:
        """Whether the stored categories are exactly the training ones (ASCII text or numbers)."""
        return all(b < 0x80 for b in self.raw)

    def matches(self, given: list[str]) -> bool:
        """Whether ``given`` is the training list, as XGBoost would store it (either way of counting)."""
        encoded = [s.encode("utf-8") for s in given]
        joined = b"".join(encoded)
        by_bytes = (0, *accumulate(len(e) for e in encoded))
        by_chars = (0, *accumulate(len(s) for s in given))
        return ((by_bytes, joined) == (self.offsets, self.raw)
                or (by_chars, joined[: by_chars[-1]]) == (self.offsets, self.raw))


_CACHE: "weakref.WeakKeyDictionary[Any, tuple[int, list[_Feature]]]" = weakref.WeakKeyDictionary()


def _features(booster: "xgboost.Booster") -> list[_Feature]:
    types = booster.feature_types or []
    if "c" not in types:
        return []
    rounds = booster.num_boosted_rounds()
    cached = _CACHE.get(booster)
    if cached is not None and cached[0] == rounds:
        return cached[1]
    names = booster.feature_names or [f"f{i}" for i in range(len(types))]
    encodings = _encodings(booster)
    found = []
    for i, (name, kind) in enumerate(zip(names, types)):
        if kind != "c":
            continue
        enc = encodings[i] if i < len(encodings) and isinstance(encodings[i], dict) else {}
        found.append(_feature(i, name, enc))
    _CACHE[booster] = (rounds, found)
    return found


def _encodings(booster: "xgboost.Booster") -> list[Any]:
    learner = json.loads(booster.save_raw(raw_format="json")).get("learner", {})
    gradient = learner.get("gradient_booster", {})
    model = gradient.get("model") or gradient.get("gbtree", {}).get("model", {})
    return list(model.get("cats", {}).get("enc", []))


def _feature(index: int, name: str, enc: dict[str, Any]) -> _Feature:
    if "offsets" in enc:
        offsets = tuple(int(o) for o in enc["offsets"])
        raw = bytes(int(v) & 0xFF for v in enc.get("values", []))
        values = [raw[a:b].decode("utf-8", "replace") for a, b in zip(offsets, offsets[1:])]
        return _Feature(index, name, values, offsets, raw)
    if "values" in enc:
        return _Feature(index, name, list(enc["values"]))
    return _Feature(index, name, None)  # this XGBoost does not store categories


def describe(booster: "xgboost.Booster") -> dict[str, dict[str, Any]]:
    """``{feature: {"values": [...], "exact": bool}}`` for every categorical feature."""
    return {f.name: {"values": f.values, "exact": f.exact} for f in _features(booster)}


def check_frame(booster: "xgboost.Booster", x: Any, *, model: str) -> None:
    """Raise SchemaError for categorical input XGBoost would re-code wrongly (see module doc)."""
    for feature in _features(booster):
        if feature.exact or feature.values is None:
            continue
        column = x.columns[feature.index] if booster.feature_names is None else feature.name
        series = x[column]
        if str(series.dtype) != "category":
            continue
        given = [str(c) for c in series.cat.categories]
        if feature.matches(given):
            continue
        raise SchemaError(
            f"Column {str(column)!r} has categories {given[:20]} but the {model} was trained with a different "
            f"list of {len(feature.offsets) - 1} categories that includes non-ASCII text. This XGBoost re-codes "
            "such categories wrongly (it would silently match rows to the wrong categories), so its predictions "
            "would be garbage. Pass the column with exactly the training categories in the training order, e.g. "
            f"X[{str(column)!r}] = X[{str(column)!r}].astype(X_train[{str(column)!r}].dtype).",
            column=str(column), expected=feature.values, actual=given,
        )
