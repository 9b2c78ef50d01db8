"""Every supported kind of model converts to a portable member that predicts what the model does.

Each model is saved here with ``portable="onnx"``; a fresh process loads it with
``runtime="onnx"``, verifies it, predicts new rows and compares them with the native model's
predictions (stored beside the artifact), and shows that no framework was imported.
"""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest

import modelsafe as ms

MODELS = ["pipeline", "forest", "logistic", "histgb", "xgboost", "lightgbm", "mlp", "keras"]


def _fit(name: str, frame, numbers):
    df, ydf = frame
    X, y = numbers
    if name == "pipeline":
        from sklearn.compose import make_column_transformer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import OneHotEncoder, StandardScaler

        model = make_pipeline(make_column_transformer((OneHotEncoder(handle_unknown="ignore"), ["city"]),
                                                      (StandardScaler(), ["income", "age"])), LogisticRegression())
        return model.fit(df, ydf), df
    if name == "forest":
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(40, max_depth=6, random_state=0).fit(X, y), X
    if name == "logistic":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression().fit(X, y), X
    if name == "histgb":
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(max_iter=40, random_state=0).fit(X, y), X
    if name == "xgboost":
        import xgboost as xgb

        frame_numbers = df[["income", "age"]]
        return xgb.XGBClassifier(n_estimators=30, max_depth=3).fit(frame_numbers, ydf), frame_numbers
    if name == "lightgbm":
        import lightgbm as lgb

        return lgb.LGBMClassifier(n_estimators=30, verbose=-1).fit(X, y), X
    if name == "mlp":
        import torch

        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
        return model.eval(), X.astype(np.float32)
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,), name="features"), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(3, activation="softmax")])
    return model, X.astype(np.float32)


def _native(name: str, model, x) -> dict[str, np.ndarray]:
    if name == "mlp":
        import torch

        with torch.no_grad():
            return {"predict": model(torch.from_numpy(x)).numpy()}
    if name == "keras":
        return {"predict": model.predict(x, verbose=0)}
    return {"predict": model.predict(x), "predict_proba": model.predict_proba(x)}


@pytest.fixture(scope="module")
def saved(tmp_path_factory, frame, numbers):
    """Every model saved with portable='onnx', its new rows and native outputs beside it."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    folder = tmp_path_factory.mktemp("portable-models")
    manifests = {}
    for name in MODELS:
        model, x = _fit(name, frame, numbers)
        manifests[name] = ms.save(model, folder / f"{name}.msafe", sample=x[:60], portable="onnx")
        rows = x[200:260]
        if hasattr(rows, "to_csv"):
            rows.to_csv(folder / f"{name}-rows.csv", index=False)
        else:
            np.save(folder / f"{name}-rows.npy", rows)
        np.savez(folder / f"{name}-expected.npz", **_native(name, model, rows))
    return folder, manifests


@pytest.mark.parametrize("name", MODELS)
def test_portable_member_predicts_as_the_model_in_a_fresh_process(saved, fresh, frameworks, name):
    folder, manifests = saved
    portable = manifests[name].portable
    assert portable["format"] == "onnx" and portable["graph"] == "model.onnx"
    for output, spec in portable["outputs"].items():
        if spec["tolerance"] is None:
            assert np.dtype(spec["dtype"]).kind in "iub", (output, spec)
        else:  # scores: a float32-derived tolerance, and the largest difference seen at save within it
            assert spec["tolerance"]["rtol"] == pytest.approx(2.0**10 * np.finfo(np.float32).eps)
            assert 0 <= spec["max_difference"] <= spec["tolerance"]["atol"] + spec["tolerance"]["rtol"]
    proc = fresh(f"""
        import json, sys, warnings
        import numpy as np
        import modelsafe as ms

        warnings.simplefilter("error")
        bundle = ms.load("{name}.msafe", runtime="onnx")
        assert bundle.runtime == "onnx", bundle.runtime
        report = bundle.verify()
        assert report.ok, str(report)
        try:
            rows = np.load("{name}-rows.npy")
        except FileNotFoundError:
            import pandas as pd
            rows = pd.read_csv("{name}-rows.csv")
        expected = np.load("{name}-expected.npz")
        got = bundle.predict(rows)
        tolerance = bundle.manifest.portable["outputs"]["predict"]["tolerance"]
        if tolerance is None:
            assert np.array_equal(got, expected["predict"]), (got[:5], expected["predict"][:5])
            assert got.dtype == expected["predict"].dtype, (got.dtype, expected["predict"].dtype)
        else:
            assert np.allclose(got, expected["predict"], rtol=tolerance["rtol"], atol=tolerance["atol"])
        if "predict_proba" in expected:
            proba = bundle.predict_proba(rows)
            assert proba.dtype == expected["predict_proba"].dtype and proba.shape == expected["predict_proba"].shape
            assert np.allclose(proba, expected["predict_proba"], rtol=1.3e-4, atol=1.3e-4)
        else:
            assert not hasattr(bundle, "predict_proba")
        print(json.dumps(sorted(m for m in {frameworks!r} if m in sys.modules)))
    """, cwd=folder)
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_the_manifest_records_the_signature_from_the_schema(saved):
    """A DataFrame into a ColumnTransformer: one input per column, named and typed as the column."""
    _, manifests = saved
    inputs = manifests["pipeline"].portable["inputs"]
    assert [(i["name"], i["dtype"], i["shape"], i["columns"]) for i in inputs] == [
        ("income", "float32", [None, 1], [0]), ("age", "int64", [None, 1], [1]), ("city", "str", [None, 1], [2])]
    assert manifests["xgboost"].portable["inputs"] == [{"name": "X", "dtype": "float32", "shape": [None, 2],
                                                        "columns": [0, 1]}]
    assert manifests["mlp"].portable["inputs"] == [{"name": "x", "dtype": "float32", "shape": [None, 4]}]
    assert manifests["pipeline"].portable["converter"].startswith("skl2onnx ")
    assert manifests["xgboost"].portable["converter"].startswith("onnxmltools ")
    assert manifests["mlp"].portable["converter"].startswith("torch.onnx (dynamo) ")
    assert manifests["keras"].portable["converter"].startswith("keras ")
    assert manifests["pipeline"].portable["classes"] == [0, 1]


def test_the_guard_runs_before_the_graph(saved, frame):
    """Columns in another order are realigned by name; a missing one is refused naming it, as natively."""
    folder, _ = saved
    df, _ = frame
    with ms.load(folder / "pipeline.msafe", runtime="onnx") as bundle:
        shuffled = df[["city", "age", "income"]].iloc[:20]
        assert np.array_equal(bundle.predict(shuffled), ms.load(folder / "pipeline.msafe").predict(df.iloc[:20]))
        with pytest.raises(ms.SchemaError) as caught:
            bundle.predict(df.drop(columns="age"))
        assert caught.value.column == "age"


def test_an_artifact_with_a_portable_member_still_loads_natively(saved, numbers):
    folder, _ = saved
    X, _ = numbers
    with ms.load(folder / "forest.msafe") as native, ms.load(folder / "forest.msafe", runtime="auto") as auto:
        assert native.runtime == auto.runtime == "native"
        assert type(native.model).__name__ == "RandomForestClassifier"
        assert np.array_equal(native.predict(X), auto.predict(X))
    assert ms.scan(folder / "forest.msafe").ok
    assert any(i.kind == "onnx" for i in ms.scan(folder / "forest.msafe").items)


def test_torch_positional_and_keyword_inputs(tmp_path, fresh, numbers):
    import torch

    X, _ = numbers
    x, z = X[:, :3].astype(np.float32), X[:, 3:].astype(np.float32)
    torch.manual_seed(0)
    two = torch.nn.Bilinear(3, 1, 2).eval()  # forward(input1, input2)
    manifest = ms.save(two, tmp_path / "two.msafe", sample=(x[:40], z[:40]), portable="onnx")
    assert [(i["name"], i["position"]) for i in manifest.portable["inputs"]] == [("input_0", 0), ("input_1", 1)]
    with torch.no_grad():
        np.save(tmp_path / "two.npy", two(torch.from_numpy(x), torch.from_numpy(z)).numpy())
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "z.npy", z)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the exporter's own notices stay inside the conversion
        manifest = ms.save(torch.nn.Bilinear(3, 1, 2).eval(), tmp_path / "kw.msafe",
                           sample={"input1": x[:40], "input2": z[:40]}, portable="onnx")
    assert [i["key"] for i in manifest.portable["inputs"]] == ["input1", "input2"]
    fresh("""
        import numpy as np, modelsafe as ms
        x, z = np.load("x.npy"), np.load("z.npy")
        two = ms.load("two.msafe", runtime="onnx")
        assert two.verify().ok
        assert np.allclose(two.predict((x, z)), np.load("two.npy"), atol=1e-5)
        kw = ms.load("kw.msafe", runtime="onnx")
        assert kw.verify().ok and kw.predict({"input1": x, "input2": z}).shape == (len(x), 2)
    """)
