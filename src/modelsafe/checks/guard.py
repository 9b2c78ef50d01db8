"""The input guard: every input to ``Bundle.predict`` (and its other methods) checked against the schema.

:class:`Guard` is compiled once per bundle from the schema :mod:`modelsafe.checks.schema`
recorded at save, and the same guard runs when the verification sample is replayed, at
save and at load, so verification proves something about ``predict``.

* DataFrames (pandas, or polars read through Arrow) are matched by column name, the
  names compared like with like (``1`` is not ``"1"``); columns in another order are
  realigned; duplicate names, a missing column, and a dtype change that loses
  information (floats into an integer column, text into a numeric one, missing values
  into a column that cannot hold them) raise :class:`~modelsafe.errors.SchemaError`; an
  extra column warns and is dropped; a nullable column without missing values is
  converted to the numpy dtype the model was saved with.
* A numpy array given to a model saved with named columns must have as many columns;
  its positions are trusted, and the guard warns once that it cannot check them.
* Arrays must keep their feature shape and not lose information in their dtype.
* Positional inputs (a tuple ``(a, b)`` for ``forward(a, b)``) and keyword inputs (a
  dict) are checked input by input; a dict's keys must be the recorded ones.
* Values far outside the recorded ranges warn (see :mod:`modelsafe.checks.ranges`).
"""

from __future__ import annotations

import difflib
from typing import Any, Callable, Mapping

import numpy as np

from modelsafe.checks.dtypes import MISSING_IS_LOSSY, DType, conflict, describe_dtype
from modelsafe.checks.frames import ArrowView, PandasView, frame_view, refuse_duplicates
from modelsafe.checks.labels import decode_label, label_key, legacy_key, show_label
from modelsafe.checks.ranges import RangeCheck, warn_input
from modelsafe.errors import SchemaError

__all__ = ["Guard", "check_input"]

Check = Callable[[Any], Any]
#: Families of numpy dtypes a nullable column is converted to when its values fit.
_NUMPY_TARGETS = MISSING_IS_LOSSY | {"float"}


class Guard:
    """The predict-time check of one recorded schema (see the module docstring)."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.kind = schema.get("kind")
        self.check: Check = _compile(dict(schema))


def check_input(schema: Mapping[str, Any], x: Any) -> Any:
    """Check ``x`` against ``schema`` once (``Bundle`` keeps a compiled :class:`Guard`)."""
    return Guard(schema).check(x)


def _compile(schema: dict[str, Any]) -> Check:
    kind = schema.get("kind")
    if kind == "dataframe":
        return _FrameGuard(schema).check
    if kind == "texts":
        return _texts
    if kind in ("ndarray", "tensor") and schema.get("shape") is not None:
        return _ArrayGuard(schema).check
    if kind == "positional":
        return _PositionalGuard(schema).check
    if kind == "dict" and "keys" in schema:
        return _DictGuard(schema).check
    return _unchecked


def _unchecked(x: Any) -> Any:
    return x


def _texts(x: Any) -> Any:
    if isinstance(x, (str, bytes)):
        raise SchemaError(
            f"Input is a single {type(x).__name__} but the model was saved with a list of texts: it would be read "
            "one character at a time. Wrap it in a list: predict([text]).",
            expected="list of texts", actual=type(x).__name__)
    return x


def _recorded_dtype(column: Mapping[str, Any]) -> DType:
    if "family" in column:
        return DType(column["dtype"], column["family"], bool(column.get("nullable")), column.get("tz"))
    return describe_dtype(column["dtype"])  # an old schema: the family follows from the dtype's name


def _as_dtype(name: str) -> Any:
    """A recorded dtype as something ``frame.dtypes`` entries compare equal to (numpy dtype or its name)."""
    try:
        return np.dtype(name) if name != "str" else name
    except TypeError:
        return name  # an extension dtype ("category", "Int64"): pandas dtypes equal their names


def _widened(saved: np.dtype, got: Any, missing: int) -> np.dtype:
    """The dtype a nullable column is converted to: the saved one when it holds every value of the column's own
    numpy dtype, else that dtype (what a plain column of it would pass as): never a narrowing that wraps 300 into
    a uint8 column or 2**40 into an int32 one, or rounds a Float64 into float32 (missing values into a float
    column: float64, which holds both)."""
    own = getattr(got, "numpy_dtype", None)
    if not isinstance(own, np.dtype) or np.can_cast(own, saved, "safe"):
        return saved
    return np.dtype("float64") if saved.kind == "f" or missing else own


class _FrameGuard:
    def __init__(self, schema: dict[str, Any]) -> None:
        columns = schema.get("columns") or []
        exact = int(schema.get("version", 1)) >= 2
        self.key = label_key if exact else legacy_key
        self.labels = [decode_label(c["name"]) if exact else c["name"] for c in columns]
        self.keys = [self.key(label) for label in self.labels]
        self.known = set(self.keys)
        self.dtypes = [c["dtype"] for c in columns]
        self.infos = [_recorded_dtype(c) for c in columns]
        self.saved_dtypes = [_as_dtype(d) for d in self.dtypes]
        self.ranges = RangeCheck.compile(self.labels, columns, schema)
        self.all_ranged = self.ranges is not None and len(self.ranges.index) == len(self.labels)
        self.plain = _plain_numbers(self.saved_dtypes)
        self.index: Any = None  # the saved names as a pandas Index, built on first use
        self.warned_positions = False

    def check(self, x: Any) -> Any:
        view = frame_view(x)
        if view is None:
            return self._positions(x)
        if not view.same_labels(self.labels, self._index):
            view = view.take(self._order(view.labels()))
        dtypes = view.dtypes()
        if dtypes == self.saved_dtypes:
            dtypes = self.saved_dtypes  # the same: what is known of the saved dtypes holds
        else:
            casts = self._check_dtypes(view, dtypes)
            if casts:
                view = view.cast(casts)
                dtypes = view.dtypes()
        if self.ranges is not None:
            self.ranges.check(self._values(view, dtypes), show_label)
        return view.given(x)

    def _index(self) -> Any:
        """The saved names as a pandas Index (built on first use: comparing Indexes is fast)."""
        if self.index is None:
            import pandas as pd

            self.index = pd.Index(self.labels, tupleize_cols=True)
        return self.index

    def _values(self, view: PandasView | ArrowView, dtypes: list[Any]) -> np.ndarray:
        """The ranged columns as one array, found by position (the view is in the saved order now)."""
        if self.all_ranged and (self.plain if dtypes is self.saved_dtypes else _plain_numbers(dtypes)):
            values = view.numbers()
            if values is not None:
                return values
        assert self.ranges is not None
        picked = self.ranges.index
        values = np.empty((view.rows(), len(picked)), dtype=np.float64, order="F")  # reduced column by column
        for i, j in enumerate(picked):
            values[:, i] = view.floats(j)
        return values

    def _order(self, labels: list[Any]) -> list[int]:
        """Positions of the saved columns in the input, or SchemaError for duplicate or missing ones."""
        keys = [self.key(c) for c in labels]
        refuse_duplicates(labels, keys, "Input")
        where = {k: i for i, k in enumerate(keys)}
        missing = [label for label, k in zip(self.labels, self.keys) if k not in where]
        extra = [c for c, k in zip(labels, keys) if k not in self.known]
        if missing:
            raise SchemaError(
                f"Input is missing column(s) {missing}: the model was saved with columns {self.labels}. Without them "
                f"it cannot predict.{_hint(missing, extra)} Add the missing columns (same names) to the input.",
                column=missing[0], missing=missing, expected=self.labels, actual=labels)
        if extra:
            warn_input(f"Input has column(s) {extra} the model was not saved with; they are ignored.")
        return [where[k] for k in self.keys]

    def _check_dtypes(self, view: PandasView | ArrowView, dtypes: list[Any]) -> dict[int, np.dtype]:
        """Raise SchemaError for a lossy dtype; return the nullable columns to convert to the saved dtype."""
        casts: dict[int, np.dtype] = {}
        for j, (want, got) in enumerate(zip(self.infos, dtypes)):
            # An Arrow column's DType is never a numpy dtype: comparing the two would make numpy try (and fail,
            # building an error message) to read the DType as a dtype, on every call.
            if not isinstance(got, DType) and got == self.saved_dtypes[j]:
                continue
            have = describe_dtype(got)
            label, expected = self.labels[j], self.dtypes[j]
            reason = conflict(want, have)
            if reason is not None:
                raise SchemaError(
                    f"Column {show_label(label)} has dtype {have.name} but the model was saved with {expected} "
                    f"({reason}): converting it would change its values (e.g. fractions cut to integers, or text "
                    f"where numbers belong). Pass the column as {expected}, or fix the upstream data.",
                    column=label, expected=expected, actual=have.name)
            if have.nullable and isinstance(self.saved_dtypes[j], np.dtype) and want.family in _NUMPY_TARGETS:
                missing = view.missing(j)
                if missing and want.family in MISSING_IS_LOSSY:
                    raise SchemaError(
                        f"Column {show_label(label)} has {missing} missing value(s) (dtype {have.name}) but the model "
                        f"was saved with {expected}, which cannot hold them: they would become numbers (or fail) "
                        "without a word. Fill them (df[col].fillna(...)) or drop those rows before predicting.",
                        column=label, expected=expected, actual=have.name, missing=missing)
                casts[j] = _widened(self.saved_dtypes[j], got, missing)
        return casts

    def _positions(self, x: Any) -> Any:
        """An array (no column names) given to a model saved with named columns."""
        shape = getattr(x, "shape", None)
        if shape is None:
            return x
        width = len(self.labels)
        if len(shape) != 2 or shape[1] != width:
            raise SchemaError(
                f"Input is a {type(x).__name__} of shape {tuple(shape)} but the model was saved with a DataFrame of "
                f"{width} column(s) {self.labels}: the features do not line up. Pass a DataFrame with these columns "
                f"(or an array of shape (n, {width}) in this order).", expected=width, actual=list(shape))
        if not self.warned_positions:
            self.warned_positions = True
            warn_input(f"Input is a {type(x).__name__} without column names, but the model was saved with named "
                       f"columns {self.labels}: modelsafe cannot check their order, so it trusts the positions "
                       f"(column 0 is {show_label(self.labels[0])}). Pass a DataFrame to have columns matched by name.")
        if self.ranges is not None and isinstance(x, np.ndarray) and x.dtype.kind in "iuf":
            self.ranges.check(x[:, self.ranges.index], show_label)
        return x


def _plain_numbers(dtypes: list[Any]) -> bool:
    """Whether every dtype is a numpy integer or float (the frame's values then read as one array)."""
    return all(isinstance(d, np.dtype) and d.kind in "iuf" for d in dtypes)


def _hint(missing: list[Any], extra: list[Any]) -> str:
    """Say so when a missing name is an extra one's twin in another type (1 and '1'), or a near miss."""
    notes = []
    texts = {str(e): e for e in extra}
    for name in missing:
        twin = texts.get(str(name))
        if twin is not None:
            notes.append(f"the input has {show_label(twin)} ({type(twin).__name__}) where the model was saved with "
                         f"{show_label(name)} ({type(name).__name__})")
        elif isinstance(name, str):
            close = difflib.get_close_matches(name, [e for e in extra if isinstance(e, str)], n=1)
            if close:
                notes.append(f"{close[0]!r} in the input may be {name!r} misspelt")
    return (" Note: " + "; ".join(notes) + ".") if notes else ""


class _ArrayGuard:
    def __init__(self, schema: dict[str, Any]) -> None:
        self.shape = schema["shape"]
        self.dtype = schema.get("dtype")
        features = schema.get("features") or []
        self.ranges = RangeCheck.compile([f"column {j}" for j in range(len(features))], features, schema)

    def check(self, x: Any) -> Any:
        shape = getattr(x, "shape", None)
        if shape is None:
            return x
        shape, expected = tuple(shape), self.shape
        if len(shape) != len(expected) or list(shape[1:]) != list(expected[1:]):
            raise SchemaError(
                f"Input has shape {shape} but the model was saved with input shape "
                f"{tuple('n' if d is None else d for d in expected)}: the features do not line up. "
                "Pass input with the same number and order of features as at save.",
                expected=expected, actual=list(shape))
        if not isinstance(x, np.ndarray):
            return x
        if self.dtype is not None and conflict(describe_dtype(self.dtype), describe_dtype(x.dtype)) is not None:
            raise SchemaError(
                f"Input has dtype {x.dtype} but the model was saved with {self.dtype}: converting it would change its "
                f"values. Pass an array of {self.dtype}.", expected=self.dtype, actual=str(x.dtype))
        if self.ranges is not None and x.ndim == 2 and x.dtype.kind in "iuf":
            self.ranges.check(x[:, self.ranges.index], show_label)
        return x


def _relabel(exc: SchemaError, where: str, **facts: Any) -> SchemaError:
    """``exc`` said of one input among several (``where``: "Input 1 of 2", "Input 'ids'")."""
    known = {k: v for k, v in vars(exc).items() if k != "message"}
    return SchemaError(f"{where}: {exc.message}", **{**known, **facts})


class _PositionalGuard:
    def __init__(self, schema: dict[str, Any]) -> None:
        self.inputs = [Guard(s).check for s in schema.get("inputs", ())]
        self.container = schema.get("container", "tuple")

    def check(self, x: Any) -> Any:
        n = len(self.inputs)
        if not isinstance(x, (list, tuple)):
            if n == 1:
                return self.inputs[0](x)
            raise SchemaError(
                f"Input is one {type(x).__name__} but the model was saved with {n} positional inputs: it takes them "
                f"together. Pass them as a {self.container} of {n} arrays, as at save.", expected=n, actual=1)
        if len(x) != n:
            raise SchemaError(
                f"Input has {len(x)} positional input(s) but the model was saved with {n}: they would be given to the "
                f"wrong parameters. Pass {n} arrays, in the order of the sample given at save.",
                expected=n, actual=len(x))
        checked = []
        for i, (check, value) in enumerate(zip(self.inputs, x)):
            try:
                checked.append(check(value))
            except SchemaError as exc:
                raise _relabel(exc, f"Input {i} of {n}", input=i) from None
        return type(x)(checked)


class _DictGuard:
    def __init__(self, schema: dict[str, Any]) -> None:
        self.keys = list(schema["keys"])
        inputs = schema.get("inputs") or {}
        self.inputs = {k: Guard(inputs[k]).check if k in inputs else _unchecked for k in self.keys}

    def check(self, x: Any) -> Any:
        if not isinstance(x, Mapping):
            return x
        given = {str(k): v for k, v in x.items()}
        missing = [k for k in self.keys if k not in given]
        extra = [k for k in given if k not in self.inputs]
        if missing:
            raise SchemaError(
                f"Input is missing key(s) {missing}: the model was saved with the named inputs {self.keys} and got "
                f"{list(given)}. It cannot run without them.{_hint(missing, extra)} Pass a dict with these keys.",
                column=missing[0], missing=missing, expected=self.keys, actual=list(given))
        if extra:
            warn_input(f"Input has key(s) {extra} the model was not saved with; they are ignored.")
        checked = {}
        for key in self.keys:
            try:
                checked[key] = self.inputs[key](given[key])
            except SchemaError as exc:
                raise _relabel(exc, f"Input {key!r}", input=key) from None
        return checked
