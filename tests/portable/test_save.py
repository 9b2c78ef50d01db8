"""``save(portable=...)``: what is refused or warned about, by name, and what is written."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import modelsafe as ms
from modelsafe.portable import PortableWarning

CUSTOM_STEP = """
    import warnings
    import numpy as np
    import modelsafe as ms
    from sklearn.base import BaseEstimator, TransformerMixin
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from modelsafe.portable import PortableWarning


    class Clip(BaseEstimator, TransformerMixin):
        def fit(self, X, y=None):
            return self

        def transform(self, X):
            return np.clip(X, -2, 2)


    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    model = make_pipeline(Clip(), LogisticRegression()).fit(X, X[:, 0] > 0)
    try:
        ms.save(model, "strict.msafe", sample=X[:20], portable="onnx")
    except ms.SaveError as exc:
        print("refused:", exc.step, exc.type_name)
        print(str(exc))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        manifest = ms.save(model, "lenient.msafe", sample=X[:20], portable="try-onnx")
    print("warned:", [w.category.__name__ for w in seen], seen[0].filename)
    print(str(seen[0].message))
    print("portable:", manifest.portable, sorted(manifest.members))
"""


def test_a_custom_step_has_no_converter_named_by_step_and_class(fresh):
    proc = fresh.script("train.py", CUSTOM_STEP)
    out = proc.stdout
    assert "refused: step 'clip' __main__.Clip" in out, out
    assert "update_registered_converter" in out and "defined in __main__" in out
    assert "warned: ['PortableWarning']" in out and "train.py" in out  # the warning points at the caller's save
    assert "portable='try-onnx': saved without an ONNX member" in out and "step 'clip' (__main__.Clip)" in out
    assert "portable: None" in out and "portable/model.onnx" not in out
    assert not (fresh.cwd / "strict.msafe").exists()
    fresh("""
        import modelsafe as ms
        bundle = ms.load("lenient.msafe", trust_code=True)
        assert bundle.verify().ok and bundle.manifest.portable is None
    """)


def test_a_registered_converter_makes_the_custom_step_portable(fresh):
    """skl2onnx.update_registered_converter, as the README shows it, and the step converts."""
    proc = fresh.script("train.py", """
        import numpy as np
        import modelsafe as ms
        from sklearn.base import BaseEstimator, TransformerMixin
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from skl2onnx import update_registered_converter
        from skl2onnx.algebra.onnx_ops import OnnxClip
        from skl2onnx.common.data_types import guess_numpy_type


        class Clip(BaseEstimator, TransformerMixin):
            def fit(self, X, y=None):
                return self

            def transform(self, X):
                return np.clip(X, -2, 2)


        def clip_shape(operator):
            operator.outputs[0].type = operator.inputs[0].type.__class__([None, operator.inputs[0].type.shape[1]])


        def clip_converter(scope, operator, container):
            dtype = guess_numpy_type(operator.inputs[0].type)
            node = OnnxClip(operator.inputs[0], np.array(-2, dtype=dtype), np.array(2, dtype=dtype),
                            op_version=container.target_opset, output_names=operator.outputs[:1])
            node.add_to(scope, container)


        update_registered_converter(Clip, "CustomClip", clip_shape, clip_converter)
        rng = np.random.default_rng(0)
        X = rng.normal(size=(200, 3)) * 2
        model = make_pipeline(Clip(), LogisticRegression()).fit(X, X[:, 0] > 0)
        manifest = ms.save(model, "clip.msafe", sample=X[:40], portable="onnx")
        np.save("X.npy", X)
        np.save("expected.npy", model.predict_proba(X))
        print(manifest.portable["converter"])
    """)
    assert proc.stdout.startswith("skl2onnx ")
    fresh("""
        import sys
        import numpy as np, modelsafe as ms
        bundle = ms.load("clip.msafe", runtime="onnx")  # no trust_code: the graph needs no code
        assert bundle.verify().ok
        assert np.allclose(bundle.predict_proba(np.load("X.npy")), np.load("expected.npy"), atol=1e-5)
        assert "sklearn" not in sys.modules
    """)


def test_a_conversion_that_predicts_differently_is_not_stored(tmp_path):
    """Values 1e8 apart by less than float32 can tell: the graph (float32 inputs) sees them all equal."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    offsets = rng.uniform(0, 4, size=(300, 1))
    X = 1e8 + offsets
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, (offsets[:, 0] > 2).astype(int))
    with pytest.raises(ms.SaveError) as caught:
        ms.save(model, tmp_path / "drift.msafe", sample=X[:60], portable="onnx")
    error = caught.value
    assert error.step == "verify" and error.output == "predict" and "predicts differently" in str(error)
    assert "values differ" in str(error) and "at index" in str(error)
    assert not (tmp_path / "drift.msafe").exists()
    with pytest.warns(PortableWarning, match="predicts differently"):
        manifest = ms.save(model, tmp_path / "drift.msafe", sample=X[:60], portable="try-onnx")
    assert manifest.portable is None and not any(m.startswith("portable/") for m in manifest.members)


def test_portable_needs_a_sample_and_no_separate_preprocess(tmp_path, numbers):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    X, y = numbers
    model = LogisticRegression().fit(X, y)
    with pytest.raises(ms.SaveError, match="needs sample=") as caught:
        ms.save(model, tmp_path / "a.msafe", portable="onnx")
    assert caught.value.step == "sample"
    scaler = StandardScaler().fit(X)
    with pytest.raises(ms.SaveError, match="preprocess=") as caught:
        ms.save(LogisticRegression().fit(scaler.transform(X), y), tmp_path / "b.msafe", sample=X[:20],
                preprocess=scaler, portable="onnx")
    assert caught.value.step == "preprocess"
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        ms.save(model, tmp_path / "c.msafe", portable="try-onnx")
    assert [w.category for w in seen] == [PortableWarning]


class Scorer:
    """A plain Python model (the python flavor): no ONNX converter."""

    def predict(self, x):
        return x.sum(axis=1)


def test_a_model_without_a_converter_is_named(tmp_path, numbers):
    X, _ = numbers
    with pytest.raises(ms.SaveError) as caught:
        ms.save(Scorer(), tmp_path / "s.msafe", sample=X[:10], portable="onnx")
    assert "python flavor has no ONNX converter" in str(caught.value) and "Scorer" in caught.value.type_name


def test_categorical_xgboost_is_refused_by_name(tmp_path, frame):
    import xgboost as xgb

    df, y = frame
    cats = df.assign(city=df["city"].astype("category"))
    model = xgb.XGBClassifier(n_estimators=5, enable_categorical=True, tree_method="hist").fit(cats, y)
    with pytest.raises(ms.SaveError, match="enable_categorical=True"):
        ms.save(model, tmp_path / "x.msafe", sample=cats.iloc[:20], portable="onnx")


@pytest.mark.parametrize("estimator", ["regressor", "transformer", "string-labels"])
def test_other_kinds_of_scikit_learn_models(tmp_path, numbers, fresh, estimator):
    from sklearn.decomposition import PCA
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.tree import DecisionTreeClassifier

    X, y = numbers
    model = {"regressor": GradientBoostingRegressor(n_estimators=20, random_state=0).fit(X, X[:, 0] * 3),
             "transformer": PCA(2).fit(X),
             "string-labels": DecisionTreeClassifier(max_depth=4, random_state=0).fit(
                 X, np.where(y == 1, "yes", "no"))}[estimator]
    ms.save(model, tmp_path / "m.msafe", sample=X[:40], portable="onnx")
    native = model.predict(X) if hasattr(model, "predict") else model.transform(X)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "expected.npy", native)
    fresh("""
        import numpy as np, modelsafe as ms
        bundle = ms.load("m.msafe", runtime="onnx")
        assert bundle.verify().ok
        got, expected = bundle.predict(np.load("X.npy")), np.load("expected.npy")
        assert got.shape == expected.shape and got.dtype.kind == expected.dtype.kind, (got.dtype, expected.dtype)
        if expected.dtype.kind == "U":
            assert (got == expected).all()
        else:
            assert np.allclose(got, expected, rtol=2e-4, atol=2e-4)
    """)
