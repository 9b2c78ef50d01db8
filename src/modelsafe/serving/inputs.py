"""Request values (JSON, CSV, typed tensors) made into the input the model was saved with.

JSON cannot say ``float32``, ``category`` or ``Int64``, and its object keys are always
text. :class:`InputSpec`, compiled once per model from the recorded input schema, bridges
only that gap: it builds the kind of input the model was saved with (a DataFrame with the
recorded column names, an array of the recorded dtype, a list of texts, a dict or tuple
of arrays) and converts a column to the recorded dtype where JSON could not carry it and
no value changes. Everything else is left to the input guard, which then refuses a
missing column or a lossy dtype with the same :class:`~modelsafe.errors.SchemaError` as
``Bundle.predict``.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from modelsafe.checks.labels import decode_label
from modelsafe.serving.errors import MalformedRequestError

__all__ = ["InputSpec", "rows_in"]


class InputSpec:
    """How to build this model's input from request values (see the module docstring)."""

    def __init__(self, schema: Mapping[str, Any] | None) -> None:
        schema = dict(schema or {})
        self.kind = schema.get("kind") or "unknown"
        exact = int(schema.get("version", 1)) >= 2
        self.columns = schema.get("columns") or []
        self.labels = [decode_label(c["name"]) if exact else c["name"] for c in self.columns]
        self.by_text = {str(label): label for label in self.labels}
        self._index: Any = None
        self.dtype_names = [str(c.get("dtype")) for c in self.columns]
        self.single = _single_dtype(self.columns)
        self.dtype = schema.get("dtype")
        self.shape = schema.get("shape")
        self.parts = [InputSpec(s) for s in schema.get("inputs", ())] if self.kind == "positional" else []
        self.named = {k: InputSpec(s) for k, s in (schema.get("inputs") or {}).items()} if self.kind == "dict" else {}

    @property
    def is_frame(self) -> bool:
        return self.kind == "dataframe"

    # --- builders, one per shape of request data -------------------------------------------
    def from_split(self, columns: Sequence[Any] | None, data: Sequence[Any], index: Sequence[Any] | None) -> Any:
        """pandas' ``split`` orientation (``columns`` + ``data`` rows), as MLflow's ``dataframe_split``."""
        pd = _pandas()
        if not isinstance(data, list):
            raise _malformed("'data' of dataframe_split", "a list of rows", data)
        if columns is None:
            return self.from_rows(data)
        names = self._names(columns)
        fast = self._numeric_frame(names, data) if index is None else None
        if fast is not None:
            return fast
        try:
            frame = pd.DataFrame(data, columns=names, index=index)
        except (ValueError, TypeError) as exc:
            raise _malformed("dataframe_split", f"rows of {len(columns)} value(s) matching 'columns'", data,
                             detail=str(exc)) from None
        return self.frame(frame)

    def from_records(self, records: Sequence[Any]) -> Any:
        """A list of ``{column: value}`` objects (``dataframe_records``, or ``instances`` of objects)."""
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise _malformed("records", "a list of {column: value} objects", records)
        keys = _keys(records)
        if self.kind == "dict":
            return self.from_columns({k: [r.get(k) for r in records] for k in keys})
        names = self._names(keys)
        if names is self._index and all(len(r) == len(keys) for r in records):
            fast = self._numeric_frame(names, [[r[k] for k in keys] for r in records])
            if fast is not None:
                return fast
        return self.frame(_pandas().DataFrame.from_records(records, columns=names))

    def from_columns(self, columns: Mapping[str, Any]) -> Any:
        """``{name: values}``: a DataFrame's columns, or the named inputs of a model taking a dict."""
        if self.kind == "dict":
            return {k: self.named[k].array(v) if k in self.named else np.asarray(v) for k, v in columns.items()}
        if self.kind == "positional":
            return self.from_rows(list(columns.values()))
        if not self.is_frame and len(columns) == 1:
            return self.from_rows(next(iter(columns.values())))
        try:
            frame = _pandas().DataFrame({k: _column(v) for k, v in columns.items()}, columns=self._names(columns))
        except (ValueError, TypeError) as exc:
            raise _malformed("columns", "columns of equal length", {k: _length(v) for k, v in columns.items()},
                             detail=str(exc)) from None
        return self.frame(frame)

    def from_rows(self, rows: Any) -> Any:
        """Row-major values with no names: an array, a list of texts, positional inputs, or
        rows of a DataFrame in the recorded column order (positions are trusted, and a
        warning says so)."""
        if self.kind == "texts":
            if not isinstance(rows, list) or not all(isinstance(t, str) for t in rows):
                raise _malformed("texts", "a list of strings", rows)
            return rows
        if self.kind == "positional":
            if not isinstance(rows, list) or len(rows) != len(self.parts):
                raise _malformed("positional inputs", f"a list of {len(self.parts)} arrays", rows)
            return tuple(part.array(value) for part, value in zip(self.parts, rows))
        if self.is_frame:
            return self._frame_from_rows(rows)
        return self.array(rows)

    def _frame_from_rows(self, rows: Any) -> Any:
        from modelsafe.checks.ranges import warn_input

        width = len(self.labels)
        array = np.asarray(rows, dtype=object) if isinstance(rows, list) else None
        if array is None or array.ndim != 2 or array.shape[1] != width:
            shape = None if array is None else list(array.shape)
            raise _malformed("rows", f"rows of {width} value(s), the columns {self.labels} in this order", shape)
        warn_input(f"Rows were sent without column names, but the model was saved with named columns {self.labels}: "
                   "the server cannot check their order, so it trusts the positions. Send dataframe_split with "
                   "'columns', or dataframe_records, to have columns matched by name.")
        pd = _pandas()
        frame = pd.DataFrame({j: _column(array[:, j].tolist()) for j in range(width)})
        frame.columns = self._names(self.labels)
        return self.frame(frame)

    def array(self, values: Any) -> Any:
        """``values`` as an array of the recorded dtype where that changes no value (else as given)."""
        try:
            array = values if isinstance(values, np.ndarray) else np.asarray(values)
        except (ValueError, TypeError) as exc:
            raise _malformed("array", "a rectangular (not ragged) nested list", type(values).__name__,
                             detail=str(exc)) from None
        return _exact_cast(array, self.dtype)

    def _numeric_frame(self, names: Any, rows: Any) -> Any:
        """Rows of plain JSON numbers for a model saved with one numeric dtype throughout, as a frame
        of that dtype built in one step (else None: the general path infers and converts)."""
        if self.single is None or names is not self._index or not isinstance(rows, list):
            return None
        allowed = (int, float) if self.single.kind == "f" else (int,)
        width = len(self.labels)
        for row in rows:
            if type(row) is not list or len(row) != width or any(type(v) not in allowed for v in row):
                return None
        try:
            values = np.array(rows, dtype=self.single)
        except (OverflowError, ValueError):
            return None
        return _pandas().DataFrame(values.reshape(len(rows), width), columns=names, copy=False)

    def _names(self, names: Any) -> Any:
        """Column names as a pandas Index of Python objects, the recorded one reused when they match.

        pandas 3 would build an Arrow string index for every request (about a millisecond for
        a few names); the labels stay the same Python values either way.
        """
        names = list(names)
        if names == self.labels:
            if self._index is None:
                self._index = _pandas().Index(self.labels, dtype=object)
            return self._index
        return _pandas().Index(names, dtype=object)

    # --- the recorded column dtypes --------------------------------------------------------
    def frame(self, frame: Any) -> Any:
        """``frame`` with text names mapped to the recorded labels (``"0"`` to ``0``) and columns
        converted to the recorded dtypes where JSON could not carry it and no value changes."""
        if not self.is_frame:
            return frame
        names = list(frame.columns)
        if names != self.labels:
            renames = {c: self.by_text[c] for c in names
                       if isinstance(c, str) and c in self.by_text and c not in self.labels}
            if renames:
                frame = frame.rename(columns=renames)
                names = list(frame.columns)
            if len(set(map(repr, names))) != len(names):
                return frame  # duplicate names: the guard says which
        dtypes = [str(d) for d in frame.dtypes.tolist()]
        if names == self.labels and dtypes == self.dtype_names:
            return frame
        where = {repr(label): i for i, label in enumerate(names)}
        for label, column, want in zip(self.labels, self.columns, self.dtype_names):
            i = where.get(repr(label))
            if i is None or dtypes[i] == want:
                continue
            converted = _convert(frame.iloc[:, i], column)
            if converted is not None:
                frame.isetitem(i, converted)
        return frame


def rows_in(value: Any) -> int:
    """How many rows (samples) a built input holds."""
    if isinstance(value, dict):
        value = next(iter(value.values()), [])
    elif isinstance(value, tuple):
        value = value[0] if value else []
    shape = getattr(value, "shape", None)
    if shape is not None:
        return int(shape[0]) if len(shape) else 1
    return len(value) if isinstance(value, list) else 1


def _single_dtype(columns: Sequence[Mapping[str, Any]]) -> np.dtype | None:
    """The one numpy number dtype of every recorded column, or None."""
    names = {str(c.get("dtype")) for c in columns}
    if len(names) != 1 or any(c.get("nullable") for c in columns):
        return None
    try:
        dtype = np.dtype(names.pop())
    except TypeError:
        return None
    return dtype if dtype.kind in "iuf" else None


def _convert(series: Any, column: Mapping[str, Any]) -> Any:
    """``series`` in the recorded dtype when JSON could not carry it and no value changes; else None."""
    want = str(column.get("dtype", ""))
    got = series.dtype
    if str(got) == want:
        return None
    try:
        target = np.dtype(want)
    except TypeError:
        return _convert_extension(series, want, column)
    if isinstance(got, np.dtype) and (got.kind in "iuf" and target.kind in "iuf" or got == object):
        cast = _exact_cast(series.to_numpy(), want)
        return cast if cast.dtype == target else None
    return None


def _convert_extension(series: Any, want: str, column: Mapping[str, Any]) -> Any:
    """Category, nullable numbers and strings: converted only when no value changes."""
    pd = _pandas()
    values = series.dropna()
    if want == "category":
        categories = column.get("categories")
        if categories and values.map(lambda v: isinstance(v, str)).all() and values.isin(categories).all():
            return series.astype(pd.CategoricalDtype(categories))
        return None
    try:
        converted = series.astype(want)
    except (TypeError, ValueError):
        return None
    same = converted.dropna()
    if len(same) != len(values):
        return None
    if values.dtype.kind in "iufb" and not np.array_equal(np.asarray(values, dtype=np.float64),
                                                          np.asarray(same, dtype=np.float64)):
        return None
    return converted


def _exact_cast(array: np.ndarray, dtype: str | None) -> np.ndarray:
    """``array`` as ``dtype`` when JSON numbers fit it: any float width for float64 values
    (JSON has one number type), integers within the range of the recorded integer type, and
    numbers with ``null`` (JSON's missing value) as floats with NaN."""
    try:
        target = np.dtype(dtype) if dtype is not None else None
    except TypeError:
        return array
    if target is None or array.dtype == target:
        return array
    if array.dtype == object:
        return array.astype(target) if target.kind == "f" and _numbers_or_null(array) else array
    if target.kind == "f" and array.dtype.kind in "iuf":
        return array.astype(target)
    if target.kind in "iu" and array.dtype.kind in "iu" and array.size:
        info = np.iinfo(target)
        if info.min <= array.min() and array.max() <= info.max:
            return array.astype(target)
    return array


def _numbers_or_null(array: np.ndarray) -> bool:
    return all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in array.ravel().tolist())


def _column(values: Any) -> Any:
    """One column's values (a list, or an array from a tensor), for pandas to infer the dtype of."""
    if not isinstance(values, (list, np.ndarray)):
        raise _malformed("column", "a list of values", values)
    return values


def _keys(records: Sequence[Mapping[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for record in records:
        seen.update(dict.fromkeys(record))
    return list(seen)


def _length(values: Any) -> Any:
    return len(values) if isinstance(values, list) else type(values).__name__


def _malformed(where: str, expected: str, actual: Any, detail: str = "") -> MalformedRequestError:
    shown = repr(actual)
    if len(shown) > 120:
        shown = shown[:117] + "..."
    extra = f" ({detail})" if detail else ""
    return MalformedRequestError(
        f"The request's {where} is not {expected}: got {shown}{extra}. The server cannot build the model's input "
        "from it. Send the payload in one of the documented shapes (see /docs for this model's schema).",
        expected=expected, actual=shown)


def _pandas() -> Any:
    import pandas as pd

    return pd
