"""Dtype families: what a column holds, whatever library or dtype flavour holds it.

numpy dtypes, pandas extension dtypes (nullable ``Int64``/``Float64``/``boolean``,
``string``/``str``, ``category``, tz-aware datetimes, Arrow-backed dtypes) and the
dtype names recorded in a manifest all map to one :class:`DType`: a family (``int``,
``float``, ``string``, ``datetime``...), whether it is *nullable* (holds missing values
as NA beside its values, as the pandas extension dtypes do) and its time zone.
:func:`conflict` says when feeding one family where another was saved changes values.
Nothing here imports pandas: extension dtypes are read through their attributes.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["DType", "describe_dtype", "conflict", "RANGED", "MISSING_IS_LOSSY"]

_BY_KIND = {"i": "int", "u": "uint", "f": "float", "c": "complex", "b": "bool", "M": "datetime",
            "m": "timedelta", "O": "object", "U": "string", "S": "string"}
#: Families whose value ranges are recorded and checked.
RANGED = frozenset({"int", "uint", "float"})
#: Families whose non-nullable dtypes cannot hold a missing value (an NA fed into them is lost).
MISSING_IS_LOSSY = frozenset({"int", "uint", "bool"})
_NUMBERS = {"int", "uint", "float", "complex", "bool"}
_TIMES = {"datetime", "timedelta"}
_TEXT = {"string", "object", "category", "other"}
#: expected family -> actual families whose values would change on the way in.
_LOSSY: dict[str, set[str]] = {
    "int": {"float", "complex"} | _TEXT | _TIMES,
    "uint": {"float", "complex"} | _TEXT | _TIMES,
    "float": {"complex"} | _TEXT | _TIMES,
    "complex": _TEXT | _TIMES,
    "bool": {"float", "complex"} | _TEXT | _TIMES,
    "datetime": _NUMBERS | {"timedelta"},
    "timedelta": _NUMBERS | {"datetime"},
}
_MASKED = re.compile(r"(U?Int)(8|16|32|64)|Float(32|64)|boolean")
_ARROW = {"int": "int", "uint": "uint", "double": "float", "float": "float", "halffloat": "float", "bool": "bool",
          "string": "string", "large_string": "string", "string_view": "string", "timestamp": "datetime",
          "duration": "timedelta", "date32": "datetime", "date64": "datetime", "dictionary": "category"}


@dataclass(frozen=True)
class DType:
    """One column's dtype as the guard compares it."""

    name: str
    family: str
    nullable: bool = False
    tz: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"family": self.family, "nullable": self.nullable, **({"tz": self.tz} if self.tz else {})}


def describe_dtype(dtype: Any) -> DType:
    """The :class:`DType` of a numpy dtype, a pandas extension dtype, or a recorded dtype name."""
    if isinstance(dtype, DType):
        return dtype
    if isinstance(dtype, str):
        return _from_name(dtype)
    if isinstance(dtype, np.dtype):
        return DType(str(dtype), _BY_KIND.get(dtype.kind, "other"))
    name = str(dtype)
    if name == "category":
        return DType(name, "category")
    arrow = getattr(dtype, "pyarrow_dtype", None)
    if arrow is not None:
        return _from_name(name)
    if name in ("string", "str") or name.startswith("string["):
        return DType(name, "string", nullable=True)
    kind = getattr(dtype, "kind", "O")
    tz = getattr(dtype, "tz", None)
    if kind == "M":
        return DType(name, "datetime", tz=None if tz is None else str(tz))
    family = _BY_KIND.get(kind, "other") if kind != "O" else "other"
    # pandas' nullable numbers (Int64, Float64, boolean) keep an NA mask beside their values.
    return DType(name, family, nullable=family in _NUMBERS and not name.startswith("Sparse"))


@functools.lru_cache(maxsize=1024)
def _from_name(name: str) -> DType:
    """A dtype recorded as text (old manifests recorded no family)."""
    if name == "category":
        return DType(name, "category")
    if name in ("string", "str") or name.startswith("string["):
        return DType(name, "string", nullable=True)
    if _MASKED.fullmatch(name):
        family = "uint" if name.startswith("UInt") else "int" if name.startswith("Int") else \
            "float" if name.startswith("Float") else "bool"
        return DType(name, family, nullable=True)
    if name.startswith("datetime64[") and "," in name:
        return DType(name, "datetime", tz=name.split(",", 1)[1].strip(" ]"))
    if name.endswith("[pyarrow]"):
        return _from_arrow(name)
    try:
        return describe_dtype(np.dtype(name))
    except TypeError:
        return DType(name, "other")


def _from_arrow(name: str) -> DType:
    base = name[: -len("[pyarrow]")]
    head = re.match(r"[a-z_]+", base)
    word = head.group(0) if head else ""
    family = _ARROW.get(word) or _ARROW.get(word.rstrip("0123456789").rstrip("_"))
    if family is None and word.startswith("uint"):
        family = "uint"
    elif family is None and word.startswith("int"):
        family = "int"
    tz = re.search(r"tz=([^\]]+)\]", base)
    return DType(name, family or "other", nullable=True, tz=tz.group(1) if tz else None)


def conflict(expected: DType, actual: DType) -> str | None:
    """Why feeding ``actual`` values where ``expected`` was saved would change them, or None."""
    if actual.family in _LOSSY.get(expected.family, ()):
        return f"{actual.family} values where the model was saved with {expected.family} values"
    if expected.family == "datetime" == actual.family and (expected.tz is None) != (actual.tz is None):
        saved = f"time zone {expected.tz}" if expected.tz else "no time zone"
        given = f"time zone {actual.tz}" if actual.tz else "no time zone"
        return f"datetimes with {given} where the model was saved with {saved}"
    return None
