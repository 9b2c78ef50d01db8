"""Property tests of the input guard and the sample codec over DataFrames.

Frames are drawn over every pandas dtype family (numeric, nullable, bool, category,
string/object, datetime with and without a time zone, timedelta), with names of every
kind (str, int, float, tuples of a MultiIndex, a mix), any column order, with and
without missing values, and as polars frames. The schema is taken through JSON as a
loaded manifest holds it.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import modelsafe as ms
from modelsafe.checks.data import decode, difference, encode, npy_bytes, npy_load
from modelsafe.checks.labels import label_key
from modelsafe.checks.schema import Guard, InputWarning, capture_schema

pl = pytest.importorskip("polars")

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _column(family: str, rng: np.random.Generator, n: int, with_na: bool) -> pd.Series:
    """``n`` values of one dtype family (``with_na``: some missing, for dtypes that hold them)."""
    na = rng.random(n) < 0.3 if with_na else np.zeros(n, bool)
    ints = rng.integers(-1000, 1000, n)
    floats = rng.normal(size=n) * 100
    words = np.array(["red", "green", "blue", "é ü", ""])[rng.integers(0, 5, n)]
    stamps = np.datetime64("2024-01-01T00:00:00", "ns") + rng.integers(0, 10**15, n).astype("timedelta64[ns]")
    if family == "int64":
        return pd.Series(ints)
    if family == "int32":
        return pd.Series(ints.astype(np.int32))
    if family == "uint8":
        return pd.Series((ints % 256).astype(np.uint8))
    if family == "float64":
        return pd.Series(np.where(na, np.nan, floats))
    if family == "float32":
        return pd.Series(floats.astype(np.float32))
    if family == "bool":
        return pd.Series(ints % 2 == 0)
    if family in ("Int64", "Float64", "boolean"):
        values = {"Int64": ints, "Float64": floats, "boolean": ints % 2 == 0}[family]
        series = pd.Series(pd.array(values, dtype=family))
        series[na] = pd.NA
        return series
    if family == "category":
        return pd.Series(pd.Categorical(np.where(na, None, words)))
    if family == "string":
        series = pd.Series(pd.array(words, dtype="string"))
        series[na] = pd.NA
        return series
    if family == "object":
        return pd.Series(np.where(na, None, words).astype(object), dtype=object)
    if family == "datetime":
        return pd.Series(np.where(na, np.datetime64("NaT"), stamps))
    if family == "datetime_tz":
        return pd.Series(stamps).dt.tz_localize("UTC").dt.tz_convert("Europe/Paris")
    if family == "timedelta":
        return pd.Series(rng.integers(0, 10**12, n).astype("timedelta64[ns]"))
    raise AssertionError(family)


FAMILIES = ["int64", "int32", "uint8", "float64", "float32", "bool", "Int64", "Float64", "boolean", "category",
            "string", "object", "datetime", "datetime_tz", "timedelta"]
NAME_STYLES = ["str", "int", "float", "tuple", "mixed"]


def _names(style: str, count: int) -> list:
    if style == "str":
        return [f"col {i}" for i in range(count)]
    if style == "int":
        return [10 * i - 3 for i in range(count)]
    if style == "float":
        return [i + 0.5 for i in range(count)]
    if style == "tuple":
        return [("group", i) for i in range(count)]
    return [[f"c{i}", i, i + 0.25][i % 3] for i in range(count)]


@st.composite
def frames(draw, min_rows: int = 1, families=FAMILIES):
    count = draw(st.integers(1, 6))
    chosen = draw(st.lists(st.sampled_from(families), min_size=count, max_size=count))
    rows = draw(st.integers(min_rows, 60))
    seed = draw(st.integers(0, 2**32 - 1))
    with_na = draw(st.booleans())
    style = draw(st.sampled_from(NAME_STYLES))
    rng = np.random.default_rng(seed)
    names = _names(style, count)
    data = pd.concat([_column(f, rng, rows, with_na).rename(i) for i, f in enumerate(chosen)], axis=1)
    data.columns = pd.MultiIndex.from_tuples(names) if style == "tuple" else pd.Index(names, dtype=object)
    return data


def _schema(x, **kwargs):
    """The schema as a loaded manifest holds it (through JSON)."""
    return json.loads(json.dumps(capture_schema(x, **kwargs)))


def _quiet(guard: Guard, x):
    """``guard.check(x)``, failing on any warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return guard.check(x)


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert [label_key(c) for c in a.columns] == [label_key(c) for c in b.columns]
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True), check_column_type=False)


@SETTINGS
@given(frames(), st.randoms(use_true_random=False))
def test_the_saved_frame_passes_in_any_column_order(df, random):
    guard = Guard(_schema(df))
    _same(_quiet(guard, df), df)
    order = list(range(df.shape[1]))
    random.shuffle(order)
    _same(_quiet(guard, df.iloc[:, order]), df)


@SETTINGS
@given(frames())
def test_the_sample_codec_reads_back_what_it_stored(df):
    members: dict[str, memoryview] = {}

    def write(name, array):
        members[name] = npy_bytes(array)
        return name

    spec = json.loads(json.dumps(encode(df, write, "inputs")))
    back = decode(spec, lambda name: npy_load(members[name]))
    assert difference(df, back) is None, difference(df, back)


@SETTINGS
@given(frames(), st.data())
def test_a_missing_column_is_named(df, data):
    guard = Guard(_schema(df))
    j = data.draw(st.integers(0, df.shape[1] - 1))
    dropped = df.columns[j]
    with pytest.raises(ms.SchemaError) as info:
        guard.check(df.drop(columns=[dropped]))
    assert label_key(info.value.column) == label_key(dropped)


@SETTINGS
@given(frames(), st.data())
def test_a_duplicated_column_is_refused_by_name(df, data):
    guard = Guard(_schema(df))
    j = data.draw(st.integers(0, df.shape[1] - 1))
    doubled = pd.concat([df, df.iloc[:, [j]]], axis=1)
    with pytest.raises(ms.SchemaError, match="duplicate column name") as info:
        guard.check(doubled)
    assert [label_key(c) for c in info.value.duplicates] == [label_key(df.columns[j])]
    with pytest.raises(ms.SchemaError, match="duplicate column name"):
        capture_schema(doubled)


@SETTINGS
@given(frames(families=["int64", "float64", "category", "string"]))
def test_an_extra_column_warns_and_is_dropped(df):
    guard = Guard(_schema(df))
    extra = df.assign(**{"not a feature": 1}) if not isinstance(df.columns, pd.MultiIndex) else \
        pd.concat([df, pd.DataFrame({("zz", 99): np.ones(len(df))})], axis=1)
    with pytest.warns(InputWarning, match="they are ignored"):
        out = guard.check(extra)
    _same(out, df)


@SETTINGS
@given(frames(families=["int64", "int32", "bool"]), st.data())
def test_missing_values_into_a_column_that_cannot_hold_them_are_counted(df, data):
    guard = Guard(_schema(df))
    j = data.draw(st.integers(0, df.shape[1] - 1))
    missing = data.draw(st.integers(1, len(df)))
    nullable = df.convert_dtypes()
    _same(_quiet(guard, nullable), df)  # without NA the nullable frame is the same data
    column = nullable.iloc[:, j].copy()
    column.iloc[:missing] = pd.NA
    nullable.isetitem(j, column)
    with pytest.raises(ms.SchemaError, match=f"has {missing} missing value") as info:
        guard.check(nullable)
    assert info.value.missing == missing and label_key(info.value.column) == label_key(df.columns[j])


NARROW = ["int8", "int16", "int32", "uint8", "uint16", "uint32", "float32"]
NULLABLE = ["Int64", "Int32", "UInt64", "Float64"]


@SETTINGS
@given(st.sampled_from(NARROW), st.data())
def test_a_nullable_column_is_never_narrowed_into_the_saved_dtype(saved, data):
    """A nullable column without NA reaches the model with every value it holds, as the plain column of the same
    values would (a value outside the saved dtype's range is never wrapped or rounded into it); with NA into a
    float column, the NA become NaN and the rest stay whole."""
    saved_dtype = np.dtype(saved)
    nullable = data.draw(st.sampled_from(NULLABLE if saved_dtype.kind == "f" else NULLABLE[:-1]))
    df = pd.DataFrame({"x": np.arange(40).astype(saved_dtype), "y": np.arange(40.0)})
    guard = Guard(_schema(df))
    own = pd.array([], dtype=nullable).dtype.numpy_dtype
    bound = np.iinfo(own) if own.kind in "iu" else np.finfo(own)
    low = max(int(bound.min), -(2**62)) if own.kind != "u" else 0
    high = min(int(bound.max), 2**62)
    values = data.draw(st.lists(st.integers(low, high), min_size=1, max_size=8))
    with_na = data.draw(st.booleans()) and saved_dtype.kind == "f"
    column = pd.array(values + ([None] if with_na else []), dtype=nullable)
    x = pd.DataFrame({"x": column, "y": np.arange(len(column), dtype=float)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InputWarning)  # far outside the sample's range: said, and predicted
        out = guard.check(x)
    given_values = x["x"].to_numpy(dtype="float64", na_value=np.nan)
    reached = out["x"].to_numpy(dtype="float64")
    assert np.array_equal(reached, given_values, equal_nan=True), (out["x"].dtype, values)


TIME_INPUTS = {
    "naive": lambda n: pd.Series(pd.date_range("2024-01-01", periods=n, freq="h")),
    "utc": lambda n: pd.Series(pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC")),
    "paris": lambda n: pd.Series(pd.date_range("2024-01-01", periods=n, freq="h", tz="Europe/Paris")),
    "timedelta": lambda n: pd.Series(pd.to_timedelta(np.arange(n), unit="s")),
    "int": lambda n: pd.Series(np.arange(n)),
    "float": lambda n: pd.Series(np.arange(n) / 2),
    "bool": lambda n: pd.Series(np.arange(n) % 2 == 0),
}
#: saved -> given kinds that pass (every other pair is refused, naming the column and both dtypes)
TIME_PASSES = {"naive": {"naive"}, "utc": {"utc", "paris"}, "paris": {"utc", "paris"}, "timedelta": {"timedelta"}}


@SETTINGS
@given(st.sampled_from(sorted(TIME_PASSES)), st.sampled_from(sorted(TIME_INPUTS)), st.booleans())
def test_times_pass_only_as_times_of_the_same_kind(saved, given_kind, with_na):
    """A datetime column passes as datetimes with (any) time zone or without one, as saved; a timedelta as a
    timedelta; numbers into a time column, and time zones added or dropped, are refused by name."""
    n = 40
    df = pd.DataFrame({"t": TIME_INPUTS[saved](n), "x": np.arange(n, dtype=float)})
    guard = Guard(_schema(df))
    column = TIME_INPUTS[given_kind](n)
    if with_na and given_kind in TIME_PASSES:
        column.iloc[3] = pd.NaT  # a missing time is a time: it never decides the verdict
    x = pd.DataFrame({"t": column, "x": np.arange(n, dtype=float)})
    if given_kind in TIME_PASSES[saved]:
        out = _quiet(guard, x)
        assert out["t"].equals(x["t"])
    else:
        with pytest.raises(ms.SchemaError) as info:
            guard.check(x)
        assert info.value.column == "t" and "'t'" in str(info.value)


@SETTINGS
@given(frames(families=["int64", "uint8", "Int64", "bool"]), st.data())
def test_fractions_or_text_into_an_integer_column_are_refused(df, data):
    guard = Guard(_schema(df))
    j = data.draw(st.integers(0, df.shape[1] - 1))
    changed = df.copy()
    replacement = data.draw(st.sampled_from(["fractions", "text"]))
    values = np.arange(len(df)) + 0.5 if replacement == "fractions" else np.array(["x"] * len(df), dtype=object)
    changed.isetitem(j, values)
    with pytest.raises(ms.SchemaError, match="would change its values") as info:
        guard.check(changed)
    assert label_key(info.value.column) == label_key(df.columns[j])


@SETTINGS
@given(frames())
def test_old_schemas_with_names_as_text_still_read(df):
    schema = capture_schema(df)
    for column, name in zip(schema["columns"], df.columns):  # the form written before names were stored losslessly
        column["name"] = name if isinstance(name, (str, int)) else str(name)
        column.pop("family"), column.pop("nullable"), column.pop("tz", None)
    del schema["version"], schema["range_rows"]
    _same(_quiet(Guard(json.loads(json.dumps(schema))), df), df)


# polars: the families polars has (its frames are built from the pandas ones through Arrow)
POLARS_FAMILIES = ["int64", "int32", "float64", "bool", "Int64", "Float64", "boolean", "category", "string",
                   "datetime", "datetime_tz", "timedelta"]


def _polars(df: pd.DataFrame):
    named = df.copy()
    named.columns = [f"p{label}" for label in range(df.shape[1])]
    return pl.from_pandas(named)


@SETTINGS
@given(frames(families=POLARS_FAMILIES), st.randoms(use_true_random=False))
def test_polars_frames_are_checked_by_name_and_stay_polars(df, random):
    frame = _polars(df)
    guard = Guard(_schema(frame))
    names = list(frame.columns)
    random.shuffle(names)
    out = _quiet(guard, frame.select(names))
    assert isinstance(out, pl.DataFrame) and out.equals(frame)
    with pytest.raises(ms.SchemaError) as info:
        guard.check(frame.drop(names[0]))
    assert info.value.column == names[0]


@SETTINGS
@given(frames(families=POLARS_FAMILIES))
def test_polars_samples_read_back_as_polars(df):
    frame = _polars(df)
    # A column with no value at all has polars' Null dtype, which reads back as String (the save
    # then replays the sample to check it still gives the recorded outputs).
    assume(not any(dtype == pl.Null for dtype in frame.dtypes))
    members: dict[str, memoryview] = {}

    def write(name, array):
        members[name] = npy_bytes(array)
        return name

    back = decode(json.loads(json.dumps(encode(frame, write, "s"))), lambda name: npy_load(members[name]))
    assert isinstance(back, pl.DataFrame) and difference(frame, back) is None, difference(frame, back)


@SETTINGS
@given(frames(families=POLARS_FAMILIES))
def test_polars_input_to_a_pandas_schema_passes_without_a_dtype_error(df):
    named = df.copy()
    named.columns = [f"p{i}" for i in range(df.shape[1])]
    guard = Guard(_schema(named))
    frame = pl.from_pandas(named)
    assert _quiet(guard, frame).equals(frame)
