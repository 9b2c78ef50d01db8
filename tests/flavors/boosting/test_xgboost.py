"""XGBoost flavor: native UBJSON boosters plus the scikit-learn wrapper state as JSON.

Models are saved here and loaded in a fresh interpreter, the way a user moves a model
to a service; the input guard, the verification negative control and bad input are
exercised on real XGBoost models.
"""

from __future__ import annotations

import inspect
import json
import math
import textwrap
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

xgb = pytest.importorskip("xgboost")

import modelsafe as ms  # noqa: E402
from modelsafe.checks.schema import InputWarning  # noqa: E402
from modelsafe.errors import (  # noqa: E402
    FormatError,
    SaveError,
    SchemaError,
    UnsavableObjectError,
    UnsupportedModelError,
    UntrustedContentError,
    VerificationError,
)

RNG_SEED = 7


def _frame(n: int = 240, seed: int = RNG_SEED) -> tuple[pd.DataFrame, np.ndarray]:
    """Numeric features with missing values and a pandas categorical column."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "age": rng.normal(40, 10, n),
        "income": rng.lognormal(10, 1, n),
        "score": rng.normal(size=n),
        "city": pd.Categorical(rng.choice(["berlin", "lima", "osaka", "perth"], n)),
    })
    frame.loc[::6, "income"] = np.nan
    frame.loc[::9, "score"] = np.nan
    signal = (frame["age"] - 40) / 10 + np.where(frame["city"].isin(["lima", "perth"]), 1.5, -1.0)
    target = (signal + rng.normal(scale=0.5, size=n) > 0).astype(int)
    return frame, target.to_numpy()


def _numeric(n: int = 200, seed: int = RNG_SEED) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    X[::7, 2] = np.nan
    return X, X[:, 0] + 0.5 * np.nan_to_num(X[:, 2]) + rng.normal(scale=0.1, size=n)


#: How each test input is rebuilt, here and in a fresh process (test data never travels as a pickle).
INPUTS = {
    "frame": "_frame()[0]",
    "numeric": "_numeric()[0]",
    "named": "pd.DataFrame(_numeric()[0], columns=list('abcd'))",
}


def _inputs_code() -> str:
    """Source that defines the data builders and ``INPUTS`` in a fresh process."""
    builders = "".join(inspect.getsource(f) for f in (_frame, _numeric))
    table = "{" + ", ".join(f"{k!r}: lambda: {v}" for k, v in INPUTS.items()) + "}"
    return f"import numpy as np, pandas as pd\nRNG_SEED = {RNG_SEED}\n{builders}\nINPUTS = {table}\n"


def _models() -> dict[str, tuple[object, str]]:
    """name -> (fitted model, recipe of the input to predict on)."""
    frame, target = _frame()
    X, y = _numeric()
    classes = np.digitize(y, [-0.7, 0.7])  # three classes
    qid = np.repeat(np.arange(20), 10)
    early = xgb.XGBClassifier(n_estimators=200, max_depth=3, learning_rate=0.3, enable_categorical=True,
                              early_stopping_rounds=5, eval_metric="logloss")
    early.fit(frame[:180], target[:180], eval_set=[(frame[180:], target[180:])], verbose=False)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 3}, xgb.DMatrix(X, label=(y > 0)), 8)
    return {
        "binary-categorical-early-stopping": (early, "frame"),
        "multiclass-numpy": (xgb.XGBClassifier(n_estimators=12, max_depth=3).fit(X, classes), "numeric"),
        "regressor-frame": (xgb.XGBRegressor(n_estimators=15, max_depth=3, missing=np.nan)
                            .fit(pd.DataFrame(X, columns=list("abcd")), y), "named"),
        "ranker": (xgb.XGBRanker(n_estimators=10, max_depth=3).fit(X, np.clip(classes, 0, 2), qid=qid), "numeric"),
        "random-forest": (xgb.XGBRFClassifier(n_estimators=6, max_depth=3).fit(X, (y > 0).astype(int)), "numeric"),
        "booster-unnamed": (booster, "numeric"),
        "booster-categorical": (early.get_booster(), "frame"),
    }


def _params_equal(a: dict, b: dict) -> bool:
    def same(u, v):
        if isinstance(u, float) and isinstance(v, float) and math.isnan(u) and math.isnan(v):
            return True
        return u == v
    return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Every kind of model saved once, with the outputs the originals give."""
    root = tmp_path_factory.mktemp("xgb")
    expected = {}
    for name, (model, recipe) in _models().items():
        x = eval(INPUTS[recipe])  # noqa: S307 - a recipe from the table above
        ms.save(model, root / f"{name}.msafe", sample=x)  # the schema sees all rows; 100 are replayed
        is_booster = isinstance(model, xgb.Booster)
        outputs = {"predict": model.inplace_predict(x) if is_booster else model.predict(x)}
        if hasattr(model, "predict_proba"):
            outputs["predict_proba"] = model.predict_proba(x)
        for key, value in outputs.items():
            np.save(root / f"{name}.{key}.npy", value)
        expected[name] = {
            "recipe": recipe,
            "type": f"{type(model).__module__}.{type(model).__qualname__}",
            "outputs": sorted(outputs),
            "feature_names": (model.feature_names if is_booster
                              else list(getattr(model, "feature_names_in_", [])) or None),
            "params": None if is_booster else {k: v for k, v in model.get_params().items()},
            "best_iteration": model.best_iteration if name.endswith("early-stopping") else None,
        }
    return root, expected


def test_round_trip_in_a_fresh_process(saved, fresh):
    root, expected = saved
    recipes = {name: want["recipe"] for name, want in expected.items()}
    proc = fresh(_inputs_code() + textwrap.dedent(f"""
        import json, math
        from pathlib import Path
        import modelsafe as ms
        root = Path({str(root)!r})
        report = {{}}
        for name, recipe in {recipes!r}.items():
            bundle = ms.load(root / f"{{name}}.msafe")
            model = bundle.model
            x = INPUTS[recipe]()
            is_booster = type(model).__name__ == "Booster"
            exact = {{}}
            for key in ("predict", "predict_proba"):
                path = root / f"{{name}}.{{key}}.npy"
                if path.exists():
                    got = model.inplace_predict(x) if is_booster else getattr(model, key)(x)
                    exact[key] = bool(np.array_equal(got, np.load(path), equal_nan=True))
            names = getattr(model, "feature_names", None) if type(model).__name__ == "Booster" else (
                list(model.feature_names_in_) if hasattr(model, "feature_names_in_") else None)
            params = None if type(model).__name__ == "Booster" else {{
                k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in model.get_params().items()}}
            report[name] = {{
                "type": f"{{type(model).__module__}}.{{type(model).__qualname__}}",
                "exact": exact, "feature_names": names, "params": params,
                "best_iteration": model.best_iteration if name.endswith("early-stopping") else None,
                "verify": bundle.verify().ok, "bundle_predict": bool(np.array_equal(
                    bundle.predict(x), np.load(root / f"{{name}}.predict.npy"), equal_nan=True)),
            }}
        print(json.dumps(report))
    """))
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, want in expected.items():
        got = report[name]
        assert got["type"] == want["type"], name
        assert set(got["exact"]) == set(want["outputs"]) and all(got["exact"].values()), (name, got["exact"])
        assert got["feature_names"] == want["feature_names"], name
        if want["params"] is not None:
            want_params = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in want["params"].items()}
            assert got["params"] == want_params, name
        assert got["best_iteration"] == want["best_iteration"], name
        assert got["verify"] and got["bundle_predict"], name


def test_manifest_records_wrapper_state_and_no_pickle(saved):
    root, _ = saved
    manifest = ms.inspect(root / "binary-categorical-early-stopping.msafe")
    model = manifest.components["model"]
    assert model.flavor == "xgboost"
    assert [m for m in manifest.members if m.startswith("model/")] == ["model/model.ubj"]
    data = model.data
    assert data["class"] == "xgboost:XGBClassifier" and data["kind"] == "classifier"
    assert data["feature_names_in_"] == ["age", "income", "score", "city"]
    assert data["feature_types"] == ["float", "float", "float", "c"]
    assert data["categories"]["city"] == {"values": ["berlin", "lima", "osaka", "perth"], "exact": True}
    assert data["enable_categorical"] is True and data["params"]["enable_categorical"] is True
    assert data["params"]["missing"] == {"$float": "nan"}
    assert isinstance(data["best_iteration"], int) and data["best_iteration"] < 199
    assert data["classes_"] == {"$array": [0, 1], "dtype": "<i8", "shape": [2]}
    assert "evals_result_" in data["attributes"] and data["n_features_in_"] == 4
    assert "stream" not in data and not any(m.endswith((".pkl", ".pickle")) for m in manifest.members)
    assert "xgboost" in manifest.environment["packages"]


def test_early_stopping_best_iteration_is_used(saved):
    root, _ = saved
    bundle = ms.load(root / "binary-categorical-early-stopping.msafe")
    frame, _ = _frame()
    booster = bundle.model.get_booster()
    assert bundle.model.best_iteration + 1 < booster.num_boosted_rounds()
    all_trees = bundle.model.predict_proba(frame, iteration_range=(0, booster.num_boosted_rounds()))
    assert not np.array_equal(all_trees, bundle.model.predict_proba(frame))
    assert np.array_equal(bundle.model.predict_proba(frame),
                          np.load(root / "binary-categorical-early-stopping.predict_proba.npy"))


def test_categories_realigned_by_name_and_order(saved):
    root, _ = saved
    bundle = ms.load(root / "binary-categorical-early-stopping.msafe")
    frame, _ = _frame()
    shuffled = frame[["city", "score", "age", "income"]].copy()
    shuffled["city"] = shuffled["city"].cat.reorder_categories(["perth", "osaka", "lima", "berlin"])
    expected = np.load(root / "binary-categorical-early-stopping.predict.npy")
    assert np.array_equal(bundle.predict(shuffled), expected)
    subset = frame[frame["city"].isin(["lima", "osaka"])].copy()
    subset["city"] = subset["city"].cat.remove_unused_categories()
    assert np.array_equal(bundle.predict(subset), expected[frame["city"].isin(["lima", "osaka"]).to_numpy()])


# ---------------------------------------------------------------------------------------
# input guard
# ---------------------------------------------------------------------------------------


@pytest.fixture
def frame_model(tmp_path):
    frame, target = _frame()
    model = xgb.XGBClassifier(n_estimators=8, max_depth=3, enable_categorical=True).fit(frame, target)
    path = tmp_path / "nosample.msafe"
    ms.save(model, path)  # no sample: only the flavor's own guard protects predict
    return ms.load(path), frame, model


def test_guard_realigns_reordered_columns_without_a_sample(frame_model):
    bundle, frame, model = frame_model
    assert bundle.manifest.schema is None
    reordered = frame[["score", "city", "income", "age"]]
    assert np.array_equal(bundle.predict(reordered), model.predict(frame))


@pytest.mark.parametrize("change", ["renamed", "missing"])
def test_guard_refuses_renamed_or_missing_columns_without_a_sample(frame_model, change):
    bundle, frame, _ = frame_model
    bad = frame.rename(columns={"income": "salary"}) if change == "renamed" else frame.drop(columns="income")
    with pytest.raises(SchemaError) as info:
        bundle.predict(bad)
    assert info.value.column == "income"
    assert info.value.expected == ["age", "income", "score", "city"]
    assert "income" in str(info.value) and ("salary" in str(info.value)) == (change == "renamed")


def test_guard_refuses_renamed_columns_with_a_sample(tmp_path):
    frame, target = _frame()
    model = xgb.XGBClassifier(n_estimators=5, enable_categorical=True).fit(frame, target)
    ms.save(model, tmp_path / "m.msafe", sample=frame[:10])
    bundle = ms.load(tmp_path / "m.msafe")
    with pytest.raises(SchemaError) as info:
        bundle.predict(frame.rename(columns={"age": "AGE"}))
    assert info.value.column == "age"


def test_guard_warns_about_extra_columns_and_ignores_them(frame_model):
    bundle, frame, model = frame_model
    wider = frame.assign(noise=1.0)
    with pytest.warns(InputWarning, match="noise"):
        got = bundle.predict(wider)
    assert np.array_equal(got, model.predict(frame))


def test_guard_checks_feature_count_of_arrays(tmp_path):
    X, y = _numeric()
    model = xgb.XGBRegressor(n_estimators=4).fit(X, y)
    ms.save(model, tmp_path / "m.msafe")
    bundle = ms.load(tmp_path / "m.msafe")
    with pytest.raises(SchemaError) as info:
        bundle.predict(X[:, :3])
    assert (info.value.expected, info.value.actual) == (4, 3)


def test_unnamed_booster_never_adopts_feature_names(tmp_path):
    X, y = _numeric()
    booster = xgb.train({"max_depth": 2}, xgb.DMatrix(X, label=y), 5)
    ms.save(booster, tmp_path / "b.msafe")
    bundle = ms.load(tmp_path / "b.msafe")
    assert bundle.model.feature_names is None
    named = pd.DataFrame(X, columns=["w", "x", "y", "z"])
    assert np.array_equal(bundle.predict(named), booster.inplace_predict(X))
    assert bundle.model.feature_names is None
    assert np.array_equal(bundle.model.predict(xgb.DMatrix(named)), booster.predict(xgb.DMatrix(X)))
    assert bundle.model.feature_names is None
    with pytest.raises(SchemaError):
        bundle.predict(named.iloc[:, :3])


def test_non_ascii_categories_in_another_order_are_refused(tmp_path):
    rng = np.random.default_rng(3)
    cities = rng.choice(["köln", "zürich", "lyon", "são paulo"], 400)
    frame = pd.DataFrame({"x": rng.normal(size=400), "city": pd.Categorical(cities)})
    target = np.isin(cities, ["köln", "são paulo"]).astype(int)
    model = xgb.XGBClassifier(n_estimators=6, max_depth=3, enable_categorical=True).fit(frame, target)
    ms.save(model, tmp_path / "m.msafe", sample=frame[:10])
    bundle = ms.load(tmp_path / "m.msafe")
    assert bundle.manifest.components["model"].data["categories"]["city"]["exact"] is False
    assert np.array_equal(bundle.predict(frame), target)  # the training categories: correct
    other_order = frame.assign(city=pd.Categorical(cities, categories=["zürich", "lyon", "köln", "são paulo"]))
    with pytest.raises(SchemaError) as info:
        bundle.predict(other_order)
    assert info.value.column == "city" and "non-ASCII" in str(info.value)


# ---------------------------------------------------------------------------------------
# verification negative control
# ---------------------------------------------------------------------------------------


def test_verification_fails_for_a_perturbed_wrapper(saved):
    root, _ = saved
    bundle = ms.load(root / "binary-categorical-early-stopping.msafe", verify=False)
    assert bundle.verify().ok
    bundle.model.get_booster().set_attr(best_iteration="0")  # predict now uses only the first tree
    report = bundle.verify()
    assert not report.ok and {c.output for c in report.checks if not c.ok} >= {"predict_proba"}
    with pytest.raises(VerificationError):
        report.raise_if_failed()


def test_verification_fails_for_a_perturbed_booster(saved):
    root, _ = saved
    bundle = ms.load(root / "booster-unnamed.msafe", verify=False)
    assert bundle.verify().ok
    bundle.model = bundle.model[0:2]  # drop trees
    report = bundle.verify()
    assert not report.ok
    assert report.checks[0].max_difference > 0


# ---------------------------------------------------------------------------------------
# what cannot be saved, and what is refused at load
# ---------------------------------------------------------------------------------------


def test_unfitted_model_keeps_its_parameters_but_a_sample_is_refused(tmp_path):
    from sklearn.exceptions import NotFittedError

    template = xgb.XGBClassifier(n_estimators=17, max_depth=2, missing=-1.0, enable_categorical=True)
    ms.save(template, tmp_path / "template.msafe")  # e.g. a StackingClassifier's unfitted member
    data = ms.inspect(tmp_path / "template.msafe").components["model"].data
    assert data["fitted"] is False and "member" not in data
    loaded = ms.load(tmp_path / "template.msafe").model
    assert type(loaded) is xgb.XGBClassifier and loaded.get_params() == template.get_params()
    with pytest.raises(NotFittedError):
        loaded.predict(np.ones((2, 3)))
    path = tmp_path / "with-sample.msafe"
    with pytest.raises(SaveError, match="verification sample"):
        ms.save(template, path, sample=np.ones((2, 3)))
    assert not path.exists()


def test_unstorable_attribute_is_named_and_nothing_is_written(tmp_path):
    X, y = _numeric()
    model = xgb.XGBRegressor(n_estimators=3).fit(X, y)
    model.lock_ = threading.Lock()
    path = tmp_path / "m.msafe"
    with pytest.raises(UnsavableObjectError) as info:
        ms.save(model, path)
    assert [p[0] for p in info.value.problems] == ["XGBRegressor.lock_"]
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_callable_objective_is_dropped_and_predictions_still_verified(tmp_path, fresh):
    X, y = _numeric()

    def squared_error(y_true, y_pred):
        return y_pred - y_true, np.ones_like(y_pred)

    model = xgb.XGBRegressor(n_estimators=5, objective=squared_error).fit(X, y)
    ms.save(model, tmp_path / "m.msafe", sample=X[:20])
    data = ms.inspect(tmp_path / "m.msafe").components["model"].data
    assert data["dropped_params"] == {"objective": "function"}
    np.save(tmp_path / "expected.npy", model.predict(X))
    np.save(tmp_path / "X.npy", X)
    fresh("""
        import numpy as np, modelsafe as ms
        bundle = ms.load("m.msafe")
        assert np.array_equal(bundle.predict(np.load("X.npy")), np.load("expected.npy"))
    """)


def test_unknown_xgboost_class_is_refused_and_nothing_is_written(tmp_path):
    dmatrix = xgb.DMatrix(np.ones((3, 2)))  # an XGBoost object that is not a model
    path = tmp_path / "m.msafe"
    with pytest.raises(UnsupportedModelError) as info:
        ms.save(dmatrix, path)
    assert info.value.type_name == "xgboost.core.DMatrix"
    assert not path.exists() and list(tmp_path.iterdir()) == []


LABELLED = '''
import numpy as np
from xgboost import XGBClassifier


class LabelledXGBClassifier(XGBClassifier):
    """Fits on string labels: encodes them itself and decodes its predictions."""

    def fit(self, X, y, **kwargs):
        self.labels_ = np.unique(np.asarray(y))
        return super().fit(X, np.searchsorted(self.labels_, y), **kwargs)

    def predict(self, X, **kwargs):
        return self.labels_[super().predict(X, **kwargs)]
'''


def test_subclass_with_string_labels_round_trips_with_its_local_module(tmp_path, fresh, monkeypatch):
    (tmp_path / "labelled.py").write_text(LABELLED)
    monkeypatch.syspath_prepend(str(tmp_path))
    import labelled

    X, y = _numeric()
    names = np.array(["low", "mid", "high"], dtype=object)[np.digitize(y, [-0.7, 0.7])]
    model = labelled.LabelledXGBClassifier(n_estimators=6).fit(X, names)
    ms.save(model, tmp_path / "m.msafe", sample=X[:20])
    manifest = ms.inspect(tmp_path / "m.msafe")
    data = manifest.components["model"].data
    assert data["class"] == "labelled:LabelledXGBClassifier" and data["base"] == "xgboost:XGBClassifier"
    assert data["attributes"]["labels_"] == {"$array": ["high", "low", "mid"], "dtype": "object", "shape": [3]}
    assert [c["module"] for c in manifest.code] == ["labelled"]
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "expected.npy", model.predict(X).astype(str))
    check = """
        got = bundle.predict(np.load("X.npy"))
        assert type(bundle.model).__name__ == "LabelledXGBClassifier"
        assert got.dtype == object and np.array_equal(got.astype(str), np.load("expected.npy")), got[:5]
        assert bundle.verify().ok
    """
    # The project's own copy of labelled.py is importable: it is used, no trust needed.
    fresh("import numpy as np, modelsafe as ms\nbundle = ms.load('m.msafe')\n" + textwrap.dedent(check))
    # Elsewhere only the bundled copy exists: it runs only with trust_code=True.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name in ("m.msafe", "X.npy", "expected.npy"):
        (elsewhere / name).write_bytes((tmp_path / name).read_bytes())
    fresh(textwrap.dedent("""
        import sys, numpy as np, modelsafe as ms
        from modelsafe.errors import UntrustedContentError
        try:
            ms.load("m.msafe")
        except UntrustedContentError as exc:
            assert "labelled" in exc.modules and "labelled" not in sys.modules
        else:
            raise AssertionError("bundled code ran without trust_code=True")
        bundle = ms.load("m.msafe", trust_code=True)
    """) + textwrap.dedent(check), cwd=elsewhere)


@pytest.mark.parametrize("ref", ["subprocess:Popen", "os:system", "xgboost.core:DMatrix"])
def test_tampered_class_reference_is_refused_before_import(tmp_path, ref):
    X, y = _numeric()
    path = tmp_path / "folder-artifact"
    ms.save(xgb.XGBRegressor(n_estimators=3).fit(X, y), path)
    manifest = json.loads((path / "modelsafe.json").read_text())
    manifest["components"]["model"]["data"]["class"] = ref
    (path / "modelsafe.json").write_text(json.dumps(manifest))
    with pytest.raises((UntrustedContentError, FormatError)) as info:
        ms.load(path)
    if ref.startswith(("subprocess", "os")):
        assert isinstance(info.value, UntrustedContentError)
    else:
        assert "not a subclass" in str(info.value)


# ---------------------------------------------------------------------------------------
# inside scikit-learn Pipelines (embedded components of the sklearn flavor)
# ---------------------------------------------------------------------------------------


def _pipelines() -> dict[str, tuple[object, pd.DataFrame]]:
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import StackingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame, target = _frame()
    labels = np.array(["churn", "stay"], dtype=object)[target]
    encode = ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(), StandardScaler()), ["age", "income", "score"]),
        ("cat", OneHotEncoder(handle_unknown="ignore"), ["city"]),
    ])
    scaled = Pipeline([("encode", encode), ("xgb", xgb.XGBClassifier(n_estimators=8, max_depth=3))])
    # StackingClassifier encodes the string labels for its XGBoost member and decodes its own output.
    stacked = Pipeline([("encode", encode), ("stack", StackingClassifier(
        [("xgb", xgb.XGBClassifier(n_estimators=6, max_depth=2)), ("xgbrf", xgb.XGBRFClassifier(n_estimators=4))],
        final_estimator=LogisticRegression(), cv=3))])
    native_categorical = Pipeline([("xgb", xgb.XGBClassifier(n_estimators=6, enable_categorical=True))])
    return {
        "scaled": (scaled.fit(frame, target), frame),
        "string-labels": (stacked.fit(frame, labels), frame),
        "native-categorical": (native_categorical.fit(frame, target), frame),
    }


def test_pipeline_steps_go_through_the_xgboost_flavor(tmp_path, fresh):
    expected = {}
    for name, (pipeline, frame) in _pipelines().items():
        ms.save(pipeline, tmp_path / f"{name}.msafe", sample=frame)
        component = ms.inspect(tmp_path / f"{name}.msafe").components["model"]
        assert component.flavor == "sklearn"
        assert not [g for g in component.data["globals"] if g.startswith("xgboost")], component.data["globals"]
        embedded = component.data["embedded"]
        assert {e["flavor"] for e in embedded} == {"xgboost"}
        members = ms.inspect(tmp_path / f"{name}.msafe").members
        fitted = [e for e in embedded if e["data"]["fitted"]]
        assert sum(m.endswith("/model.ubj") for m in members) == len(fitted) >= 1
        np.save(tmp_path / f"{name}.predict.npy", pipeline.predict(frame).astype(str))
        np.save(tmp_path / f"{name}.proba.npy", pipeline.predict_proba(frame))
        expected[name] = [str(c) for c in pipeline.classes_]
    proc = fresh(_WALK + _inputs_code() + textwrap.dedent(f"""
        import json, numpy as np, pandas as pd, modelsafe as ms
        frame = INPUTS["frame"]()
        out = {{}}
        for name in {sorted(expected)!r}:
            bundle = ms.load(name + ".msafe")
            pred = bundle.predict(frame)
            out[name] = {{
                "classes": [str(c) for c in bundle.model.classes_],
                "predict": bool(np.array_equal(pred.astype(str), np.load(name + ".predict.npy"))),
                "proba": bool(np.array_equal(bundle.model.predict_proba(frame), np.load(name + ".proba.npy"))),
                "verify": bundle.verify().ok,
                "xgb_types": sorted({{type(s).__name__ for s in _walk(bundle.model)}}),
            }}
        print(json.dumps(out))
    """))
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, classes in expected.items():
        assert got[name]["classes"] == classes, name
        assert got[name]["predict"] and got[name]["proba"] and got[name]["verify"], (name, got[name])
        assert got[name]["xgb_types"], name
    assert got["string-labels"]["classes"] == ["churn", "stay"]
    assert got["string-labels"]["xgb_types"] == ["XGBClassifier", "XGBRFClassifier"]
    stacked = ms.inspect(tmp_path / "string-labels.msafe").components["model"].data["embedded"]
    # 2 unfitted templates (estimators) + 2 fitted members, each saved once although the stacking
    # classifier refers to them from both estimators_ and named_estimators_.
    assert sorted(e["data"]["fitted"] for e in stacked) == [False, False, True, True]


def test_a_step_referenced_twice_is_loaded_as_one_object(tmp_path):
    from sklearn.ensemble import StackingClassifier
    from sklearn.linear_model import LogisticRegression

    X, y = _numeric()
    stack = StackingClassifier([("xgb", xgb.XGBClassifier(n_estimators=3))], final_estimator=LogisticRegression(),
                               cv=2).fit(X, y > 0)
    ms.save(stack, tmp_path / "m.msafe")
    loaded = ms.load(tmp_path / "m.msafe").model
    assert loaded.estimators_[0] is loaded.named_estimators_["xgb"]
    assert loaded.estimators[0][1] is not loaded.estimators_[0]


_WALK = '''
def _walk(est):
    from xgboost import XGBModel
    if isinstance(est, XGBModel):
        yield est
    for value in getattr(est, "__dict__", {}).values():
        items = value if isinstance(value, (list, tuple)) else [value]
        for item in items:
            item = item[1] if isinstance(item, tuple) and len(item) >= 2 else item
            if hasattr(item, "get_params"):
                yield from _walk(item)
'''


# ---------------------------------------------------------------------------------------
# crafted model files: XGBoost walks trees without bounds checks (it would crash)
# ---------------------------------------------------------------------------------------


def _crafted(tmp_path, edit) -> Path:
    """An artifact whose booster was edited, with its hashes recomputed (as an attacker would)."""
    import hashlib

    X, y = _numeric()
    booster = xgb.train({"max_depth": 3}, xgb.DMatrix(X, label=y), 3)
    model = json.loads(booster.save_raw(raw_format="json"))
    edit(model["learner"]["gradient_booster"]["model"]["trees"][1])
    crafted = xgb.Booster()
    crafted.load_model(bytearray(json.dumps(model).encode()))
    path = tmp_path / "crafted"
    ms.save(booster, path)
    raw = bytes(crafted.save_raw(raw_format="ubj"))
    (path / "model" / "model.ubj").write_bytes(raw)
    manifest = json.loads((path / "modelsafe.json").read_text())
    manifest["members"]["model/model.ubj"] = {"size": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
    (path / "modelsafe.json").write_text(json.dumps(manifest))
    return path


@pytest.mark.parametrize("edit, words", [
    (lambda t: t["left_children"].__setitem__(0, 10 ** 6), "outside"),
    (lambda t: t["right_children"].__setitem__(0, 0), "outside"),
    (lambda t: t["left_children"].__setitem__(0, -1), "exactly one child"),
    (lambda t: t["split_indices"].__setitem__(0, 99), "feature 99"),
])
def test_crafted_trees_are_refused_before_prediction(tmp_path, fresh, edit, words):
    path = _crafted(tmp_path, edit)
    proc = fresh(f"""
        import modelsafe as ms
        from modelsafe.errors import UntrustedContentError
        try:
            ms.load({str(path)!r})
        except UntrustedContentError as exc:
            print("refused:", exc)
    """)
    assert "refused: The XGBoost model in this artifact is malformed" in proc.stdout and words in proc.stdout


def test_booster_bundle_predicts_a_dmatrix_too(saved):
    root, _ = saved
    bundle = ms.load(root / "booster-unnamed.msafe")
    X = _numeric()[0]
    assert np.array_equal(bundle.predict(xgb.DMatrix(X)), np.load(root / "booster-unnamed.predict.npy"))
