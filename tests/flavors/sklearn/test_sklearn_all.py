"""Every scikit-learn estimator that fits on a small data set round-trips, loaded in a fresh process.

The parent fits each estimator and saves it; one fresh interpreter loads every artifact
(no trusted names) and compares predict, predict_proba, decision_function and transform.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import modelsafe as ms

sys.path.insert(0, str(Path(__file__).parent))

from estimators import fit_all as _fit_all  # noqa: E402 - the zoo, shared with tests/compat
from estimators import outputs as _outputs  # noqa: E402


def test_every_estimator_round_trips_in_a_fresh_process(tmp_path: Path, fresh):
    fitted = _fit_all()
    assert len(fitted) > 100, "scikit-learn should offer well over 100 fittable estimators"
    expected = {}
    for name, est, X in fitted:
        expected[name] = _outputs(est, X)
        replayable = bool(expected[name]) and (hasattr(est, "predict") or hasattr(est, "transform"))
        ms.save(est, tmp_path / f"{name}.msafe", sample=X[:8] if replayable else None)
        np.savez(tmp_path / f"{name}.expected.npz", X=X, **expected[name])
    (tmp_path / "names.json").write_text(json.dumps(sorted(expected)))
    proc = fresh("""
        import json, warnings, numpy as np, modelsafe as ms
        warnings.simplefilter("ignore")
        failures = []
        for name in json.load(open("names.json")):
            try:
                bundle = ms.load(f"{name}.msafe", env="ignore")
                ref = np.load(f"{name}.expected.npz")
                for method in ref.files:
                    if method == "X":
                        continue
                    got = getattr(bundle.model, method)(ref["X"])
                    got = got.toarray() if hasattr(got, "toarray") else np.asarray(got)
                    if ref[method].dtype.kind in "fc":
                        ok = np.allclose(got, ref[method], rtol=1e-7, atol=1e-9, equal_nan=True)
                    else:
                        ok = np.array_equal(got, ref[method])
                    if not ok:
                        failures.append(f"{name}.{method} differs")
            except Exception as exc:
                failures.append(f"{name}: {type(exc).__name__}: {exc}")
        print(json.dumps(failures))
    """)
    failures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert failures == [], "\n".join(failures)


@pytest.mark.parametrize("single_file", [True, False])
def test_pipeline_with_column_transformer_and_forest(tmp_path, fresh, single_file):
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.decomposition import PCA
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import FeatureUnion, Pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

    rng = np.random.default_rng(1)
    df = pd.DataFrame({"age": rng.integers(18, 90, 300), "income": rng.normal(50, 10, 300),
                       "city": rng.choice(["a", "b", "c"], 300)})
    y = (df["income"] > 50).astype(int)
    pre = ColumnTransformer([
        ("num", FeatureUnion([("scale", StandardScaler()), ("log", FunctionTransformer(np.log1p))]), ["age", "income"]),
        ("cat", OneHotEncoder(handle_unknown="ignore"), ["city"]),
    ])
    model = Pipeline([("pre", pre), ("pca", PCA(3)), ("rf", RandomForestClassifier(20, random_state=0))]).fit(df, y)
    path = tmp_path / ("p.msafe" if single_file else "p_dir")
    ms.save(model, path, sample=df.iloc[:16])
    expected = model.predict_proba(df)
    np.save(tmp_path / "expected.npy", expected)
    df.to_csv(tmp_path / "df.csv", index=False)
    fresh(f"""
        import numpy as np, pandas as pd, modelsafe as ms
        bundle = ms.load({str(path)!r})
        df = pd.read_csv("df.csv")
        assert np.allclose(bundle.model.predict_proba(df), np.load("expected.npy"))
        assert bundle.predict(df[["city", "income", "age"]]).shape == (300,)
        assert bundle.verify().ok
    """)
