"""ms.convert: legacy pickle and joblib files -> verified artifacts, loaded in a fresh process."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

import modelsafe as ms
from modelsafe import _convert
from modelsafe.errors import (
    FlavorError,
    FormatError,
    SaveError,
    UnsupportedModelError,
    UntrustedContentError,
    VerificationError,
)

CORPUS = Path(__file__).resolve().parent / "security" / "corpus"


@pytest.fixture
def pipeline():
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(0)
    X = np.column_stack([rng.normal(size=120), rng.normal(size=120), rng.integers(0, 3, 120)])
    y = (X[:, 0] + X[:, 2] > 1).astype(int)
    model = Pipeline([("cols", ColumnTransformer([("num", StandardScaler(), [0, 1]),
                                                  ("cat", OneHotEncoder(), [2])])),
                      ("clf", GradientBoostingClassifier(n_estimators=10, random_state=0))]).fit(X, y)
    return model, X


def _fresh_predict(fresh, artifact: Path, X: np.ndarray, tmp_path: Path, **load) -> np.ndarray:
    np.save(tmp_path / "X.npy", X)
    fresh(f"""
        import numpy as np, modelsafe as ms
        bundle = ms.load({str(artifact)!r}, **{load!r})
        np.save("pred.npy", np.asarray(bundle.predict(np.load("X.npy"))))
        print(bundle.manifest.source["kind"])
    """)
    return np.load(tmp_path / "pred.npy")


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_pickle_to_artifact_loads_the_same_in_a_fresh_process(fresh, tmp_path, pipeline, protocol):
    model, X = pipeline
    src = tmp_path / "legacy.pkl"
    src.write_bytes(pickle.dumps(model, protocol=protocol))
    manifest = ms.convert(src, tmp_path / "model.msafe", sample=X[:20])
    assert manifest.source["kind"] == "pickle" and manifest.source["path"] == str(src.resolve())
    assert manifest.source["size"] == src.stat().st_size and len(manifest.source["sha256"]) == 64
    assert manifest.verification is not None
    pred = _fresh_predict(fresh, tmp_path / "model.msafe", X, tmp_path)
    assert np.array_equal(pred, model.predict(X))


@pytest.mark.parametrize("compress", [0, 3, ("gzip", 3), ("bz2", 3), ("xz", 3), ("lzma", 3)])
def test_joblib_files_convert_without_joblib_load(fresh, tmp_path, pipeline, compress):
    import joblib

    model, X = pipeline
    src = tmp_path / "model.joblib"
    joblib.dump(model, src, compress=compress)
    ms.convert(src, tmp_path / "model.msafe", sample=X[:10])
    pred = _fresh_predict(fresh, tmp_path / "model.msafe", X, tmp_path)
    assert np.array_equal(pred, model.predict(X))


def test_joblib_arrays_of_every_layout_are_rebuilt(tmp_path):
    import joblib

    from modelsafe.security import restricted_load_joblib

    obj = {"c": np.arange(12.0).reshape(3, 4), "f": np.asfortranarray(np.arange(6).reshape(2, 3)),
           "big_endian": np.arange(5, dtype=">i4"), "text": np.array(["ab", "c"]), "empty": np.zeros((0, 3)),
           "dates": np.array(["2020-01-01"], dtype="M8[D]"), "rec": np.zeros(2, dtype=[("x", "f4"), ("y", "i8")]),
           "objects": np.array([1, "x", None], dtype=object), "scalar": np.float32(2.5)}
    for compress in (0, 3):
        joblib.dump(obj, tmp_path / "a.joblib", compress=compress)
        got = restricted_load_joblib(tmp_path / "a.joblib")
        for key, value in obj.items():
            assert np.array_equal(got[key], value) if value.dtype != object else list(got[key]) == list(value)
            assert got[key].dtype == value.dtype.newbyteorder("=")
        assert got["f"].flags.f_contiguous and got["big_endian"].dtype.isnative


def test_inspect_shows_where_it_came_from(cli, tmp_path, pipeline):
    model, X = pipeline
    src = tmp_path / "legacy.pkl"
    src.write_bytes(pickle.dumps(model))
    proc = cli("convert", str(src), str(tmp_path / "out.msafe"))
    assert proc.returncode == 0 and "converted" in proc.stdout, proc.stdout + proc.stderr
    shown = cli("inspect", str(tmp_path / "out.msafe")).stdout
    assert "converted from" in shown and str(src.resolve()) in shown
    assert json.loads(cli("--json", "inspect", str(tmp_path / "out.msafe")).stdout)["source"]["kind"] == "pickle"
    assert cli("convert", str(src), str(tmp_path / "out.msafe")).returncode != 0  # exists, no --overwrite
    assert cli("convert", "--overwrite", str(src), str(tmp_path / "out.msafe")).returncode == 0


def test_custom_classes_need_explicit_trust(fresh, tmp_path):
    (tmp_path / "mymodels.py").write_text(
        "import numpy as np\n"
        "class Threshold:\n"
        "    def __init__(self, t):\n        self.t = t\n"
        "    def predict(self, X):\n        return (np.asarray(X)[:, 0] > self.t).astype(int)\n")
    fresh("""
        import pickle, mymodels
        with open("custom.pkl", "wb") as f:
            pickle.dump(mymodels.Threshold(0.5), f)
    """)
    with pytest.raises(UntrustedContentError) as err:
        ms.convert(tmp_path / "custom.pkl", tmp_path / "custom.msafe")
    assert err.value.globals == ["mymodels.Threshold"] and "trusted=" in str(err.value)
    assert not (tmp_path / "custom.msafe").exists()
    X = np.linspace(0, 1, 10)[:, None]
    fresh("""
        import numpy as np, modelsafe as ms
        X = np.linspace(0, 1, 10)[:, None]
        ms.convert("custom.pkl", "custom.msafe", trusted=["mymodels.Threshold"], sample=X)
        print(ms.load("custom.msafe", trusted=["mymodels.Threshold"]).predict(X).tolist())
    """)
    assert (tmp_path / "custom.msafe").is_file() and X.shape == (10, 1)


def test_a_sample_that_does_not_replay_fails_and_leaves_nothing(fresh, tmp_path):
    (tmp_path / "noisy.py").write_text(
        "import numpy as np\n"
        "class Noisy:\n"
        "    def predict(self, X):\n        return np.random.default_rng().normal(size=len(X))\n")
    proc = fresh("""
        import pickle, numpy as np, noisy, modelsafe as ms
        with open("noisy.pkl", "wb") as f:
            pickle.dump(noisy.Noisy(), f)
        try:
            ms.convert("noisy.pkl", "noisy.msafe", trusted=["noisy.Noisy"], sample=np.ones((5, 2)))
        except ms.VerificationError as exc:
            print("VerificationError", type(exc).__mro__[1].__name__)
    """)
    assert proc.stdout.startswith("VerificationError") and not (tmp_path / "noisy.msafe").exists()
    assert issubclass(VerificationError, ms.ModelsafeError)


def test_files_that_are_not_legacy_models_are_refused(tmp_path, pipeline):
    model, X = pipeline
    art = tmp_path / "already.msafe"
    ms.save(model, art)
    (tmp_path / "notes.txt").write_text("hello")
    np.save(tmp_path / "a.npy", np.ones(3))
    for src, needle in ((art, "already a modelsafe artifact"), (tmp_path / "notes.txt", "a text file"),
                        (tmp_path / "a.npy", "npy")):
        with pytest.raises(FormatError, match=needle):
            ms.convert(src, tmp_path / "out.msafe")
        assert not (tmp_path / "out.msafe").exists()
    with pytest.raises(FormatError, match="does not exist"):
        ms.convert(tmp_path / "missing.pkl", tmp_path / "out.msafe")
    (tmp_path / "x.pkl").write_bytes(pickle.dumps(model))
    (tmp_path / "taken.msafe").write_bytes(b"keep me")
    with pytest.raises(SaveError):
        ms.convert(tmp_path / "x.pkl", tmp_path / "taken.msafe")
    assert (tmp_path / "taken.msafe").read_bytes() == b"keep me"


def test_truncated_and_corrupt_files_are_refused(tmp_path, pipeline):
    import joblib

    model, _ = pipeline
    data = pickle.dumps(model, protocol=5)
    (tmp_path / "cut.pkl").write_bytes(data[: len(data) // 2])
    joblib.dump(model, tmp_path / "m.joblib", compress=3)
    raw = (tmp_path / "m.joblib").read_bytes()
    (tmp_path / "cut.joblib").write_bytes(raw[: len(raw) - 40])
    for name in ("cut.pkl", "cut.joblib"):
        with pytest.raises(FormatError, match="read to its end|broke off"):
            ms.convert(tmp_path / name, tmp_path / "out.msafe")
        assert not (tmp_path / "out.msafe").exists()


def test_missing_framework_reader_is_a_flavor_error(monkeypatch, tmp_path):
    import torch

    torch.save({"w": torch.ones(2)}, tmp_path / "w.pt")
    monkeypatch.setitem(_convert.READERS, "torch", "modelsafe.flavors.not_written_yet:read_checkpoint")
    with pytest.raises(UnsupportedModelError) as err:
        ms.convert(tmp_path / "w.pt", tmp_path / "w.msafe")
    assert isinstance(err.value, FlavorError) and "not_written_yet" in str(err.value)
    assert not (tmp_path / "w.msafe").exists()


def test_cli_convert_refuses_attacks_with_exit_1(cli, tmp_path):
    proc = cli("convert", str(CORPUS / "payload.joblib"), str(tmp_path / "out.msafe"), cwd=tmp_path)
    assert proc.returncode == 1 and "builtins.exec" in proc.stdout and not (tmp_path / "out.msafe").exists()
    assert not list(tmp_path.glob("MODELSAFE_CANARY_*"))
    assert cli("convert", str(tmp_path / "nope.pkl"), str(tmp_path / "o.msafe")).returncode == 2


def test_whole_pickled_torch_model_converts_and_save_options_pass_through(tmp_path, fresh):
    # convert trusts what the scan accepts, and nothing more: torch.nn's layer classes are on the
    # allowlist (as scan and doctor say), so a whole pickled model of them needs no trusted=;
    # init_args= reaches ms.save.
    import torch

    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
    torch.save(net, tmp_path / "whole.pt")
    X = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    manifest = ms.convert(tmp_path / "whole.pt", tmp_path / "whole.msafe", sample=X)
    assert manifest.flavor == "torch" and manifest.source["kind"].startswith("zip")
    with pytest.raises(SaveError, match="init_args do not match the constructor"):
        ms.convert(tmp_path / "whole.pt", tmp_path / "other.msafe", init_args={"nope": 1})
    assert not (tmp_path / "other.msafe").exists()
    np.save(tmp_path / "X.npy", X)
    fresh("""
        import numpy as np, torch, modelsafe as ms
        bundle = ms.load("whole.msafe")
        assert bundle.verify().ok and not bundle.model.training
    """)
