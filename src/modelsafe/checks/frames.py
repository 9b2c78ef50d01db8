"""Data frames the guard reads: pandas, and polars through Arrow.

A polars DataFrame is read through the Arrow PyCapsule interface (``pyarrow.table``)
into a pandas frame with nullable dtypes, so every check runs one code path; polars
itself is never imported by modelsafe (a polars frame given to the guard means the
caller has it). The model still receives the polars frame, realigned by name with its
own ``select``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Hashable, Sequence

from modelsafe.errors import FlavorNotInstalledError, SchemaError

__all__ = ["frame_library", "to_pandas", "frame_dtypes", "column_array", "duplicated", "refuse_duplicates"]

_POLARS_HINT = "pip install 'modelsafe[polars]'"


def frame_library(x: Any) -> str | None:
    """``"pandas"`` or ``"polars"`` when ``x`` is a DataFrame of that library, else None."""
    cls = type(x)
    if cls.__name__ != "DataFrame":
        return None
    root = cls.__module__.partition(".")[0]
    return root if root in ("pandas", "polars") else None


def to_pandas(x: Any) -> Any:
    """A polars DataFrame as a pandas one, through Arrow; nulls stay missing values of nullable dtypes."""
    try:
        import pyarrow as pa
    except ImportError as exc:
        raise FlavorNotInstalledError(
            f"The input is a polars DataFrame, which modelsafe reads through Arrow, but pyarrow is not installed "
            f"here, so its columns cannot be checked. Install it with: {_POLARS_HINT}",
            flavor="polars", hint=_POLARS_HINT, name="pyarrow",
        ) from exc
    table = pa.table(x)
    return table.to_pandas(types_mapper=_nullable_types(pa).get)


def _nullable_types(pa: Any) -> dict[Any, Any]:
    """Arrow type -> pandas nullable dtype, so an integer column with nulls stays an integer column."""
    import pandas as pd

    mapping: dict[Any, Any] = {pa.bool_(): pd.BooleanDtype(), pa.float32(): pd.Float32Dtype(),
                               pa.float64(): pd.Float64Dtype()}
    for bits in (8, 16, 32, 64):
        mapping[getattr(pa, f"int{bits}")()] = getattr(pd, f"Int{bits}Dtype")()
        mapping[getattr(pa, f"uint{bits}")()] = getattr(pd, f"UInt{bits}Dtype")()
    for text in ("string", "large_string", "string_view"):
        if hasattr(pa, text):
            mapping[getattr(pa, text)()] = pd.StringDtype()
    return mapping


def frame_dtypes(frame: Any) -> list[Any]:
    """``frame.dtypes.tolist()``, read from the frame's block manager when pandas has one (40 times faster:
    no Series is built), so the guard costs little on every call."""
    get = getattr(getattr(frame, "_mgr", None), "get_dtypes", None)
    if get is not None:
        try:
            return list(get())
        except Exception:  # noqa: BLE001 - a pandas whose manager differs: the public way
            pass
    return frame.dtypes.tolist()


def column_array(frame: Any, position: int) -> Any:
    """The values of the column at ``position`` (a numpy or extension array), without building a Series."""
    get = getattr(getattr(frame, "_mgr", None), "iget_values", None)
    if get is not None:
        try:
            return get(position)
        except Exception:  # noqa: BLE001 - as above
            pass
    return frame.iloc[:, position].array


def duplicated(keys: Sequence[Hashable]) -> list[Hashable]:
    """The keys that occur more than once, in order of first occurrence."""
    counts = Counter(keys)
    return [k for k in counts if counts[k] > 1]


def refuse_duplicates(labels: Sequence[Any], keys: Sequence[Hashable], where: str) -> None:
    """Raise SchemaError naming the duplicated column names (``where``: "Input", "The sample")."""
    if len(set(keys)) == len(keys):
        return
    dupes = duplicated(keys)
    shown = [labels[list(keys).index(k)] for k in dupes]
    raise SchemaError(
        f"{where} has duplicate column name(s) {shown}: the input guard finds columns by name, so it cannot tell "
        f"which {shown[0]!r} the model should get. Give every column a unique name (e.g. df.columns = [...]).",
        column=shown[0], duplicates=shown, actual=list(labels),
    )
