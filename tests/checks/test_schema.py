"""The input guard of Bundle.predict, exercised in a fresh process as a service would."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import modelsafe as ms
from modelsafe.checks.schema import Guard, InputWarning, capture_schema


@pytest.fixture
def frame_artifact(tmp_path):
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"age": rng.integers(18, 90, 200), "income": rng.uniform(0, 1, 200),
                       "score": rng.normal(size=200)})
    y = (df["income"] > 0.5).astype(int)
    model = LogisticRegression().fit(df, y)
    ms.save(model, tmp_path / "m.msafe", sample=df.iloc[:20], training_data=df)
    df.to_csv(tmp_path / "rows.csv", index=False)
    return tmp_path / "m.msafe"


def test_guard_in_a_fresh_process(frame_artifact, fresh):
    fresh("""
        import warnings
        import numpy as np, pandas as pd, modelsafe as ms
        from modelsafe.checks.schema import InputWarning

        bundle = ms.load("m.msafe")
        rows = pd.read_csv("rows.csv").iloc[:50]
        expected = bundle.model.predict(rows)

        # columns in another order are realigned by name
        assert (bundle.predict(rows[["score", "income", "age"]]) == expected).all()

        # a missing column is an error that names it
        try:
            bundle.predict(rows.drop(columns="income"))
            raise SystemExit("missing column accepted")
        except ms.SchemaError as exc:
            assert exc.column == "income" and "missing column(s) ['income']" in str(exc)

        # an extra column warns and is ignored
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            out = bundle.predict(rows.assign(comment="x"))
        assert (out == expected).all()
        assert any(issubclass(w.category, InputWarning) and "comment" in str(w.message) for w in seen)

        # float into an integer column loses information
        try:
            bundle.predict(rows.assign(age=rows["age"] + 0.5))
            raise SystemExit("lossy dtype accepted")
        except ms.SchemaError as exc:
            assert (exc.column, exc.expected, exc.actual) == ("age", "int64", "float64"), vars(exc)

        # strings into a numeric column
        try:
            bundle.predict(rows.assign(score=rows["score"].astype(str)))
            raise SystemExit("strings accepted")
        except ms.SchemaError as exc:
            assert exc.column == "score" and "float64" in str(exc)

        # raw (unscaled) values far outside what the model saw in training warn
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            bundle.predict(rows.assign(income=rows["income"] * 400 + 200))
        messages = [str(w.message) for w in seen if issubclass(w.category, InputWarning)]
        assert messages and "feature 'income' has values" in messages[0] and "during training" in messages[0]
        assert "Was the scaler applied?" in messages[0]

        # check=False skips the guard for hot loops
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            bundle.predict(rows.assign(income=rows["income"] * 400), check=False)
    """, cwd=frame_artifact.parent)


def test_array_guard_shape_dtype_and_ranges():
    X = np.random.default_rng(1).uniform(0, 1, size=(100, 3))
    guard = Guard(capture_schema(X[:10], training_data=X))
    assert guard.check(X[:5]) is not None
    with pytest.raises(ms.SchemaError, match=r"shape \(5, 4\)"):
        guard.check(np.ones((5, 4)))
    with pytest.raises(ms.SchemaError, match="dtype <U"):
        guard.check(np.array([["a", "b", "c"]]))
    with pytest.warns(InputWarning, match="feature 'column 2' has values 500–600"):
        guard.check(np.column_stack([X[:2, :2], [500.0, 600.0]]))


def test_texts_guard_refuses_a_single_string():
    guard = Guard(capture_schema(["good movie", "bad plot"]))
    assert guard.check(["fine"]) == ["fine"]
    with pytest.raises(ms.SchemaError, match=r"Wrap it in a list: predict\(\[text\]\)"):
        guard.check("fine")


def test_training_data_gives_the_ranges(tmp_path):
    from sklearn.linear_model import LinearRegression

    X = np.linspace(0, 100, 300).reshape(100, 3)
    ms.save(LinearRegression().fit(X, X[:, 0]), tmp_path / "m.msafe", sample=X[:5], training_data=X)
    schema = ms.inspect(tmp_path / "m.msafe").schema
    assert schema["ranges_from"] == "training_data"
    assert schema["features"][0]["min"] == 0.0 and schema["features"][2]["max"] == 100.0


def _total(inputs):
    return inputs["a"].sum(axis=1) + inputs["b"].sum(axis=1)


def test_inspect_shows_column_names_and_several_inputs_as_python_writes_them(tmp_path):
    from sklearn.linear_model import LinearRegression

    df = pd.DataFrame(np.ones((40, 3)), columns=pd.MultiIndex.from_tuples([("price", "usd"), ("qty", 1), ("x", 2.5)]))
    ms.save(LinearRegression().fit(df, np.arange(40)), tmp_path / "frame.msafe", sample=df)
    assert "input: dataframe [(price, usd):float64, (qty, 1):float64, (x, 2.5):float64]" in str(
        ms.inspect(tmp_path / "frame.msafe"))

    ms.save(_total, tmp_path / "keywords.msafe", sample={"a": np.ones((4, 3), "float32"), "b": np.ones((4, 2))})
    assert ("input: dict [a: ndarray float32 shape (n, 3), b: ndarray float64 shape (n, 2)]"
            in str(ms.inspect(tmp_path / "keywords.msafe")))
