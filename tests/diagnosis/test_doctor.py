"""ms.doctor: why a file won't load here (without loading it), and why an object won't save."""

from __future__ import annotations

import io
import json
import pickle
import pickletools
import subprocess
import textwrap
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

import modelsafe as ms
from modelsafe.errors import FormatError, ModelsafeError

CORPUS = Path(__file__).resolve().parents[1] / "security" / "corpus"
OLD_PYTHON = Path(__file__).resolve().parents[2] / ".venv-old" / "bin" / "python"


def _fitted():
    from sklearn.linear_model import LogisticRegression

    X = np.random.default_rng(0).normal(size=(40, 3))
    return LogisticRegression().fit(X, (X[:, 0] > 0).astype(int)), X


def _problem(report, subject_part: str, severity: str = "error"):
    found = [p for p in report.problems if subject_part in p.subject and p.severity == severity]
    assert found, str(report)
    p = found[0]
    assert p.what and p.why and p.fix
    return p


def test_clean_pickle_is_ok_and_records_the_sklearn_version(tmp_path):
    import sklearn

    model, _ = _fitted()
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(model))
    report = ms.doctor(path)
    assert report.ok and report.problems == () and report.kind == "pickle"
    assert report.facts["scikit-learn (saved)"] == sklearn.__version__
    assert "ok: nothing found" in str(report)
    json.dumps(report.to_dict())


def test_class_from_main_is_named_exactly(fresh, tmp_path):
    fresh("""
        import pickle
        class MyTransformer:
            def transform(self, x):
                return x
        with open("main.pkl", "wb") as f:
            pickle.dump(MyTransformer(), f)
    """)
    report = ms.doctor(tmp_path / "main.pkl")
    p = _problem(report, "__main__.MyTransformer")
    assert "MyTransformer" in p.what and "Can't get attribute 'MyTransformer'" in p.why
    assert not report.ok
    with pytest.raises(ModelsafeError):
        report.raise_if_failed()


def test_module_not_importable_here_is_named(fresh, tmp_path):
    (tmp_path / "team_features.py").write_text("class Scaler:\n    factor = 2\n")
    fresh("""
        import pickle, team_features
        with open("local.pkl", "wb") as f:
            pickle.dump(team_features.Scaler(), f)
    """)
    report = ms.doctor(tmp_path / "local.pkl")  # this process cannot import team_features
    p = _problem(report, "team_features.Scaler")
    assert "'team_features'" in p.what and "ModuleNotFoundError" in p.why


def test_a_class_missing_from_the_installed_library(tmp_path):
    module = b"sklearn.linear_model._logistic"
    stream = (b"\x80\x04\x8c" + bytes([len(module)]) + module + b"\x8c\x13LogisticRegression2\x93)\x81.")
    path = tmp_path / "renamed.pkl"
    path.write_bytes(stream)
    p = _problem(ms.doctor(path), "LogisticRegression2")
    assert "does not define LogisticRegression2" in p.what and "AttributeError" in p.why


def _with_sklearn_version(version: bytes) -> bytes:
    import sklearn

    model, _ = _fitted()
    current = sklearn.__version__.encode()
    data = pickle.dumps(model, protocol=4)
    old = b"\x8c" + bytes([len(current)]) + current
    assert old in data
    return _reframed(data.replace(old, b"\x8c" + bytes([len(version)]) + version))


def _reframed(data: bytes) -> bytes:
    """A hand-edited protocol 4 stream with its FRAME lengths written again (an edit that changes a
    string's length leaves the frame claiming the old length: CPython refuses that, and so does modelsafe)."""
    return pickletools.optimize(data)


@pytest.mark.parametrize("saved,severity", [(b"0.24.2", "error"), (b"99.1.0", "error")])
def test_sklearn_version_recorded_in_the_file_is_compared(tmp_path, saved, severity):
    path = tmp_path / "old.pkl"
    path.write_bytes(_with_sklearn_version(saved))
    report = ms.doctor(path)
    p = _problem(report, "scikit-learn", severity)
    assert saved.decode() in p.what and f"scikit-learn=={saved.decode()}" in p.fix
    assert report.facts["scikit-learn (saved)"] == saved.decode()


def test_sklearn_version_in_a_compressed_joblib_file(tmp_path):
    import joblib

    model, _ = _fitted()
    path = tmp_path / "model.joblib"
    joblib.dump(model, path, compress=("gzip", 3))
    report = ms.doctor(path)
    assert report.ok and "scikit-learn (saved)" in report.facts


def test_numpy_1_pickle_on_numpy_2_is_a_warning(tmp_path):
    data = pickle.dumps(np.arange(3.0), protocol=4)
    assert b"numpy._core" in data
    path = tmp_path / "np1.pkl"
    path.write_bytes(_reframed(data.replace(b"\x8c\x16numpy._core.multiarray", b"\x8c\x15numpy.core.multiarray")))
    report = ms.doctor(path)
    p = _problem(report, "numpy.core", "warning")
    assert "numpy 1" in p.what and report.ok


def _old_python() -> Path:
    """The real numpy 1 / scikit-learn 1.4 environment of the compatibility suite (``make old-venv``)."""
    if not OLD_PYTHON.is_file():
        pytest.fail(f"{OLD_PYTHON} is missing: build it with `make old-venv` (`make test` does it first).")
    return OLD_PYTHON


def _in_old(code: str, cwd: Path) -> str:
    proc = subprocess.run([str(_old_python()), "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_numpy_2_pickles_in_a_real_numpy_1_environment(tmp_path):
    (tmp_path / "p5.pkl").write_bytes(pickle.dumps(np.arange(3.0), protocol=5))  # names numpy._core.numeric
    (tmp_path / "p4.pkl").write_bytes(pickle.dumps(np.arange(3.0), protocol=4))  # names numpy._core.multiarray
    out = json.loads(_in_old("""
        import json, pickle, numpy, modelsafe as ms
        result = {"numpy": numpy.__version__}
        for name in ("p5.pkl", "p4.pkl"):
            result[name] = ms.doctor(name).to_dict()
            try:
                pickle.load(open(name, "rb"))
                result[name]["loads"] = "yes"
            except ModuleNotFoundError as exc:
                result[name]["loads"] = str(exc)
        print(json.dumps(result))
    """, tmp_path))
    assert out["numpy"].startswith("1.")
    p5, p4 = out["p5.pkl"], out["p4.pkl"]
    assert p5["ok"] is False and p5["loads"] == "No module named 'numpy._core.numeric'"  # numpy 1 confirms it
    problem = next(p for p in p5["problems"] if p["subject"] == "numpy._core.numeric._frombuffer")
    assert problem["severity"] == "error" and "numpy>=2" in problem["fix"] and out["numpy"] in problem["what"]
    assert p4["ok"] is True and p4["problems"] == [] and p4["loads"] == "yes"  # numpy 1.26's shim covers it


def test_a_file_from_an_older_scikit_learn(tmp_path):
    _in_old("""
        import joblib, numpy as np
        from sklearn.tree import DecisionTreeClassifier
        X = np.random.default_rng(0).normal(size=(50, 3))
        joblib.dump(DecisionTreeClassifier(max_depth=3).fit(X, X[:, 0] > 0), "old.joblib")
    """, tmp_path)
    report = ms.doctor(tmp_path / "old.joblib")
    p = _problem(report, "scikit-learn", "warning")
    assert report.facts["scikit-learn (saved)"].startswith("1.4") and "newer" in p.what


def test_newer_pickle_protocol_than_this_python(tmp_path):
    path = tmp_path / "future.pkl"
    path.write_bytes(b"\x80\x06N.")
    p = _problem(ms.doctor(path), "protocol 6")
    assert "unsupported pickle protocol" in p.why


def _torch_zip_with_location(tmp_path, location: bytes) -> Path:
    import torch

    src = tmp_path / "cpu.pt"
    torch.save({"w": torch.ones(3)}, src)
    out = tmp_path / "gpu.pt"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith("data.pkl"):
                data = data.replace(b"X\x03\x00\x00\x00cpu", b"X" + len(location).to_bytes(4, "little") + location)
            zout.writestr(info, data)
    return out


def test_cuda_device_tags_on_a_cpu_only_machine(tmp_path):
    import torch

    assert not torch.cuda.is_available()
    path = _torch_zip_with_location(tmp_path, b"cuda:0")
    report = ms.doctor(path)
    p = _problem(report, "cuda:0")
    assert "no CUDA device" in p.what and "map_location='cpu'" in p.fix
    with pytest.raises(RuntimeError, match="CUDA"):  # torch itself confirms the diagnosis (a benign file)
        torch.load(path, weights_only=True)


def test_weights_only_blockers_are_listed(tmp_path):
    import argparse

    import torch

    path = tmp_path / "ckpt.pt"
    torch.save({"w": torch.ones(2), "args": argparse.Namespace(lr=0.1)}, path)
    report = ms.doctor(path)
    p = _problem(report, "argparse.Namespace")
    assert "weights_only=True" in p.what and "add_safe_globals" in p.fix
    with pytest.raises(Exception, match="Namespace"):  # torch confirms: weights_only refuses it
        torch.load(path, weights_only=True)
    clean = tmp_path / "clean.pt"
    torch.save({"w": torch.ones(2)}, clean)
    assert ms.doctor(clean).ok


def test_legacy_torch_tar_format(tmp_path):
    report = ms.doctor(CORPUS / "torch_tar_payload.pt")
    assert _problem(report, "legacy tar format") and _problem(report, "os.system")


def _keras_archive(version: str) -> bytes:
    config = {"class_name": "Sequential", "module": "keras", "config": {"layers": []}}
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("metadata.json", json.dumps({"keras_version": version}))
        zf.writestr("config.json", json.dumps(config))
    return out.getvalue()


def test_keras_2_files_on_keras_3(tmp_path):
    (tmp_path / "old.keras").write_bytes(_keras_archive("2.15.0"))
    p = _problem(ms.doctor(tmp_path / "old.keras"), "keras", "warning")
    assert "2.15.0" in p.what
    h5 = ms.doctor(CORPUS / "lambda_layer.h5")
    assert _problem(h5, "keras", "warning") and _problem(h5, "Lambda layer shell")
    (tmp_path / "new.keras").write_bytes(_keras_archive(_keras_version()))
    assert ms.doctor(tmp_path / "new.keras").ok


def _keras_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("keras")


def test_savedmodel_directory_given_to_load_model(tmp_path):
    import tensorflow as tf

    class Doubler(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def __call__(self, x):
            return 2 * x

    tf.saved_model.save(Doubler(), str(tmp_path / "sm"))
    report = ms.doctor(tmp_path / "sm")
    p = _problem(report, "SavedModel")
    assert "TFSMLayer" in p.fix and report.kind == "savedmodel-directory"


def test_modelsafe_artifact_environment_and_integrity(tmp_path):
    model, X = _fitted()
    path = tmp_path / "art"
    ms.save(model, path, sample=X[:4])
    assert ms.doctor(path).ok
    manifest = json.loads((path / "modelsafe.json").read_text())
    manifest["environment"]["packages"]["scikit-learn"]["version"] = "0.20.0"
    (path / "modelsafe.json").write_text(json.dumps(manifest))
    p = _problem(ms.doctor(path), "scikit-learn")
    assert "0.20.0" in p.what and "scikit-learn==0.20.0" in p.fix
    member = next(path.rglob("*.npy"))
    member.write_bytes(member.read_bytes()[:-1] + b"\x00")
    assert any(p.subject.endswith(".npy") for p in ms.doctor(path).errors())


def test_flavor_hook_adds_the_frameworks_diagnosis(tmp_path):
    import xgboost as xgb

    X = np.random.default_rng(0).normal(size=(50, 3))
    model = xgb.XGBClassifier(n_estimators=2).fit(X, (X[:, 0] > 0).astype(int))
    path = tmp_path / "xgb.pkl"
    path.write_bytes(pickle.dumps(model))
    report = ms.doctor(path)
    hooked = [p for p in report.problems if p.subject == "xgboost"]
    assert hooked and "save_model" in hooked[0].fix


def test_objects_why_they_will_not_save():
    model, _ = _fitted()
    assert ms.doctor(model).ok and ms.doctor(model).kind == "object"
    report = ms.doctor({"model": model, "lock": threading.Lock(), "post": lambda x: x})
    subjects = {p.subject for p in report.problems}
    assert subjects == {"['lock']", "['post']"} and not report.ok
    assert all(p.severity == "error" and p.why for p in report.problems)


def test_cli_doctor_exit_codes(cli, tmp_path):
    model, _ = _fitted()
    (tmp_path / "ok.pkl").write_bytes(pickle.dumps(model))
    assert cli("doctor", str(tmp_path / "ok.pkl")).returncode == 0
    proc = cli("doctor", str(CORPUS / "reduce_exec_p5.pkl"))
    assert proc.returncode == 1 and "builtins.exec" in proc.stdout
    data = json.loads(cli("--json", "doctor", str(CORPUS / "reduce_exec_p5.pkl")).stdout)
    assert data["ok"] is False and data["problems"][0]["fix"]
    proc = cli("doctor", str(tmp_path / "missing.pkl"))
    assert proc.returncode == 2 and "Traceback" not in proc.stdout + proc.stderr
    with pytest.raises(FormatError):
        ms.doctor(tmp_path / "missing.pkl")
