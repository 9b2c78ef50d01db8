"""modelsafe.mlflow.log_model against a real MLflow tracking server: log, register, load by models:/ in a
fresh process, predict; tamper with the server's store; an MLmodel edited to turn a check off."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import numpy as np
import pytest
import yaml

import modelsafe as ms
import modelsafe.mlflow

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _log(tracking: dict[str, object], artifact: Path, **kwargs: object) -> tuple[str, object]:
    import mlflow

    name = f"churn-{uuid.uuid4().hex[:8]}"
    with mlflow.start_run():
        info = modelsafe.mlflow.log_model(artifact, "model", registered_model_name=name, **kwargs)
    return name, info


def _store_folder(info: object) -> Path:
    """The logged model's folder in the server's artifact store (a local folder: --default-artifact-root)."""
    import mlflow

    location = mlflow.MlflowClient().get_logged_model(info.model_id).artifact_location
    return Path(location.removeprefix("file://"))


def test_a_registered_artifact_loads_by_models_uri_in_a_fresh_process_and_predicts(tracking, frame_model, fresh):
    name, info = _log(tracking, frame_model["path"], tags={"team": "risk"})
    assert str(info.registered_model_version) == "1"
    folder = _store_folder(info)
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    pyfunc = mlmodel["flavors"]["python_function"]
    assert pyfunc["loader_module"] == "modelsafe.mlflow" and pyfunc["data"] == "data/churn.msafe"
    assert not [p for p in folder.rglob("*") if p.suffix in (".pkl", ".cloudpickle")]  # no pickled PythonModel
    assert _sha256(folder / "data" / "churn.msafe") == _sha256(frame_model["path"])  # the artifact, byte for byte
    manifest = ms.inspect(frame_model["path"])
    requirements = (folder / "requirements.txt").read_text().split()
    assert set(manifest.environment["requirements"]) <= set(requirements)
    assert f"modelsafe=={ms.__version__}" in requirements
    assert yaml.safe_load((folder / "python_env.yaml").read_text())["python"] == \
        manifest.environment["python"]["version"] == pyfunc["python_version"]
    inputs = json.loads(mlmodel["signature"]["inputs"])
    assert [(c["name"], c["type"]) for c in inputs] == [("income", "double"), ("age", "long"), ("score", "double")]
    assert json.loads(mlmodel["signature"]["params"])[0]["name"] == "method"
    example = json.loads((folder / "input_example.json").read_text())
    assert example["columns"] == ["income", "age", "score"] and len(example["data"]) == 16

    rows = frame_model["frame"].iloc[40:60]
    rows.to_parquet(fresh.cwd / "rows.parquet")
    proc = fresh(f"""
        import json, mlflow, pandas as pd
        model = mlflow.pyfunc.load_model("models:/{name}/1")
        rows = pd.read_parquet("rows.parquet")
        print(json.dumps({{"type": type(model.unwrap_python_model() if hasattr(model, "python_model") else
                                         model._model_impl).__name__,
                          "predict": model.predict(rows).tolist(),
                          "proba": model.predict(rows, params={{"method": "predict_proba"}}).tolist()}}))
    """, env={"MLFLOW_TRACKING_URI": str(tracking["uri"])})
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["type"] == "ModelsafePyfunc"
    assert result["predict"] == frame_model["model"].predict(rows).tolist()
    np.testing.assert_allclose(result["proba"], frame_model["model"].predict_proba(rows))


def test_tampering_with_the_registered_artifact_in_the_store_raises_integrity_error(tracking, frame_model, fresh,
                                                                                   flip_byte):
    name, info = _log(tracking, frame_model["path"])
    stored = _store_folder(info) / "data" / "churn.msafe"
    member = ms.inspect(stored).components["model"].members[0]
    flip_byte(stored, member)
    proc = fresh(f"""
        import mlflow, modelsafe as ms
        try:
            mlflow.pyfunc.load_model("models:/{name}/1")
        except ms.IntegrityError as exc:
            print("IntegrityError", exc.member)
        else:
            print("loaded")
    """, env={"MLFLOW_TRACKING_URI": str(tracking["uri"])})
    assert proc.stdout.strip().splitlines()[-1] == f"IntegrityError {member}"


def test_an_mlmodel_edited_to_turn_a_check_off_is_refused_and_the_caller_chooses(tmp_path, frame_model):
    import mlflow.pyfunc

    folder = ms.export(frame_model["path"], tmp_path / "exported", to="mlflow")
    mlmodel = folder / "MLmodel"
    original = mlmodel.read_text()
    mlmodel.write_text(original.replace("verify: true", "verify: false"))
    with pytest.raises(ms.UntrustedContentError) as caught:
        mlflow.pyfunc.load_model(str(folder))
    assert caught.value.options == {"verify": False} and caught.value.path == str(mlmodel)
    mlmodel.write_text(original)
    loaded = mlflow.pyfunc.load_model(str(folder), model_config={"verify": False, "env": "ignore"})
    rows = frame_model["frame"].iloc[:5]
    assert loaded.predict(rows).tolist() == frame_model["model"].predict(rows).tolist()


def test_predictions_through_mlflow_go_through_the_input_guard(tmp_path, frame_model):
    import mlflow.pyfunc

    folder = ms.export(frame_model["path"], tmp_path / "exported", to="mlflow")
    model = mlflow.pyfunc.load_model(str(folder))
    raw = frame_model["frame"].iloc[:40].copy()
    raw["income"] = raw["income"] * 1000.0  # dollars instead of thousands: far outside what the model saw
    with pytest.warns(UserWarning, match="income"):
        model.predict(raw)
    reordered = frame_model["frame"].iloc[:8][["score", "age", "income"]]
    assert model.predict(reordered).tolist() == frame_model["model"].predict(frame_model["frame"].iloc[:8]).tolist()
    with pytest.raises(ms.MissingMethodError) as caught:
        model.predict(reordered, params={"method": "fit"})
    assert caught.value.method == "fit" and "predict_proba" in caught.value.available


def test_bundled_code_runs_through_mlflow_only_when_the_caller_trusts_it(tmp_path, fresh):
    fresh.script("train.py", """
        import numpy as np, pandas as pd, modelsafe as ms
        from sklearn.base import BaseEstimator, TransformerMixin
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        class Doubler(BaseEstimator, TransformerMixin):
            def fit(self, X, y=None):
                return self
            def transform(self, X):
                return X * 2.0

        X = pd.DataFrame({"a": np.linspace(0, 1, 60), "b": np.linspace(1, 0, 60)})
        model = make_pipeline(Doubler(), LogisticRegression()).fit(X, (X.a > 0.5).astype(int))
        ms.save(model, "custom.msafe", sample=X.iloc[:10])
        ms.export("custom.msafe", "custom-mlflow", to="mlflow", trust_code=True)
    """)
    proc = fresh("""
        import mlflow.pyfunc, modelsafe as ms, pandas as pd
        try:
            mlflow.pyfunc.load_model("custom-mlflow")
        except ms.UntrustedContentError as exc:
            print("refused", exc.modules)
        model = mlflow.pyfunc.load_model("custom-mlflow", model_config={"trust_code": True})
        print(model.predict(pd.DataFrame({"a": [0.0, 1.0], "b": [1.0, 0.0]})).tolist())
    """)
    lines = proc.stdout.strip().splitlines()
    assert lines[-2].startswith("refused") and "[0, 1]" == lines[-1]


def test_export_refuses_to_replace_what_it_did_not_write_and_unknown_keywords(tmp_path, frame_model, cli):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    with pytest.raises(ms.SaveError):
        ms.export(frame_model["path"], tmp_path / "notes", to="mlflow", overwrite=True)
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"
    with pytest.raises(ms.UnknownKeywordError):
        ms.export(frame_model["path"], tmp_path / "out", to="mlflow", trust_cod=True)
    assert not (tmp_path / "out").exists()
    proc = cli("--json", "export", str(frame_model["path"]), "--to", "mlflow", str(tmp_path / "cli-model"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["destination"] == str(tmp_path / "cli-model")
    assert (tmp_path / "cli-model" / "MLmodel").is_file()
    again = cli("export", str(frame_model["path"]), "--to", "mlflow", str(tmp_path / "cli-model"))
    assert again.returncode != 0 and "already exists" in again.stdout + again.stderr
