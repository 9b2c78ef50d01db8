"""Column names (labels) stored losslessly in JSON, and compared like with like.

pandas allows any hashable as a column name: strings, ints, floats, tuples (the
columns of a MultiIndex), timestamps. JSON keeps strings, ints, floats, booleans and
null apart on its own; tuples are stored as ``{"tuple": [...]}``, non-finite floats as
``{"float": "nan"}``, and anything else as ``{"str": str(label)}`` (compared by that
text). :func:`label_key` is what two names are compared by: the name recorded at save
and the column given at predict match exactly when their keys are equal. Names that are
equal values are one name, as they are to pandas (``df[1]`` finds a column named ``1.0``
or ``True``): ``1``, ``1.0`` and ``True`` in one frame are refused as duplicates.

Schemas written before names were stored losslessly recorded every name that was not
a ``str`` or ``int`` as ``str(name)``; :func:`legacy_key` compares input columns with
those in the same form.
"""

from __future__ import annotations

import math
from typing import Any, Hashable

__all__ = ["encode_label", "decode_label", "label_key", "legacy_key", "show_label"]

_PLAIN = (str, bool, int)


def encode_label(label: Any) -> Any:
    """``label`` as JSON that :func:`decode_label` turns back into an equal label."""
    label = _python(label)
    if label is None or isinstance(label, _PLAIN):
        return label
    if isinstance(label, float):
        return label if math.isfinite(label) else {"float": repr(label)}
    if isinstance(label, tuple):
        return {"tuple": [encode_label(part) for part in label]}
    return {"str": str(label)}


def decode_label(value: Any) -> Any:
    """The label :func:`encode_label` stored (a name stored as text comes back as that text)."""
    if isinstance(value, dict):
        if "tuple" in value:
            return tuple(decode_label(part) for part in value["tuple"])
        if "float" in value:
            return float(value["float"])
        return str(value.get("str", ""))
    if isinstance(value, list):  # not written by modelsafe, but JSON readers may turn tuples into lists
        return tuple(decode_label(part) for part in value)
    return value


def label_key(label: Any) -> Hashable:
    """What a label is compared by: itself for plain values and tuples of them, its text otherwise."""
    label = _python(label)
    if label is None or isinstance(label, _PLAIN):
        return label
    if isinstance(label, float):
        return label if not math.isnan(label) else ("float", "nan")
    if isinstance(label, tuple):
        return tuple(label_key(part) for part in label)
    return str(label)


def legacy_key(label: Any) -> Hashable:
    """The key of an input column against a schema that recorded names the old way (``str()``)."""
    label = _python(label)
    return label if isinstance(label, (str, int)) else str(label)


def show_label(label: Any) -> str:
    """A label as messages print it (``'age'``, ``1``, ``('price', 'usd')``)."""
    return repr(_python(label))


def _python(label: Any) -> Any:
    """numpy scalars (``np.int64(3)``, ``np.str_('a')``) as the Python values they equal."""
    if type(label).__module__ == "numpy" and hasattr(label, "item"):
        return label.item()
    return label
