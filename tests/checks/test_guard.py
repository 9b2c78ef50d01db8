"""The input guard on the inputs a new user gives it: tiny samples, numpy for a named model,
missing values, non-string names, and verification going through the guard."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

import modelsafe as ms
from modelsafe.checks.frames import column_array, frame_dtypes
from modelsafe.checks.ranges import FAR, MIN_RANGE_ROWS, width
from modelsafe.checks.schema import Guard, InputWarning, capture_schema


def _input_warnings(call):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        result = call()
    return result, [str(w.message) for w in seen if issubclass(w.category, InputWarning)]


# ---------------------------------------------------------------------------------------
# ranges
# ---------------------------------------------------------------------------------------


def test_a_tiny_sample_records_no_ranges_and_predicting_on_the_rest_does_not_warn(tmp_path):
    from sklearn.linear_model import LinearRegression

    df = pd.DataFrame({"x": np.arange(100.0), "z": np.arange(100.0) ** 2})
    ms.save(LinearRegression().fit(df, df["x"]), tmp_path / "m.msafe", sample=df[:10])
    schema = ms.inspect(tmp_path / "m.msafe").schema
    assert schema["ranges_from"] is None and schema["range_rows"] == 10
    assert all("min" not in c for c in schema["columns"])
    _, seen = _input_warnings(lambda: ms.load(tmp_path / "m.msafe").predict(df))
    assert seen == []


def test_the_band_widens_for_ranges_from_few_rows_and_the_warning_says_where_they_came_from():
    assert width(MIN_RANGE_ROWS) > width(100) > width(10_000) > FAR
    rng = np.random.default_rng(3)
    data = rng.normal(size=(20_000, 2))
    guard = Guard(capture_schema(data[:40]))
    _, seen = _input_warnings(lambda: guard.check(data))  # the rest of the same data: inside the band
    assert seen == []
    _, seen = _input_warnings(lambda: guard.check(data * 100))  # raw input to a model trained on scaled input
    assert len(seen) == 1 and "feature 'column 0'" in seen[0]
    assert "in the 40-row sample given at save (pass training_data=X" in seen[0]
    trained = Guard(capture_schema(data[:40], training_data=data))
    _, seen = _input_warnings(lambda: trained.check(data * 100))
    assert "during training (20,000 rows of training_data)" in seen[0]


def test_ranges_of_an_old_schema_are_still_checked_with_the_band_of_the_smallest_sample():
    old = {"kind": "ndarray", "dtype": "float64", "shape": [None, 1], "ranges_from": "sample",
           "features": [{"min": 0.0, "max": 1.0}]}
    guard = Guard(old)
    _, seen = _input_warnings(lambda: guard.check(np.array([[0.5], [1.0 + width(MIN_RANGE_ROWS) * 0.9]])))
    assert seen == []
    _, seen = _input_warnings(lambda: guard.check(np.array([[500.0]])))
    assert len(seen) == 1 and "in the sample given at save" in seen[0]


def test_a_category_column_before_numeric_ones_does_not_break_the_range_check():
    # The first wave selected the ranged columns by name, then indexed them by their positions
    # in the whole frame: an IndexError whenever an unranged column came first.
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"c": pd.Categorical(list("ab") * 50), "s": ["t"] * 100,
                       "x": rng.normal(size=100), "z": rng.integers(0, 9, 100)})
    guard = Guard(json.loads(json.dumps(capture_schema(df))))
    out, seen = _input_warnings(lambda: guard.check(df[["z", "x", "s", "c"]]))
    assert seen == [] and list(out.columns) == ["c", "s", "x", "z"]
    _, seen = _input_warnings(lambda: guard.check(df.assign(z=df["z"] * 1000)))
    assert len(seen) == 1 and "feature 'z' has values" in seen[0]


# ---------------------------------------------------------------------------------------
# numpy input to a model saved with named columns
# ---------------------------------------------------------------------------------------


def test_numpy_input_to_a_named_model_is_width_checked_and_warned_about_once(tmp_path, fresh):
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"age": rng.integers(18, 90, 200), "income": rng.uniform(0, 1, 200)})
    ms.save(LogisticRegression().fit(df, df["income"] > 0.5), tmp_path / "m.msafe", sample=df[:50])
    np.save(tmp_path / "rows.npy", df.to_numpy())
    fresh("""
        import warnings
        import numpy as np, modelsafe as ms
        from modelsafe.checks.schema import InputWarning

        bundle = ms.load("m.msafe")
        rows = np.load("rows.npy")
        try:
            bundle.predict(rows[:, :1])
            raise SystemExit("a wrong width reached the model")
        except ms.SchemaError as exc:
            assert (exc.expected, exc.actual) == (2, [200, 1]) and "2 column(s) ['age', 'income']" in str(exc), exc
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            bundle.predict(rows)
            bundle.predict(rows)
            bundle.predict(rows[:, ::-1] * [1000, 1])  # swapped: positions trusted, but the ranges catch it
        mine = [str(w.message) for w in seen if issubclass(w.category, InputWarning)]
        assert sum("trusts the positions" in m for m in mine) == 1, mine
        assert any("feature 'age' has values" in m for m in mine), mine
    """, cwd=tmp_path)


# ---------------------------------------------------------------------------------------
# missing values, nullable dtypes, non-string names
# ---------------------------------------------------------------------------------------


def test_pandas_na_never_crashes_the_guard_or_the_codec(tmp_path, fresh):
    # pd.NA in nullable columns and in an object column, at save (schema, sample codec, replay) and at predict.
    fresh.script("train.py", """
        import numpy as np, pandas as pd, modelsafe as ms

        def total(x):
            columns = [pd.to_numeric(x[c], errors="coerce").astype("float64") for c in x]
            return np.nansum(np.column_stack(columns), axis=1)

        rng = np.random.default_rng(0)
        df = pd.DataFrame({"n": pd.array(rng.integers(0, 9, 60), dtype="Int64"),
                           "f": pd.array(rng.normal(size=60), dtype="Float64"),
                           "o": pd.Series([1.5, pd.NA, 3] * 20, dtype=object)})
        df.loc[[1, 7], "n"] = pd.NA
        df.loc[[2], "f"] = pd.NA
        ms.save(total, "m.msafe", sample=df)
        df.to_pickle("rows.pkl")
    """)
    fresh("""
        import numpy as np, pandas as pd, modelsafe as ms
        bundle = ms.load("m.msafe", trust_code=True)
        df = pd.read_pickle("rows.pkl")
        assert bundle.verify().ok
        assert np.allclose(bundle.predict(df.iloc[:, ::-1]), bundle.model(df))
        try:
            bundle.predict(df.astype({"f": "string"}))
            raise SystemExit("text accepted for numbers")
        except ms.SchemaError as exc:
            assert exc.column == "f"
    """)


def test_non_string_names_round_trip_through_a_fresh_process(tmp_path, fresh):
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(0)
    for name, columns in {"tuples": pd.MultiIndex.from_tuples([("price", "usd"), ("price", "eur"), ("qty", "")]),
                          "ints": pd.Index([3, 1, 2]), "floats": pd.Index([0.5, 1.5, 2.5])}.items():
        df = pd.DataFrame(rng.normal(size=(60, 3)), columns=columns)
        ms.save(LinearRegression().fit(df, df.iloc[:, 0]), tmp_path / f"{name}.msafe", sample=df)
        df.to_pickle(tmp_path / f"{name}.pkl")  # the test's own data, read back by pandas in the test
    fresh("""
        import warnings
        import pandas as pd, modelsafe as ms
        warnings.simplefilter("error")
        for name in ("tuples", "ints", "floats"):
            bundle = ms.load(f"{name}.msafe")
            df = pd.read_pickle(f"{name}.pkl")
            expected = bundle.model.predict(df)
            assert (bundle.predict(df) == expected).all(), name           # the very frame it was saved with
            assert (bundle.predict(df.iloc[:, [2, 0, 1]]) == expected).all(), name
        renamed = pd.read_pickle("ints.pkl")
        renamed.columns = ["3", "1", "2"]
        try:
            ms.load("ints.msafe").predict(renamed)
            raise SystemExit("'3' accepted for 3")
        except ms.SchemaError as exc:
            assert exc.column == 3 and "the input has '3' (str) where the model was saved with 3 (int)" in str(exc)
    """, cwd=tmp_path)


@pytest.mark.parametrize("columns", [[1, True, "x"], [1, 1.0, "x"], [0.0, False, "x"]])
def test_names_that_are_equal_values_are_one_name_and_refused_as_duplicates(columns):
    """pandas finds ``df[1]`` by value (a column named ``True`` or ``1.0`` too): such names are duplicates, and the
    message names both spellings, at save and at predict."""
    df = pd.DataFrame(np.ones((20, 3)), columns=pd.Index(columns, dtype=object))
    spelled = f"{columns[0]!r} and {columns[1]!r} are one name"
    with pytest.raises(ms.SchemaError, match="duplicate column name") as info:
        capture_schema(df)
    assert spelled in str(info.value) and info.value.duplicates == [columns[0]]
    guard = Guard(capture_schema(df.set_axis([columns[0], "y", "x"], axis=1)))
    with pytest.raises(ms.SchemaError, match="duplicate column name") as info:
        guard.check(df)
    assert spelled in str(info.value)


def test_the_fast_frame_readers_agree_with_pandas():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": rng.normal(size=5), "b": pd.array([1, None, 3, 4, 5], dtype="Int64"),
                       "c": pd.Categorical(list("xyzxy")), "d": rng.integers(0, 5, 5)})
    df["e"] = df["a"] * 2  # a block of its own
    assert frame_dtypes(df) == df.dtypes.tolist()
    for j in range(df.shape[1]):
        pd.testing.assert_series_equal(pd.Series(column_array(df, j), name=df.columns[j]), df.iloc[:, j])


# ---------------------------------------------------------------------------------------
# verification runs the path predict takes
# ---------------------------------------------------------------------------------------


def test_verification_goes_through_the_guard(tmp_path):
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": rng.normal(size=40), "b": rng.normal(size=40)})
    folder = tmp_path / "m"
    ms.save(LogisticRegression().fit(df, df["a"] > 0), folder, sample=df)
    manifest = json.loads((folder / "modelsafe.json").read_text())
    manifest["schema"]["columns"][1]["name"] = "renamed"  # the guard now refuses the stored sample
    (folder / "modelsafe.json").write_text(json.dumps(manifest))
    report = ms.load(folder, verify=False).verify()
    assert not report.ok and "SchemaError" in report.error and "'renamed'" in report.error
    with pytest.raises(ms.VerificationError):
        ms.load(folder)
