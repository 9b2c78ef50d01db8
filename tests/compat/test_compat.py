"""Across real environments: artifacts saved with older libraries load, or are refused clearly.

The old environment (``.venv-old``, built by ``make test`` from ``requirements-old.txt``)
has scikit-learn 1.4, numpy 1.26, pandas 2.1 and XGBoost 1.7, with this project installed;
the test environment has current releases. Each scenario saves in one environment and
loads in the other, always in a fresh process.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import modelsafe as ms
from modelsafe.checks.environment import Level

sys.path.insert(0, str(Path(__file__).parent))
from envs import run as _run  # noqa: E402 - one runner for the compat tests

REPO = Path(__file__).resolve().parents[2]

SAVE_IN_OLD = """
    import json, pickle, warnings
    import joblib, numpy as np, pandas as pd, sklearn, xgboost as xgb
    import modelsafe as ms
    from sklearn.compose import make_column_transformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    warnings.simplefilter("ignore")
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"income": rng.normal(50, 10, 300), "age": rng.integers(18, 80, 300),
                       "city": rng.choice(["paris", "lyon", "nice"], 300)})
    y = ((df["income"] > 50) & (df["city"] != "nice")).astype(int)
    df.to_csv("rows.csv", index=False)

    pipe = make_pipeline(make_column_transformer((OneHotEncoder(), ["city"]), (StandardScaler(), ["income", "age"])),
                         LogisticRegression()).fit(df, y)
    ms.save(pipe, "pipeline.msafe", sample=df.iloc[:20])
    np.save("pipeline_expected.npy", pipe.predict_proba(df))

    X = df[["income", "age"]].to_numpy(dtype=float)
    np.save("X.npy", X)
    for name, model in {"forest": RandomForestClassifier(25, max_depth=6, random_state=0),
                        "tree": DecisionTreeClassifier(max_depth=6, random_state=0)}.items():
        model.fit(X, y)
        ms.save(model, f"{name}.msafe", sample=X[:20])
        np.save(f"{name}_expected.npy", model.predict_proba(X))
    joblib.dump(DecisionTreeClassifier(max_depth=6, random_state=0).fit(X, y), "tree.joblib")
    ms.convert("tree.joblib", "tree_converted.msafe", sample=X[:20])

    frame = df.assign(city=df["city"].astype("category"))
    booster = xgb.XGBClassifier(n_estimators=60, max_depth=3, enable_categorical=True, tree_method="hist",
                                early_stopping_rounds=5)
    booster.fit(frame.iloc[:240], y.iloc[:240], eval_set=[(frame.iloc[240:], y.iloc[240:])], verbose=False)
    ms.save(booster, "xgb.msafe", sample=frame.iloc[:20])
    np.save("xgb_expected.npy", booster.predict_proba(frame))
    with open("xgb.pkl", "wb") as f:
        pickle.dump(booster, f)
    ms.convert("xgb.pkl", "xgb_converted.msafe", sample=frame.iloc[:20],
               trusted=["xgboost.sklearn.XGBClassifier", "xgboost.core.Booster"])
    json.dump({"feature_names_in_": list(booster.feature_names_in_), "n_features_in_": booster.n_features_in_,
               "best_iteration": booster.best_iteration, "enable_categorical": booster.enable_categorical,
               "versions": {"scikit-learn": sklearn.__version__, "numpy": np.__version__,
                            "pandas": pd.__version__, "xgboost": xgb.__version__}},
              open("old.json", "w"))
"""

SAVE_IN_NEW = """
    import numpy as np, pandas as pd
    import modelsafe as ms
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    rng = np.random.default_rng(1)
    df = pd.DataFrame({"income": rng.normal(50, 10, 100), "city": rng.choice(["paris", "lyon"], 100)})
    y = (df["income"] > 50).astype(int)
    pipe = make_pipeline(make_column_transformer((OneHotEncoder(), ["city"]), (StandardScaler(), ["income"])),
                         LogisticRegression()).fit(df, y)
    ms.save(pipe, "new_pipeline.msafe", sample=df.iloc[:10])
    X = df[["income"]].to_numpy()
    ms.save(DecisionTreeClassifier(random_state=0).fit(X, y), "new_tree.msafe", sample=X[:10])
"""


@pytest.fixture(scope="session")
def from_old(tmp_path_factory, old_python) -> Path:
    folder = tmp_path_factory.mktemp("saved-in-old")
    _run(old_python, SAVE_IN_OLD, folder)
    return folder


@pytest.fixture(scope="session")
def from_new(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("saved-in-new")
    _run(Path(sys.executable), SAVE_IN_NEW, folder)
    return folder


def test_check_env_reports_each_difference_with_its_level(from_old):
    old = json.loads((from_old / "old.json").read_text())["versions"]
    report = ms.check_env(from_old / "pipeline.msafe")
    levels = {d.package: d for d in report.differences}
    for dist in ("scikit-learn", "numpy", "pandas"):
        assert levels[dist].saved == old[dist]
        assert levels[dist].level is not Level.SAME and levels[dist].direction == "newer", levels[dist]
    assert levels["numpy"].level is Level.MAJOR  # 1.26 -> 2.x
    assert not report.ok and "pip install 'scikit-learn==" in str(report)


@pytest.mark.parametrize("name", ["pipeline", "forest", "tree"])
def test_old_to_new_loads_verified_with_one_warning(from_old, fresh, name):
    proc = fresh(f"""
        import warnings
        import numpy as np, pandas as pd, modelsafe as ms
        from modelsafe.checks.environment import EnvironmentWarning

        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            try:
                bundle = ms.load("{name}.msafe", env="warn")
            except (ms.EnvironmentMismatchError, ms.VerificationError) as exc:
                # the other acceptable outcome: one clear error naming both versions
                assert "scikit-learn 1.4.2 ->" in str(exc) or "numpy" in str(exc), exc
                assert not [w for w in seen if issubclass(w.category, EnvironmentWarning)]
                print("refused clearly")
                raise SystemExit(0)
        env_warnings = [w for w in seen if issubclass(w.category, EnvironmentWarning)]
        assert len(env_warnings) == 1, [str(w.message) for w in seen]
        assert "scikit-learn 1.4.2 ->" in str(env_warnings[0].message)
        assert bundle.verify().ok
        rows = pd.read_csv("rows.csv") if "{name}" == "pipeline" else np.load("X.npy")
        got = bundle.model.predict_proba(rows)                 # never an AttributeError here
        assert np.allclose(got, np.load("{name}_expected.npy"), rtol=1e-9, atol=1e-12)
        bundle.predict(rows)
        print("loaded and verified")
    """, cwd=from_old)
    assert "loaded and verified" in proc.stdout or "refused clearly" in proc.stdout


def test_new_to_old_is_refused_before_loading(from_new, old_python):
    proc = _run(old_python, """
        import modelsafe as ms
        for name in ("new_tree.msafe", "new_pipeline.msafe"):
            try:
                ms.load(name)
            except ms.EnvironmentMismatchError as exc:
                text = str(exc)
                assert "numpy._core" in text and "numpy>=2" in text and "numpy 1.26.4" in text, text
                assert exc.packages == ["numpy"], exc.packages
                print("refused:", name)
    """, from_new)
    assert proc.stdout.count("refused:") == 2, proc.stdout + proc.stderr
    assert "ModuleNotFoundError" not in proc.stdout + proc.stderr


def test_strict_refuses_both_directions_naming_every_package(from_old, from_new, old_python, fresh):
    fresh("""
        import modelsafe as ms
        try:
            ms.load("pipeline.msafe", env="strict")
            raise SystemExit("old -> new loaded under strict")
        except ms.EnvironmentMismatchError as exc:
            assert {"numpy", "scikit-learn", "pandas"} <= set(exc.packages), exc.packages
    """, cwd=from_old)
    proc = _run(old_python, """
        import modelsafe as ms
        try:
            ms.load("new_pipeline.msafe", env="strict")
        except ms.EnvironmentMismatchError as exc:
            assert {"numpy", "scikit-learn", "pandas"} <= set(exc.packages), exc.packages
            assert "pip install 'numpy==" in str(exc)
            print("strict refused")
    """, from_new)
    assert "strict refused" in proc.stdout


@pytest.mark.parametrize("name", ["xgb", "xgb_converted"])
def test_xgboost_17_to_current_native_format(from_old, fresh, name):
    fresh(f"""
        import json, warnings
        import numpy as np, pandas as pd, modelsafe as ms
        warnings.simplefilter("ignore")
        old = json.load(open("old.json"))
        bundle = ms.load("{name}.msafe")
        assert ms.inspect("{name}.msafe").flavor == "xgboost"      # native format, no pickle
        model = bundle.model
        assert list(model.feature_names_in_) == old["feature_names_in_"]
        assert model.n_features_in_ == old["n_features_in_"] and model.enable_categorical is True
        assert model.best_iteration == old["best_iteration"]
        frame = pd.read_csv("rows.csv").astype({{"city": "category"}})
        assert np.allclose(model.predict_proba(frame), np.load("xgb_expected.npy"), rtol=1e-6, atol=1e-7)
    """, cwd=from_old)


def test_raw_legacy_files_are_explained_and_converted_in_the_old_environment(from_old, fresh):
    tree = ms.doctor(from_old / "tree.joblib")
    text = str(tree)
    assert "scikit-learn 1.4.2" in text and "numpy" in text
    xgb = ms.doctor(from_old / "xgb.pkl")
    assert not xgb.ok
    assert "written by XGBoost 1.7.6" in str(xgb) and "save_model" in str(xgb)
    fresh("""
        import warnings
        import numpy as np, modelsafe as ms
        warnings.simplefilter("ignore")
        bundle = ms.load("tree_converted.msafe")
        assert ms.inspect("tree_converted.msafe").source["path"].endswith("tree.joblib")
        assert np.allclose(bundle.model.predict_proba(np.load("X.npy")), np.load("tree_expected.npy"))
    """, cwd=from_old)
