"""Input schema: what the model was given at save, and the guard ``Bundle.predict`` runs.

At save the schema records the input's kind, column names and dtypes (or array dtype
and shape), and per numeric feature its min, max and a few quantiles, from ``sample``
or, when given, from ``training_data`` (better ranges).

At predict, :class:`Guard` (compiled once per bundle) checks each input:

* DataFrame columns in another order are realigned by name; a missing column raises
  :class:`~modelsafe.errors.SchemaError` naming it; an extra column warns and is dropped;
* a dtype change that loses information (float into an integer column, strings into a
  numeric one) raises SchemaError with the column and both dtypes;
* values far outside the recorded ranges warn (raw input given to a model trained on
  scaled input is the classic case).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from modelsafe.checks.data import describe_kind
from modelsafe.errors import SchemaError

_QUANTILES = (0.01, 0.5, 0.99)
_MAX_FEATURES = 2048
#: A value is "far outside" when it lies more than this many recorded spans beyond [min, max].
FAR = 1.0


class InputWarning(UserWarning):
    """Input given to ``Bundle.predict`` looks unlike what the model saw at save."""


def _ranges(values: np.ndarray) -> dict[str, Any]:
    values = values[~np.isnan(values)] if values.dtype.kind == "f" else values
    if values.size == 0:
        return {}
    q = np.quantile(values.astype(np.float64), _QUANTILES)
    return {"min": float(values.min()), "max": float(values.max()),
            "quantiles": {str(k): float(v) for k, v in zip(_QUANTILES, q)}}


def _numeric(values: np.ndarray) -> bool:
    return values.dtype.kind in "iuf"


def capture_schema(x: Any, training_data: Any = None) -> dict[str, Any]:
    """Describe ``x``: kind, columns or features with dtypes, and value ranges.

    Ranges come from ``training_data`` when it is given (same layout as ``x``).
    """
    kind = describe_kind(x)
    ranges_from = x if training_data is None else training_data
    if kind == "dataframe":
        columns = []
        for name in x.columns:
            col = x[name]
            entry: dict[str, Any] = {"name": name if isinstance(name, (str, int)) else str(name), "dtype": str(col.dtype)}
            if str(col.dtype) == "category":
                entry["categories"] = [str(c) for c in col.cat.categories[:1000]]
            elif name in getattr(ranges_from, "columns", ()):
                values = ranges_from[name].to_numpy()
                if _numeric(values):
                    entry.update(_ranges(values))
            columns.append(entry)
        return {"kind": kind, "columns": columns, "ranges_from": _origin(training_data)}
    if kind in ("texts", "dict"):
        return {"kind": kind}
    try:
        arr = _array(x, kind)
        ref = arr if training_data is None else _array(training_data, describe_kind(training_data))
    except Exception:  # noqa: BLE001 - an input we cannot describe gets no schema
        return {"kind": kind}
    schema: dict[str, Any] = {"kind": kind, "dtype": str(arr.dtype), "shape": [None, *arr.shape[1:]],
                              "ranges_from": _origin(training_data)}
    if arr.ndim == 2 and _numeric(arr) and arr.shape[1] <= _MAX_FEATURES and ref.shape[1:] == arr.shape[1:]:
        schema["features"] = [_ranges(ref[:, j]) for j in range(ref.shape[1])]
    return schema


def _origin(training_data: Any) -> str:
    return "sample" if training_data is None else "training_data"


def _array(x: Any, kind: str) -> np.ndarray:
    if kind == "tensor" and hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


# ---------------------------------------------------------------------------------------
# the guard
# ---------------------------------------------------------------------------------------


def _loses_information(expected: str, actual: str) -> bool:
    """Whether feeding dtype kind ``actual`` where ``expected`` was saved changes values."""
    if expected in "iu":
        return actual in "fcOUSM"
    if expected in "fc":
        return actual in "OUSM"
    if expected == "b":
        return actual in "fcOUSM"
    if expected == "M":
        return actual in "iufcb"
    return False


def _as_dtype(name: str) -> Any:
    try:
        return np.dtype(name)
    except TypeError:
        return name  # an extension dtype ("category", "string"): compared by name, never equal to a numpy dtype


def _kind(dtype: Any) -> str:
    try:
        return np.dtype(dtype).kind
    except TypeError:
        return "O" if str(dtype) not in ("bool", "boolean") else "b"


@dataclass(frozen=True)
class _Ranges:
    names: tuple[Any, ...]
    index: np.ndarray
    low: np.ndarray
    high: np.ndarray
    seen_low: np.ndarray
    seen_high: np.ndarray


def _compile_ranges(names: Sequence[Any], entries: Sequence[dict[str, Any]]) -> _Ranges | None:
    picked = [(i, n, e) for i, (n, e) in enumerate(zip(names, entries)) if "min" in e and "max" in e]
    if not picked:
        return None
    lo = np.array([e["min"] for _, _, e in picked], dtype=np.float64)
    hi = np.array([e["max"] for _, _, e in picked], dtype=np.float64)
    span = np.where(hi > lo, hi - lo, np.maximum(np.abs(hi), 1.0))
    return _Ranges(tuple(n for _, n, _ in picked), np.array([i for i, _, _ in picked]),
                   lo - FAR * span, hi + FAR * span, lo, hi)


class Guard:
    """The predict-time check of one recorded schema (see the module docstring)."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.kind = schema.get("kind")
        self.origin = "during training" if schema.get("ranges_from") == "training_data" else "in the saved sample"
        columns = schema.get("columns") or []
        self.names = [c["name"] for c in columns]
        self.dtypes = [c["dtype"] for c in columns]
        self.kinds = [_kind(d) if d != "category" else "category" for d in self.dtypes]
        self.shape = schema.get("shape")
        self.dtype = schema.get("dtype")
        features = schema.get("features") or []
        if columns:
            self.ranges = _compile_ranges(self.names, columns)
        else:
            self.ranges = _compile_ranges([f"column {j}" for j in range(len(features))], features)
        self._all_numeric = bool(columns) and all(k in "iufb" for k in self.kinds)
        # A frame saved with one dtype throughout passes the dtype check when its values
        # still share exactly that dtype: one to_numpy(copy=False) instead of frame.dtypes.
        self._single_dtype = (np.dtype(self.dtypes[0]) if self._all_numeric and len(set(self.dtypes)) == 1
                              else None)
        self._all_ranged = self.ranges is not None and len(self.ranges.index) == len(self.names)
        self._saved_dtypes = [_as_dtype(d) for d in self.dtypes]

    def check(self, x: Any) -> Any:
        """Return ``x`` checked (and realigned); raise SchemaError or warn InputWarning."""
        if self.kind == "dataframe" and hasattr(x, "columns"):
            return self._frame(x)
        if self.kind == "texts":
            return self._texts(x)
        if self.kind in ("ndarray", "tensor") and self.shape is not None and hasattr(x, "shape"):
            return self._array(x)
        return x

    def _frame(self, x: Any) -> Any:
        columns = list(x.columns)
        if columns != self.names:
            x = self._realign(x, columns)
        values = x.to_numpy(copy=False) if self._single_dtype is not None else None
        if values is None or values.dtype != self._single_dtype:
            self._check_dtypes(x)
            values = None
        if self.ranges is not None:
            if values is None:
                values = (x.to_numpy(dtype=np.float64, copy=False) if self._all_numeric
                          else x[list(self.ranges.names)].to_numpy(dtype=np.float64))
            self._check_ranges(values if self._all_ranged else values[:, self.ranges.index])
        return x

    def _check_dtypes(self, x: Any) -> None:
        dtypes = x.dtypes.tolist()
        if dtypes == self._saved_dtypes:
            return
        for name, want, got in zip(self.names, self.kinds, dtypes):
            if want != "category" and _loses_information(want, _kind(got)):
                expected = self.dtypes[self.names.index(name)]
                raise SchemaError(
                    f"Column {name!r} has dtype {got} but the model was saved with {expected}: converting it would "
                    "change its values (e.g. fractions cut to integers, or text where numbers belong). Pass the "
                    f"column as {expected}, or fix the upstream data.", column=name, expected=expected, actual=str(got))

    def _realign(self, x: Any, columns: list[Any]) -> Any:
        present = set(columns)
        missing = [n for n in self.names if n not in present]
        if missing:
            raise SchemaError(
                f"Input is missing column(s) {missing}: the model was saved with columns {self.names}. Without them "
                "it cannot predict. Add the missing columns (same names) to the input.",
                column=missing[0], expected=self.names, actual=columns)
        known = set(self.names)
        extra = [c for c in columns if c not in known]
        if extra:
            warnings.warn(f"Input has column(s) {extra} the model was not saved with; they are ignored.",
                          InputWarning, stacklevel=5)
        return x[self.names]

    def _texts(self, x: Any) -> Any:
        if isinstance(x, (str, bytes)):
            raise SchemaError(
                f"Input is a single {type(x).__name__} but the model was saved with a list of texts: it would be read "
                "one character at a time. Wrap it in a list: predict([text]).",
                expected="list of texts", actual=type(x).__name__)
        return x

    def _array(self, x: Any) -> Any:
        shape = tuple(x.shape)
        expected = self.shape
        if len(shape) != len(expected) or list(shape[1:]) != list(expected[1:]):
            raise SchemaError(
                f"Input has shape {shape} but the model was saved with input shape "
                f"{tuple('n' if d is None else d for d in expected)}: the features do not line up. "
                "Pass input with the same number and order of features as at save.",
                expected=expected, actual=list(shape))
        got = getattr(x, "dtype", None)
        if self.dtype is not None and got is not None and isinstance(x, np.ndarray) \
                and _loses_information(_kind(self.dtype), got.kind):
            raise SchemaError(
                f"Input has dtype {got} but the model was saved with {self.dtype}: converting it would change its "
                f"values. Pass an array of {self.dtype}.", expected=self.dtype, actual=str(got))
        if self.ranges is not None and isinstance(x, np.ndarray) and x.ndim == 2 and x.dtype.kind in "iuf":
            self._check_ranges(x[:, self.ranges.index])
        return x

    def _check_ranges(self, values: np.ndarray) -> None:
        if values.size == 0:
            return
        # fmin/fmax skip NaN (missing values are not "out of range").
        low = np.fmin.reduce(values, axis=0) if values.dtype.kind == "f" else values.min(axis=0)
        high = np.fmax.reduce(values, axis=0) if values.dtype.kind == "f" else values.max(axis=0)
        r = self.ranges
        assert r is not None
        far = (low < r.low) | (high > r.high)
        if not far.any():
            return
        notes = [f"feature {r.names[j]!r} has values {low[j]:.4g}–{high[j]:.4g} but the model saw "
                 f"{r.seen_low[j]:.4g}–{r.seen_high[j]:.4g} {self.origin}" for j in np.flatnonzero(far)[:5]]
        more = "" if far.sum() <= 5 else f" (and {int(far.sum()) - 5} more)"
        warnings.warn("; ".join(notes) + more + ". Input far outside the recorded ranges usually means a "
                      "preprocessing step (a scaler, an encoder) was not applied, or the data changed; "
                      "predictions there are unreliable. Was the scaler applied?", InputWarning, stacklevel=5)


def check_input(schema: dict[str, Any], x: Any) -> Any:
    """Check ``x`` against ``schema`` once (``Bundle`` keeps a compiled :class:`Guard`)."""
    return Guard(schema).check(x)
