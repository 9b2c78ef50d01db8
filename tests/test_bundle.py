"""``Bundle``'s output methods: predict_proba, decision_function and transform, each through the
input guard, present only when the model has them (saved here, used in a fresh process)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import modelsafe as ms


@pytest.fixture
def frames(tmp_path):
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": rng.normal(size=80), "b": rng.integers(0, 9, 80), "c": rng.normal(size=80)})
    df.to_pickle(tmp_path / "rows.pkl")
    return df


def test_every_output_method_goes_through_the_guard(tmp_path, frames, fresh):
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = (frames["a"] > 0).astype(int)
    ms.save(make_pipeline(StandardScaler(), LogisticRegression()).fit(frames, y), tmp_path / "clf.msafe",
            sample=frames[:40])
    ms.save(StandardScaler().fit(frames), tmp_path / "scaler.msafe", sample=frames[:40])
    ms.save(LinearRegression().fit(frames, frames["a"]), tmp_path / "reg.msafe", sample=frames[:40])
    fresh("""
        import warnings
        import numpy as np, pandas as pd, modelsafe as ms

        df = pd.read_pickle("rows.pkl")
        shuffled = df[["c", "a", "b"]]
        clf = ms.load("clf.msafe")
        for method in ("predict", "predict_proba", "decision_function"):
            got = getattr(clf, method)(shuffled)                      # realigned by name
            assert np.array_equal(got, getattr(clf.model, method)(df)), method
            try:
                getattr(clf, method)(df.drop(columns="b"))
                raise SystemExit(f"{method}: missing column accepted")
            except ms.SchemaError as exc:
                assert exc.column == "b", (method, exc)
            try:
                getattr(clf, method)(df.assign(b=df["b"] + 0.5))
                raise SystemExit(f"{method}: lossy dtype accepted")
            except ms.SchemaError as exc:
                assert (exc.column, exc.expected, exc.actual) == ("b", "int64", "float64"), vars(exc)
        assert not hasattr(clf, "transform")

        scaler = ms.load("scaler.msafe")
        assert np.array_equal(scaler.transform(shuffled), scaler.model.transform(df))
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            scaler.transform(df.assign(c=df["c"] * 1000))
        assert any("feature 'c' has values" in str(w.message) for w in seen)

        reg = ms.load("reg.msafe")
        assert not hasattr(reg, "predict_proba") and not hasattr(reg, "decision_function")
        try:
            reg.predict_proba(df)
            raise SystemExit("predict_proba of a regressor")
        except ms.MissingMethodError as exc:
            assert isinstance(exc, AttributeError) and exc.method == "predict_proba" and exc.available == []
            assert "LinearRegression) has no predict_proba" in str(exc) and "it offers predict." in str(exc), exc
    """, cwd=tmp_path)


def test_boosting_output_methods_keep_their_feature_guard(tmp_path, frames, fresh):
    xgboost = pytest.importorskip("xgboost")
    model = xgboost.XGBClassifier(n_estimators=5, max_depth=2).fit(frames, (frames["a"] > 0).astype(int))
    ms.save(model, tmp_path / "xgb.msafe")  # no sample: the model's own feature names guard it
    fresh("""
        import numpy as np, pandas as pd, modelsafe as ms
        df = pd.read_pickle("rows.pkl")
        bundle = ms.load("xgb.msafe")
        assert np.allclose(bundle.predict_proba(df[["b", "c", "a"]]), bundle.model.predict_proba(df))
        try:
            bundle.predict_proba(df.rename(columns={"c": "see"}))
            raise SystemExit("renamed column accepted")
        except ms.SchemaError as exc:
            assert exc.column == "c"
    """, cwd=tmp_path)
