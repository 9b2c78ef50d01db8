"""Mixed-dtype frames through real models, saved here and predicted in a fresh process.

Each model takes categorical or text columns before numeric ones: the input guard's
range check used to select the numeric columns by name and then index them by their
positions in the whole frame (an IndexError), and verification passed because it
bypassed the guard.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import modelsafe as ms


def _frame(rows: int = 120) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"c": pd.Categorical(rng.choice(["red", "green", "blue"], rows)),
                         "city": rng.choice(["Lyon", "Oslo", "Lima"], rows),
                         "x": rng.normal(size=rows), "z": rng.integers(0, 50, rows).astype(np.int64)})


def test_mixed_dtype_models_predict_and_verify_in_a_fresh_process(tmp_path, fresh):
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    xgboost = pytest.importorskip("xgboost")
    lightgbm = pytest.importorskip("lightgbm")

    # The example, as given: a 10-row sample.
    df = pd.DataFrame({"c": pd.Categorical(list("ab") * 50), "x": np.arange(100.), "z": np.arange(100.)})
    hgb = HistGradientBoostingClassifier(categorical_features="from_dtype", max_iter=5).fit(df, np.arange(100) % 2)
    ms.save(hgb, tmp_path / "hgb.msafe", sample=df[:10])
    df.to_pickle(tmp_path / "hgb.pkl")

    data = _frame()
    y = (data["x"] + (data["c"] == "red") > 0.3).astype(int)
    encode = ColumnTransformer([("onehot", OneHotEncoder(handle_unknown="ignore"), ["c", "city"]),
                                ("scale", StandardScaler(), ["x", "z"])])
    pipeline = make_pipeline(encode, LogisticRegression()).fit(data, y)
    numeric_and_category = data.drop(columns="city")
    xgb = xgboost.XGBClassifier(n_estimators=5, max_depth=3, enable_categorical=True, tree_method="hist")
    xgb.fit(numeric_and_category, y)
    lgbm = lightgbm.LGBMClassifier(n_estimators=5, min_child_samples=5, verbose=-1).fit(numeric_and_category, y)
    for name, model, frame in (("pipeline", pipeline, data), ("xgb", xgb, numeric_and_category),
                               ("lgbm", lgbm, numeric_and_category)):
        ms.save(model, tmp_path / f"{name}.msafe", sample=frame[:40])  # 40 rows: ranges are recorded
        frame.to_pickle(tmp_path / f"{name}.pkl")

    out = fresh("""
        import json, warnings
        import numpy as np, pandas as pd, modelsafe as ms
        from modelsafe.checks.schema import InputWarning

        for name in ("hgb", "pipeline", "xgb", "lgbm"):
            bundle = ms.load(f"{name}.msafe")
            assert bundle.verify().ok, bundle.verify()
            df = pd.read_pickle(f"{name}.pkl")
            expected = bundle.model.predict(df)
            with warnings.catch_warnings():
                warnings.simplefilter("error", InputWarning)  # the rest of the training data is not "far outside"
                assert (bundle.predict(df) == expected).all(), name
                assert (bundle.predict(df[list(df.columns)[::-1]]) == expected).all(), name
                assert np.allclose(bundle.predict_proba(df[list(df.columns)[::-1]]), bundle.model.predict_proba(df))
            try:
                bundle.predict(df.drop(columns="x"))
                raise SystemExit(f"{name}: missing column accepted")
            except ms.SchemaError as exc:
                assert exc.column == "x", (name, exc)
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                bundle.predict(df.assign(x=df["x"] * 1e6))
            if name != "hgb":  # its 10-row sample records no ranges
                assert any("feature 'x' has values" in str(w.message) for w in seen), (name, seen)
        print(json.dumps("ok"))
    """, cwd=tmp_path)
    assert out.stdout.strip().endswith('"ok"')


def test_a_model_saved_with_a_polars_sample_predicts_polars_in_a_fresh_process(tmp_path, fresh):
    """polars end to end: the sample is recorded with its names, the guard checks a polars frame by name
    (any column order), missing values into an integer column are counted, and the model gets polars."""
    pl = pytest.importorskip("polars")
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(1)
    frame = pl.DataFrame({"n": rng.integers(0, 100, 200), "x": rng.normal(size=200), "w": rng.normal(size=200)})
    y = frame["x"].to_numpy() * 2 + frame["n"].to_numpy()
    model = LinearRegression().fit(frame, y)
    ms.save(model, tmp_path / "m.msafe", sample=frame[:50])
    frame.write_parquet(tmp_path / "frame.parquet")
    out = fresh("""
        import json, warnings
        import numpy as np, polars as pl, modelsafe as ms

        bundle = ms.load("m.msafe")
        assert bundle.verify().ok
        frame = pl.read_parquet("frame.parquet")
        expected = bundle.model.predict(frame)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert np.allclose(bundle.predict(frame), expected)
            assert np.allclose(bundle.predict(frame.select(["w", "x", "n"])), expected)
        refusals = {}
        for case, bad in (("missing", frame.drop("x")),
                          ("na", frame.with_columns(pl.when(pl.col("x") > 0).then(None).otherwise(pl.col("n"))
                                                    .alias("n")))):
            try:
                bundle.predict(bad)
            except ms.SchemaError as exc:
                refusals[case] = [exc.column, str(exc)]
        print(json.dumps({"refusals": refusals, "na count": int((frame["x"] > 0).sum())}))
    """)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["refusals"]["missing"][0] == "x"
    column, message = result["refusals"]["na"]
    assert column == "n" and f"has {result['na count']} missing value" in message
