"""LightGBM flavor: model text plus the scikit-learn wrapper state as JSON.

Saved here, loaded in a fresh interpreter; the input guard (LightGBM itself matches
DataFrame columns by position), the verification negative control, Pipelines and bad
input on real LightGBM models.
"""

from __future__ import annotations

import inspect
import json
import math
import textwrap
import warnings

import numpy as np
import pandas as pd
import pytest

lgb = pytest.importorskip("lightgbm")

import modelsafe as ms  # noqa: E402
from modelsafe.checks.schema import InputWarning  # noqa: E402
from modelsafe.errors import (  # noqa: E402
    SaveError,
    SchemaError,
    UnsavableObjectError,
    VerificationError,
)

QUIET = {"verbose": -1, "n_jobs": 1}


def _frame(n: int = 300, seed: int = 11) -> tuple[pd.DataFrame, np.ndarray]:
    """Features with missing values, a categorical column and a column name with a space."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "monthly spend": rng.gamma(2.0, 30.0, n),
        "tenure": rng.integers(1, 72, n).astype(float),
        "support calls": rng.poisson(1.5, n).astype(float),
        "plan": pd.Categorical(rng.choice(["basic", "plus", "pro"], n)),
    })
    frame.loc[::7, "monthly spend"] = np.nan
    signal = frame["support calls"] - frame["tenure"] / 24 + np.where(frame["plan"] == "basic", 1.0, -0.5)
    labels = np.where(signal + rng.normal(scale=0.4, size=n) > 0, "churn", "stay").astype(object)
    return frame, labels


def _numeric(n: int = 200, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    X[::9, 1] = np.nan
    return X, X[:, 0] - 0.5 * np.nan_to_num(X[:, 1]) + rng.normal(scale=0.1, size=n)


#: How each test input is rebuilt, here and in a fresh process (test data never travels as a pickle).
INPUTS = {
    "frame": "_frame()[0]",
    "numeric": "_numeric()[0]",
    "named": "pd.DataFrame(_numeric()[0], columns=['a', 'b', 'c', 'd'])",
}


def _inputs_code() -> str:
    """Source that defines the data builders and ``INPUTS`` in a fresh process."""
    builders = "".join(inspect.getsource(f) for f in (_frame, _numeric))
    table = "{" + ", ".join(f"{k!r}: lambda: {v}" for k, v in INPUTS.items()) + "}"
    return f"import numpy as np, pandas as pd\n{builders}\nINPUTS = {table}\n"


def _models() -> dict[str, tuple[object, str]]:
    """name -> (fitted model, recipe of the input to predict on)."""
    frame, labels = _frame()
    X, y = _numeric()
    early = lgb.LGBMClassifier(n_estimators=300, learning_rate=0.2, **QUIET)
    with warnings.catch_warnings():  # eval_set is deprecated, but eval_y is not label-encoded in LightGBM 4.7
        warnings.simplefilter("ignore", lgb.basic.LGBMDeprecationWarning)
        early.fit(frame[:220], labels[:220], eval_set=[(frame[220:], labels[220:])],
                  callbacks=[lgb.early_stopping(5, verbose=False)])
    named = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    booster = lgb.train({"objective": "regression", **QUIET}, lgb.Dataset(X, y), num_boost_round=12)
    return {
        "string-labels-categorical-early-stopping": (early, "frame"),
        "multiclass-numpy": (lgb.LGBMClassifier(n_estimators=10, **QUIET).fit(X, np.digitize(y, [-0.5, 0.5])),
                             "numeric"),
        "regressor-frame": (lgb.LGBMRegressor(n_estimators=15, **QUIET).fit(named, y), "named"),
        "ranker": (lgb.LGBMRanker(n_estimators=8, min_child_samples=5, **QUIET)
                   .fit(X, np.clip(np.digitize(y, [-0.5, 0.5]), 0, 2), group=[10] * 20), "numeric"),
        "booster-unnamed": (booster, "numeric"),
        "booster-categorical": (early.booster_, "frame"),
    }


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("lgb")
    expected = {}
    for name, (model, recipe) in _models().items():
        x = eval(INPUTS[recipe])  # noqa: S307 - a recipe from the table above
        ms.save(model, root / f"{name}.msafe", sample=x)
        outputs = {"predict": model.predict(x)}
        if hasattr(model, "predict_proba"):
            outputs["predict_proba"] = model.predict_proba(x)
        for key, value in outputs.items():
            np.save(root / f"{name}.{key}.npy", np.asarray(value).astype(str) if value.dtype == object else value)
        wrapper = not isinstance(model, lgb.Booster)
        expected[name] = {
            "recipe": recipe,
            "type": f"{type(model).__module__}.{type(model).__qualname__}",
            "outputs": sorted(outputs),
            "feature_names": model.feature_name() if not wrapper else (
                list(model.feature_names_in_) if hasattr(model, "feature_names_in_") else None),
            "params": _plain(model.get_params()) if wrapper else None,
            "classes": [str(c) for c in model.classes_] if hasattr(model, "classes_") else None,
            "best_iteration": model.best_iteration if not wrapper else model.best_iteration_,
        }
    return root, expected


def _plain(params: dict) -> dict:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in params.items()}


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
            wrapper = type(model).__name__ != "Booster"
            exact = {{}}
            for key in ("predict", "predict_proba"):
                path = root / f"{{name}}.{{key}}.npy"
                if path.exists():
                    got = np.asarray(getattr(model, key)(x))
                    got = got.astype(str) if got.dtype == object else got
                    exact[key] = bool(np.array_equal(got, np.load(path), equal_nan=got.dtype.kind == "f"))
            report[name] = {{
                "type": f"{{type(model).__module__}}.{{type(model).__qualname__}}",
                "exact": exact,
                "feature_names": (list(model.feature_names_in_) if hasattr(model, "feature_names_in_") else None)
                                 if wrapper else model.feature_name(),
                "params": {{k: (None if isinstance(v, float) and math.isnan(v) else v)
                           for k, v in model.get_params().items()}} if wrapper else None,
                "classes": [str(c) for c in model.classes_] if hasattr(model, "classes_") else None,
                "best_iteration": model.best_iteration_ if wrapper else model.best_iteration,
                "verify": bundle.verify().ok,
            }}
        print(json.dumps(report))
    """))
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, want in expected.items():
        got = report[name]
        assert got["type"] == want["type"], name
        assert set(got["exact"]) == set(want["outputs"]) and all(got["exact"].values()), (name, got["exact"])
        for key in ("feature_names", "params", "classes", "best_iteration"):
            assert got[key] == want[key], (name, key)
        assert got["verify"], name
    assert report["string-labels-categorical-early-stopping"]["classes"] == ["churn", "stay"]


def test_manifest_records_wrapper_state_and_no_pickle(saved):
    root, expected = saved
    manifest = ms.inspect(root / "string-labels-categorical-early-stopping.msafe")
    data = manifest.components["model"].data
    assert manifest.components["model"].flavor == "lightgbm"
    assert [m for m in manifest.members if m.startswith("model/")] == ["model/model.txt"]
    assert data["class"] == "lightgbm:LGBMClassifier" and data["kind"] == "classifier"
    assert data["classes_"] == {"$array": ["churn", "stay"], "dtype": "object", "shape": [2]}
    assert data["feature_names_in_"] == ["monthly_spend", "tenure", "support_calls", "plan"]
    assert data["pandas_categorical"] == [["basic", "plus", "pro"]]
    assert data["best_iteration"] == expected["string-labels-categorical-early-stopping"]["best_iteration"] > 0
    assert data["attributes"]["_class_map"] == {"churn": 0, "stay": 1}
    assert not any(m.endswith((".pkl", ".pickle")) for m in manifest.members)
    assert "lightgbm" in manifest.environment["packages"]


def test_unnamed_booster_has_no_feature_names(saved):
    root, _ = saved
    data = ms.inspect(root / "booster-unnamed.msafe").components["model"].data
    assert data["feature_names_in_"] is None and data["feature_name"][0] == "Column_0"


# ---------------------------------------------------------------------------------------
# input guard: LightGBM alone would match DataFrame columns by position
# ---------------------------------------------------------------------------------------


@pytest.fixture
def no_sample(tmp_path):
    frame, labels = _frame()
    model = lgb.LGBMClassifier(n_estimators=20, **QUIET).fit(frame, labels)
    ms.save(model, tmp_path / "m.msafe")  # no sample: only the flavor's guard protects predict
    return ms.load(tmp_path / "m.msafe"), frame, model


def test_reordered_columns_are_realigned_by_name(no_sample):
    bundle, frame, model = no_sample
    reordered = frame[["plan", "support calls", "monthly spend", "tenure"]]
    assert np.array_equal(bundle.predict(reordered), model.predict(frame))
    assert np.array_equal(bundle.outputs(reordered)["predict_proba"], model.predict_proba(frame))


@pytest.mark.parametrize("change", ["renamed", "missing"])
def test_renamed_or_missing_columns_raise_schema_error(no_sample, change):
    bundle, frame, _ = no_sample
    bad = frame.rename(columns={"tenure": "months"}) if change == "renamed" else frame.drop(columns="tenure")
    with pytest.raises(SchemaError) as info:
        bundle.predict(bad)
    assert info.value.column == "tenure"
    assert ("months" in str(info.value)) == (change == "renamed")


def test_extra_columns_warn_and_are_ignored(no_sample):
    bundle, frame, model = no_sample
    with pytest.warns(InputWarning, match="region"):
        got = bundle.predict(frame.assign(region="north"))
    assert np.array_equal(got, model.predict(frame))


def test_array_with_wrong_width_is_refused(tmp_path):
    X, y = _numeric()
    ms.save(lgb.LGBMRegressor(n_estimators=5, **QUIET).fit(X, y), tmp_path / "m.msafe")
    with pytest.raises(SchemaError) as info:
        ms.load(tmp_path / "m.msafe").predict(X[:, :3])
    assert (info.value.expected, info.value.actual) == (4, 3)


# ---------------------------------------------------------------------------------------
# verification negative control
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["string-labels-categorical-early-stopping", "booster-unnamed"])
def test_verification_fails_for_a_perturbed_model(saved, name):
    root, _ = saved
    bundle = ms.load(root / f"{name}.msafe", verify=False)
    assert bundle.verify().ok
    booster = bundle.model if isinstance(bundle.model, lgb.Booster) else bundle.model.booster_
    for leaf in range(booster.dump_model()["tree_info"][0]["num_leaves"]):
        booster.set_leaf_output(0, leaf, booster.get_leaf_output(0, leaf) + 3.0)
    report = bundle.verify()
    assert not report.ok
    with pytest.raises(VerificationError):
        report.raise_if_failed()


# ---------------------------------------------------------------------------------------
# Pipelines, templates, and what cannot be saved
# ---------------------------------------------------------------------------------------


def test_pipeline_steps_go_through_the_lightgbm_flavor(tmp_path, fresh):
    from sklearn.compose import ColumnTransformer
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame, labels = _frame()
    multi = np.where(frame["tenure"] > 48, "loyal", labels).astype(object)
    encode = ColumnTransformer([("num", StandardScaler(), ["monthly spend", "tenure", "support calls"]),
                                ("cat", OneHotEncoder(), ["plan"])])
    pipeline = Pipeline([("encode", encode),
                         ("ovr", OneVsRestClassifier(lgb.LGBMClassifier(n_estimators=10, **QUIET)))]).fit(frame, multi)
    ms.save(pipeline, tmp_path / "p.msafe", sample=frame)
    component = ms.inspect(tmp_path / "p.msafe").components["model"]
    assert not [g for g in component.data["globals"] if g.startswith("lightgbm")]
    flavors = [e["flavor"] for e in component.data["embedded"]]
    assert flavors and set(flavors) == {"lightgbm"}
    np.save(tmp_path / "expected.npy", pipeline.predict(frame).astype(str))
    np.save(tmp_path / "proba.npy", pipeline.predict_proba(frame))
    fresh(_inputs_code() + textwrap.dedent("""
        import modelsafe as ms
        frame = INPUTS["frame"]()
        bundle = ms.load("p.msafe")
        assert list(bundle.model.classes_) == ["churn", "loyal", "stay"]
        assert np.array_equal(bundle.predict(frame).astype(str), np.load("expected.npy"))
        assert np.array_equal(bundle.model.predict_proba(frame), np.load("proba.npy"))
        assert all(type(e).__name__ == "LGBMClassifier" for e in bundle.model[-1].estimators_)
    """))


def test_unfitted_template_keeps_parameters_and_sample_is_refused(tmp_path):
    template = lgb.LGBMRegressor(n_estimators=33, num_leaves=7, **QUIET)
    ms.save(template, tmp_path / "t.msafe")
    loaded = ms.load(tmp_path / "t.msafe").model
    assert loaded.get_params() == template.get_params() and not loaded.__sklearn_is_fitted__()
    path = tmp_path / "with-sample.msafe"
    with pytest.raises(SaveError, match="verification sample"):
        ms.save(template, path, sample=np.ones((3, 2)))
    assert not path.exists()


def test_custom_objective_cannot_be_stored_and_nothing_is_written(tmp_path):
    X, y = _numeric()

    def l2(y_true, y_pred):
        return y_pred - y_true, np.ones_like(y_pred)

    model = lgb.LGBMRegressor(n_estimators=3, objective=l2, **QUIET).fit(X, y)
    path = tmp_path / "m.msafe"
    with pytest.raises(UnsavableObjectError) as info:
        ms.save(model, path)
    assert [p[0] for p in info.value.problems] == ["LGBMRegressor._objective"]
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_names_with_spaces_are_matched_as_lightgbm_renames_them(tmp_path, fresh):
    X, y = _numeric()
    frame = pd.DataFrame(X, columns=["unit price", "qty\tsold", "c", "d"])
    model = lgb.LGBMRegressor(n_estimators=6, **QUIET).fit(frame, y)
    assert list(model.feature_names_in_) == ["unit_price", "qty\tsold", "c", "d"]
    ms.save(model, tmp_path / "m.msafe")
    np.save(tmp_path / "expected.npy", model.predict(frame))
    fresh(_inputs_code() + textwrap.dedent("""
        import modelsafe as ms
        frame = pd.DataFrame(_numeric()[0], columns=["unit price", "qty\\tsold", "c", "d"])
        bundle = ms.load("m.msafe")
        assert np.array_equal(bundle.predict(frame[["d", "qty\\tsold", "c", "unit price"]]), np.load("expected.npy"))
    """))


# ---------------------------------------------------------------------------------------
# crafted model text: LightGBM aborts the process or reads out of bounds on it
# ---------------------------------------------------------------------------------------


def _crafted(tmp_path, edit) -> str:
    """A folder artifact whose model text was edited, hashes recomputed (as an attacker would)."""
    import hashlib

    X, y = _numeric()
    path = tmp_path / "crafted"
    ms.save(lgb.train({"num_leaves": 4, **QUIET}, lgb.Dataset(X, y), num_boost_round=3), path)
    member = path / "model" / "model.txt"
    text = edit(member.read_text())
    member.write_text(text)
    manifest = json.loads((path / "modelsafe.json").read_text())
    manifest["members"]["model/model.txt"] = {"size": len(text.encode()),
                                              "sha256": hashlib.sha256(text.encode()).hexdigest()}
    (path / "modelsafe.json").write_text(json.dumps(manifest))
    return str(path)


def _first(key: str, value: str | None):
    """Replace (None: drop) the first value of the first ``key=`` line."""
    def edit(text: str) -> str:
        start = text.index(f"\n{key}=") + len(key) + 2
        end = text.index("\n", start)
        values = text[start:end].split(" ")
        values[:1] = [] if value is None else [value]
        return text[:start] + " ".join(values) + text[end:]
    return edit


@pytest.mark.parametrize("edit, words", [
    (_first("left_child", "9"), "outside the tree"),
    (_first("right_child", "-9"), "outside the tree"),
    (_first("left_child", "0"), "outside the tree"),
    (_first("split_feature", "7"), "feature 7"),
    (_first("leaf_value", None), "leaf values"),
    (_first("tree_sizes", None), "tree_sizes"),
    (lambda text: _first("leaf_value", "0.5 0.5")(text.replace("num_leaves=4", "num_leaves=5", 1)), "split arrays"),
    (lambda text: text.split("end of trees")[0], "truncated"),
])
def test_crafted_model_text_is_refused_before_lightgbm_reads_it(tmp_path, fresh, edit, words):
    path = _crafted(tmp_path, edit)
    proc = fresh(f"""
        import modelsafe as ms
        from modelsafe.errors import UntrustedContentError
        try:
            ms.load({path!r})
        except UntrustedContentError as exc:
            print("refused:", exc)
    """)
    assert "refused: The LightGBM model in this artifact is malformed" in proc.stdout and words in proc.stdout


def test_lying_tree_sizes_cannot_abort_the_process(tmp_path, fresh):
    # LightGBM parses trees in parallel at the offsets tree_sizes gives, and aborts the process
    # when they are wrong; modelsafe hands it the text without them.
    path = _crafted(tmp_path, _first("tree_sizes", "10"))
    X, _ = _numeric()
    np.save(tmp_path / "X.npy", X)
    fresh(f"""
        import numpy as np, modelsafe as ms
        model = ms.load({path!r}).model
        assert model.predict(np.load("X.npy")).shape == (200,)
    """)
