"""ms.convert of MLflow models saved by mlflow.<flavor>.save_model, doctor of MLflow folders, and a malicious
pickle inside an MLflow model folder (refused, and it never runs)."""

from __future__ import annotations

import json
import os
import pickle
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import modelsafe as ms

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning")
#: Requirements given, so MLflow does not infer them (it loads the model in a subprocess for that: seconds per save).
PINNED = {"pip_requirements": ["mlflow"]}


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"income": rng.uniform(20, 120, 200), "age": rng.integers(18, 80, 200),
                          "score": rng.normal(size=200)})
    return frame, (frame["income"] > 60).astype(int)


def _reloaded_predictions(fresh, artifact: Path, rows: pd.DataFrame, *, method: str = "predict") -> list:
    rows.to_parquet(fresh.cwd / "rows.parquet")
    proc = fresh(f"""
        import json, numpy as np, pandas as pd, modelsafe as ms
        bundle = ms.load({str(artifact)!r})
        print(json.dumps(np.asarray(bundle.{method}(pd.read_parquet("rows.parquet"))).tolist()))
    """)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_an_mlflow_sklearn_model_in_its_default_skops_format_converts_with_its_input_example(tmp_path, data, fresh):
    import mlflow.sklearn
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    frame, labels = data
    model = make_pipeline(StandardScaler(), RandomForestClassifier(15, random_state=0)).fit(frame, labels)
    mlflow.sklearn.save_model(model, tmp_path / "skl", input_example=frame.iloc[:12],
                              skops_trusted_types=["sklearn.tree._tree.Tree"], **PINNED)
    manifest = ms.convert(tmp_path / "skl", tmp_path / "skl.msafe")
    assert manifest.source["kind"] == "mlflow:sklearn" and manifest.source["mlflow"]["format"] == "skops"
    assert manifest.verification["rows"] == 12  # the input example is the verification sample
    assert [c["dtype"] for c in manifest.schema["columns"]] == ["float64", "int64", "float64"]  # typed by the signature
    rows = frame.iloc[50:80]
    assert _reloaded_predictions(fresh, tmp_path / "skl.msafe", rows) == model.predict(rows).tolist()


def test_an_mlflow_sklearn_cloudpickle_model_converts_through_the_restricted_unpickler(tmp_path, data, fresh):
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    frame, labels = data
    model = LogisticRegression(max_iter=500).fit(frame, labels)
    mlflow.sklearn.save_model(model, tmp_path / "cp", serialization_format="cloudpickle", **PINNED)
    manifest = ms.convert(tmp_path / "cp", tmp_path / "cp.msafe", sample=frame.iloc[:10])
    assert manifest.source["mlflow"]["format"] == "pickle" and manifest.source["mlflow"]["file"] == "model.pkl"
    rows = frame.iloc[:25]
    np.testing.assert_allclose(_reloaded_predictions(fresh, tmp_path / "cp.msafe", rows, method="predict_proba"),
                               model.predict_proba(rows))


def test_an_mlflow_xgboost_model_converts(tmp_path, data, fresh):
    import mlflow.xgboost
    import xgboost

    frame, labels = data
    model = xgboost.XGBClassifier(n_estimators=8, max_depth=3).fit(frame, labels)
    mlflow.xgboost.save_model(model, tmp_path / "xgb", input_example=frame.iloc[:8], **PINNED)
    manifest = ms.convert(tmp_path / "xgb", tmp_path / "xgb.msafe")
    assert manifest.flavor == "xgboost" and manifest.source["mlflow"]["format"] == "xgboost"
    rows = frame.iloc[100:140]
    np.testing.assert_allclose(_reloaded_predictions(fresh, tmp_path / "xgb.msafe", rows, method="predict_proba"),
                               model.predict_proba(rows), rtol=1e-6)


def test_an_mlflow_pytorch_model_converts_and_a_pt2_program_is_refused_with_the_reason(tmp_path, fresh):
    import mlflow.pytorch
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)).eval()
    example = np.random.default_rng(0).normal(size=(6, 4)).astype("float32")
    mlflow.pytorch.save_model(net, tmp_path / "pickled", serialization_format="pickle", input_example=example, **PINNED)
    manifest = ms.convert(tmp_path / "pickled", tmp_path / "net.msafe")
    assert manifest.flavor == "torch" and manifest.verification["rows"] == 6
    rows = np.random.default_rng(1).normal(size=(5, 4)).astype("float32")
    np.save(fresh.cwd / "rows.npy", rows)
    proc = fresh(f"""
        import json, numpy as np, torch, modelsafe as ms
        out = ms.load({str(tmp_path / "net.msafe")!r}).predict(torch.from_numpy(np.load("rows.npy")))
        print(json.dumps(out.tolist()))
    """)
    with torch.no_grad():
        expected = net(torch.from_numpy(rows)).numpy()
    np.testing.assert_allclose(json.loads(proc.stdout.strip().splitlines()[-1]), expected, rtol=1e-6)

    mlflow.pytorch.save_model(net, tmp_path / "exported", input_example=example, **PINNED)  # MLflow 3's default: pt2
    with pytest.raises(ms.UnsupportedModelError) as caught:
        ms.convert(tmp_path / "exported", tmp_path / "pt2.msafe")
    assert "pt2" in str(caught.value) and "serialization_format='pickle'" in str(caught.value)
    assert not (tmp_path / "pt2.msafe").exists()
    report = ms.doctor(tmp_path / "exported")
    assert not report.ok and report.kind == "mlflow:pytorch" and report.facts["model file"] == "data/model.pt2 (pt2)"


def test_an_mlflow_keras_model_converts_and_predicts_the_same_in_a_fresh_process(tmp_path, fresh):
    import keras
    import mlflow.keras

    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(2)])
    example = np.random.default_rng(0).normal(size=(6, 4)).astype("float32")
    # MLflow's Keras saver joins the path as a string, and writes the input example before it makes the folder.
    (tmp_path / "keras-model").mkdir()
    mlflow.keras.save_model(net, str(tmp_path / "keras-model"), input_example=example, **PINNED)
    report = ms.doctor(tmp_path / "keras-model")
    assert report.kind == "mlflow:keras", report
    manifest = ms.convert(tmp_path / "keras-model", tmp_path / "net.msafe")
    assert manifest.flavor == "keras" and manifest.verification["rows"] == 6
    rows = np.random.default_rng(1).normal(size=(5, 4)).astype("float32")
    np.save(fresh.cwd / "rows.npy", rows)
    proc = fresh(f"""
        import json, numpy as np, modelsafe as ms
        print(json.dumps(np.asarray(ms.load({str(tmp_path / "net.msafe")!r}).predict(np.load("rows.npy"))).tolist()))
    """)
    np.testing.assert_allclose(json.loads(proc.stdout.strip().splitlines()[-1]), net.predict(rows, verbose=0),
                               rtol=1e-5, atol=1e-6)


def test_an_mlflow_tensorflow_savedmodel_converts_and_predicts_the_same_in_a_fresh_process(tmp_path, fresh):
    """mlflow.tensorflow of a tf.Module: a SavedModel folder (flavor conf saved_model_dir, model_type tf2-module),
    not the data/model.keras of a Keras model. doctor names it and finds nothing that blocks; convert reads it as
    an inference endpoint, verified on MLflow's input example."""
    import mlflow.tensorflow
    import tensorflow as tf

    class Affine(tf.Module):
        def __init__(self):
            self.w = tf.Variable(np.arange(4, dtype="float32").reshape(4, 1))
            self.b = tf.Variable([0.5])

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def __call__(self, x):
            return tf.matmul(x, self.w) + self.b

    example = np.random.default_rng(0).normal(size=(6, 4)).astype("float32")
    folder = tmp_path / "tf-model"
    mlflow.tensorflow.save_model(Affine(), str(folder), input_example=example, **PINNED)
    report = ms.doctor(folder)
    assert report.kind == "mlflow:tensorflow" and report.ok, report
    assert report.facts["model file"].startswith("tf2model") and "tf.saved_model" in report.facts["model file read by"]
    manifest = ms.convert(folder, tmp_path / "affine.msafe")
    assert manifest.flavor == "keras" and manifest.verification["rows"] == 6
    rows = np.random.default_rng(1).normal(size=(5, 4)).astype("float32")
    np.save(fresh.cwd / "rows.npy", rows)
    proc = fresh(f"""
        import json, numpy as np, modelsafe as ms
        print(json.dumps(np.asarray(ms.load({str(tmp_path / "affine.msafe")!r}).predict(np.load("rows.npy"))).tolist()))
    """)
    np.testing.assert_allclose(np.asarray(json.loads(proc.stdout.strip().splitlines()[-1])).reshape(-1),
                               rows @ np.arange(4) + 0.5, rtol=1e-5, atol=1e-6)


def test_lightgbm_booster_text_converts_and_a_skops_wrapper_needs_the_callers_trust(tmp_path, data):
    import lightgbm
    import mlflow.lightgbm

    frame, labels = data
    booster = lightgbm.train({"objective": "binary", "verbose": -1}, lightgbm.Dataset(frame, labels), 5)
    mlflow.lightgbm.save_model(booster, tmp_path / "booster", **PINNED)
    manifest = ms.convert(tmp_path / "booster", tmp_path / "booster.msafe", sample=frame.iloc[:10])
    assert manifest.source["mlflow"]["format"] == "lightgbm-text"
    np.testing.assert_allclose(ms.load(tmp_path / "booster.msafe").predict(frame.iloc[:20]),
                               booster.predict(frame.iloc[:20]))

    wrapper = lightgbm.LGBMClassifier(n_estimators=5, verbose=-1).fit(frame, labels)
    mlflow.lightgbm.save_model(wrapper, tmp_path / "wrapper", input_example=frame.iloc[:8], **PINNED)
    with pytest.raises(ms.UntrustedContentError) as caught:
        ms.convert(tmp_path / "wrapper", tmp_path / "wrapper.msafe")
    assert "lightgbm.sklearn.LGBMClassifier" in caught.value.globals and not (tmp_path / "wrapper.msafe").exists()
    ms.convert(tmp_path / "wrapper", tmp_path / "wrapper.msafe", trusted=caught.value.globals)
    reloaded = ms.load(tmp_path / "wrapper.msafe")
    assert reloaded.predict(frame.iloc[:20]).tolist() == wrapper.predict(frame.iloc[:20]).tolist()


class _CreatesAFile:
    """A pickle payload that creates ``marker`` when unpickled (through exec, as an attacker would)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def test_a_malicious_pickle_inside_an_mlflow_folder_is_refused_and_never_runs(tmp_path, data, fresh):
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    frame, labels = data
    folder = tmp_path / "evil"
    mlflow.sklearn.save_model(LogisticRegression().fit(frame, labels), folder, serialization_format="cloudpickle",
                              **PINNED)
    marker = tmp_path / "pwned.txt"
    (folder / "model.pkl").write_bytes(pickle.dumps(_CreatesAFile(marker)))
    proof = tmp_path / "proof.txt"  # the same payload, aimed elsewhere, does run when unpickled plainly
    (tmp_path / "proof.pkl").write_bytes(pickle.dumps(_CreatesAFile(proof)))
    fresh(f"import pickle; pickle.loads(open({str(tmp_path / 'proof.pkl')!r}, 'rb').read())")
    assert proof.read_text() == "pwned"

    with pytest.raises(ms.UntrustedContentError) as caught:
        ms.convert(folder, tmp_path / "evil.msafe")
    assert any("exec" in name for name in caught.value.globals)
    report = ms.doctor(folder)
    assert not report.ok and any("exec" in p.what for p in report.errors())
    proc = fresh(f"""
        import modelsafe as ms
        try:
            ms.convert({str(folder)!r}, "evil.msafe", sample=None)
        except ms.UntrustedContentError as exc:
            print("refused", exc.globals)
    """)
    assert proc.stdout.startswith("refused")
    assert not marker.exists() and not (tmp_path / "evil.msafe").exists()


def test_a_registered_model_converts_by_its_models_uri_and_a_uri_without_a_tracking_server_is_refused(
        tracking, tmp_path, data, fresh):
    import mlflow
    import mlflow.sklearn
    from sklearn.tree import DecisionTreeClassifier

    frame, labels = data
    model = DecisionTreeClassifier(max_depth=4, random_state=0).fit(frame, labels)
    name = f"tree-{uuid.uuid4().hex[:8]}"
    with mlflow.start_run() as run:
        mlflow.sklearn.log_model(model, name="tree", registered_model_name=name, input_example=frame.iloc[:10],
                                 skops_trusted_types=["sklearn.tree._tree.Tree"], **PINNED)
    manifest = ms.convert(f"models:/{name}/1", tmp_path / "tree.msafe")
    assert manifest.source["path"] == f"models:/{name}/1" and manifest.verification["rows"] == 10
    assert ms.load(tmp_path / "tree.msafe").predict(frame).tolist() == model.predict(frame).tolist()
    by_run = ms.convert(f"runs:/{run.info.run_id}/tree", tmp_path / "by-run.msafe")
    assert by_run.source["path"] == f"runs:/{run.info.run_id}/tree"
    assert ms.load(tmp_path / "by-run.msafe").predict(frame).tolist() == model.predict(frame).tolist()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING")}
    proc = fresh(f"""
        import os, modelsafe as ms
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        try:
            ms.convert("models:/{name}/1", "tree.msafe")
        except ms.FormatError as exc:
            print("refused", exc.path)
    """, env=env)
    assert proc.stdout.strip().splitlines()[-1] == f"refused models:/{name}/1"


def test_doctor_explains_mlflow_folders(tmp_path, frame_model, data):
    import mlflow.pyfunc
    import mlflow.xgboost
    import xgboost

    frame, labels = data
    mlflow.xgboost.save_model(xgboost.XGBRegressor(n_estimators=3).fit(frame, labels), tmp_path / "xgb", **PINNED)
    report = ms.doctor(tmp_path / "xgb")
    assert report.ok and report.kind == "mlflow:xgboost"
    assert report.facts["native flavor"] == "xgboost" and report.facts["model file"] == "model.ubj (xgboost)"

    class Custom(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input

    mlflow.pyfunc.save_model(tmp_path / "custom", python_model=Custom(), input_example=frame.iloc[:2], **PINNED)
    report = ms.doctor(tmp_path / "custom")
    assert not report.ok and "PythonModel" in report.errors()[0].what
    with pytest.raises(ms.UnsupportedModelError):
        ms.convert(tmp_path / "custom", tmp_path / "custom.msafe")

    exported = ms.export(frame_model["path"], tmp_path / "ours", to="mlflow")
    report = ms.doctor(exported)
    assert report.ok and "already there" in report.problems[0].why
