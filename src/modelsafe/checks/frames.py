"""Data frames the guard reads: pandas, and polars through Arrow.

The guard reads a frame through a *view* (:func:`frame_view`): its column names, dtypes,
missing-value counts and numeric values, by position. A pandas frame is read directly; a
polars frame through the Arrow PyCapsule interface (``pyarrow.table``), zero-copy, with
dtypes as Arrow types. polars itself is never imported by modelsafe (a polars frame given
to it means the caller has it), and the model still receives the polars frame, realigned
by name with its own ``select``. At save, a polars sample is recorded and stored through
its pandas form (:func:`to_pandas`, nulls kept as missing values of nullable dtypes).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Hashable, Sequence

import numpy as np

from modelsafe.checks.dtypes import DType, describe_dtype
from modelsafe.errors import FlavorNotInstalledError, SchemaError

__all__ = ["frame_library", "frame_view", "PandasView", "ArrowView", "to_pandas", "frame_dtypes", "column_array",
           "duplicated", "refuse_duplicates"]

_POLARS_HINT = "pip install 'modelsafe[polars]'"


def frame_library(x: Any) -> str | None:
    """``"pandas"`` or ``"polars"`` when ``x`` is a DataFrame of that library, else None."""
    cls = type(x)
    if cls.__name__ != "DataFrame":
        return None
    root = cls.__module__.partition(".")[0]
    return root if root in ("pandas", "polars") else None


def _pyarrow() -> Any:
    try:
        import pyarrow
    except ImportError as exc:
        raise FlavorNotInstalledError(
            f"The input is a polars DataFrame, which modelsafe reads through Arrow, but pyarrow is not installed "
            f"here, so its columns cannot be checked. Install it with: {_POLARS_HINT}",
            flavor="polars", hint=_POLARS_HINT, name="pyarrow",
        ) from exc
    return pyarrow


def to_pandas(x: Any) -> Any:
    """A polars DataFrame as a pandas one, through Arrow; nulls stay missing values of nullable dtypes."""
    pa = _pyarrow()
    return pa.table(x).to_pandas(types_mapper=_nullable_types(pa).get)


class PandasView:
    """A pandas frame as the guard reads it."""

    def __init__(self, frame: Any) -> None:
        self.frame = frame

    def labels(self) -> list[Any]:
        return list(self.frame.columns)

    def same_labels(self, labels: list[Any], index: Callable[[], Any]) -> bool:
        """Whether the columns are ``labels`` in this order (``index()``: them as a pandas Index)."""
        columns = self.frame.columns
        return len(columns) == len(labels) and bool(columns.equals(index()))

    def take(self, order: list[int]) -> "PandasView":
        return PandasView(self.frame.iloc[:, order])

    def given(self, x: Any) -> Any:
        """What the model receives: the frame as checked (realigned, converted)."""
        return self.frame

    def dtypes(self) -> list[Any]:
        return frame_dtypes(self.frame)

    def rows(self) -> int:
        return len(self.frame)

    def missing(self, position: int) -> int:
        return int(self.frame.iloc[:, position].isna().sum())

    def floats(self, position: int) -> np.ndarray:
        return _floats(column_array(self.frame, position))

    def numbers(self) -> np.ndarray | None:
        """Every column as one numeric array, when they read as one (numpy ints and floats)."""
        values = self.frame.to_numpy()
        return values if values.dtype.kind in "iuf" else None

    def cast(self, casts: dict[int, np.dtype]) -> "PandasView":
        """The columns at ``casts``' positions converted (NA becomes NaN in float columns)."""
        frame = self.frame.copy(deep=False)
        for j, dtype in casts.items():
            frame.isetitem(j, frame.iloc[:, j].to_numpy(dtype=dtype, na_value=np.nan if dtype.kind == "f" else None))
        return PandasView(frame)


class ArrowView:
    """A frame of another library (polars) as the guard reads it: through its Arrow form."""

    def __init__(self, table: Any, source: Any) -> None:
        self.table = table
        self.source = source

    @classmethod
    def of(cls, x: Any) -> "ArrowView":
        return cls(_pyarrow().table(x), x)

    def labels(self) -> list[Any]:
        return list(self.table.column_names)

    def same_labels(self, labels: list[Any], index: Callable[[], Any]) -> bool:
        return self.labels() == labels

    def take(self, order: list[int]) -> "ArrowView":
        names = self.labels()
        return ArrowView(self.table.select(order), self.source.select([names[i] for i in order]))

    def given(self, x: Any) -> Any:
        return self.source

    def dtypes(self) -> list[DType]:
        return [_arrow_dtype(t) for t in self.table.schema.types]

    def rows(self) -> int:
        return int(self.table.num_rows)

    def missing(self, position: int) -> int:
        return int(self.table.column(int(position)).null_count)

    def floats(self, position: int) -> np.ndarray:
        return _floats(self.table.column(int(position)).to_numpy())

    def numbers(self) -> np.ndarray | None:
        return None

    def cast(self, casts: dict[int, np.dtype]) -> "ArrowView":
        return self  # the model gets the frame as given: a polars frame is not converted


_ARROW_DTYPES: dict[Any, DType] = {}


def _arrow_dtype(arrow_type: Any) -> DType:
    """The DType of an Arrow column type (remembered: a frame's types repeat on every call)."""
    found = _ARROW_DTYPES.get(arrow_type)
    if found is None:
        found = describe_dtype(f"{arrow_type}[pyarrow]")
        if len(_ARROW_DTYPES) < 4096:
            _ARROW_DTYPES[arrow_type] = found
    return found


def frame_view(x: Any) -> PandasView | ArrowView | None:
    """How the guard reads ``x``, or None when it is no DataFrame."""
    library = frame_library(x)
    if library == "pandas":
        return PandasView(x)
    if library == "polars":
        return ArrowView.of(x)
    return None


def _floats(values: Any) -> np.ndarray:
    """One column's values as float64, missing values as NaN."""
    if isinstance(values, np.ndarray):
        return values.astype(np.float64, copy=False)
    return values.to_numpy(dtype=np.float64, na_value=np.nan)


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
    spellings = [list(dict.fromkeys(repr(c) for c, k in zip(labels, keys) if k == key)) for key in dupes]
    alike = [" and ".join(group) for group in spellings if len(group) > 1]
    same = f" ({'; '.join(alike)} are one name to pandas and Python: equal values)" if alike else ""
    raise SchemaError(
        f"{where} has duplicate column name(s) {shown}{same}: the input guard finds columns by name, so it cannot "
        f"tell which {shown[0]!r} the model should get. Give every column a unique name (e.g. df.columns = [...]).",
        column=shown[0], duplicates=shown, actual=list(labels),
    )
