"""The verbs end to end, and every kind of bad input the foundation must explain."""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

import modelsafe as ms
from modelsafe.errors import FormatError, IntegrityError, SaveError, VerificationError


@pytest.fixture
def model(classification_data):
    from sklearn.linear_model import LogisticRegression

    X, y = classification_data
    return LogisticRegression().fit(X, y), X


@pytest.fixture(params=["file", "folder"])
def saved(request, tmp_path, model):
    est, X = model
    path = tmp_path / ("m.msafe" if request.param == "file" else "m")
    ms.save(est, path, sample=X[:10], metadata={"owner": "tests"})
    return path, est, X


def test_round_trip_fresh_process(saved, fresh):
    path, est, X = saved
    np.save(path.parent / "X.npy", X)
    np.save(path.parent / "expected.npy", est.predict_proba(X))
    fresh(f"""
        import numpy as np, modelsafe as ms
        bundle = ms.load({str(path)!r})
        X = np.load("X.npy")
        assert np.allclose(bundle.model.predict_proba(X), np.load("expected.npy"), rtol=0, atol=0)
        assert (bundle.predict(X) == bundle.model.predict(X)).all()
        assert bundle.manifest.metadata == {{"owner": "tests"}}
        report = bundle.verify()
        assert report.ok and set(c.output for c in report.checks) == {{"predict", "predict_proba"}}, report
    """)


def test_manifest_records_what_spec_lists(saved):
    path, _, _ = saved
    manifest = ms.inspect(path)
    assert manifest.flavor == "sklearn"
    assert manifest.components["model"].type_name == "sklearn.linear_model._logistic.LogisticRegression"
    assert all(len(m.sha256) == 64 for m in manifest.members.values())
    env = manifest.environment
    assert "scikit-learn" in env["packages"] and env["python"]["version"]
    assert "torch" not in env["packages"]
    assert manifest.schema["kind"] == "ndarray" and manifest.verification["rows"] == 10
    assert "sklearn.linear_model._logistic.LogisticRegression" in manifest.components["model"].data["globals"]


def test_inspect_and_import_load_no_framework(saved, fresh):
    path, _, _ = saved
    proc = fresh(f"""
        import sys, modelsafe as ms
        heavy = ("torch", "tensorflow", "keras", "sklearn", "xgboost", "lightgbm", "pandas", "numpy")
        assert not [m for m in heavy if m in sys.modules], [m for m in heavy if m in sys.modules]
        ms.inspect({str(path)!r})
        ms.check_env({str(path)!r})
        print(sorted(m for m in heavy if m in sys.modules))
    """)
    assert proc.stdout.strip() == "[]"


def _members(path: Path) -> list[str]:
    return sorted(ms.inspect(path).members)


def test_flipped_byte_in_every_member_is_caught(saved, flip_byte):
    path, _, _ = saved
    for member in _members(path):
        copy = path.parent / f"copy-{member.replace('/', '_')}{path.suffix}"
        (shutil.copytree if path.is_dir() else shutil.copy)(path, copy)
        flip_byte(copy, member)
        with pytest.raises(IntegrityError) as err:
            ms.load(copy)
        assert err.value.member == member
        assert member in str(err.value) and "Re-export" in str(err.value)
        assert err.value.expected != err.value.actual


def test_truncated_single_file(tmp_path, model):
    est, X = model
    path = tmp_path / "m.msafe"
    ms.save(est, path, sample=X[:5])
    data = path.read_bytes()
    for cut in (len(data) // 3, len(data) - 30):
        bad = tmp_path / f"cut{cut}.msafe"
        bad.write_bytes(data[:cut])
        with pytest.raises((FormatError, IntegrityError)) as err:
            ms.load(bad)
        assert "truncated" in str(err.value) or "not a modelsafe artifact" in str(err.value)


def test_missing_member_in_folder(tmp_path, model):
    est, X = model
    path = tmp_path / "m"
    ms.save(est, path, sample=X[:5])
    victim = next(m for m in _members(path) if m.endswith(".bin") or m.endswith(".pkl"))
    (path / victim).unlink()
    with pytest.raises(IntegrityError, match="missing") as err:
        ms.load(path)
    assert err.value.member == victim


def test_extra_member_in_folder_is_refused(tmp_path, model):
    est, X = model
    path = tmp_path / "m"
    ms.save(est, path)
    (path / "model" / "injected.pkl").write_bytes(b"x")
    with pytest.raises(IntegrityError, match="does not record"):
        ms.load(path)


def _rewrite_manifest(path: Path, change) -> None:
    manifest_path = path / "modelsafe.json"
    data = json.loads(manifest_path.read_text())
    change(data)
    manifest_path.write_text(json.dumps(data))


def test_newer_format_version(tmp_path, model):
    est, X = model
    path = tmp_path / "m"
    ms.save(est, path)
    _rewrite_manifest(path, lambda d: d.update(format_version=99, modelsafe_version="9.9.9"))
    with pytest.raises(FormatError, match="format version 99.*pip install -U modelsafe"):
        ms.load(path)
    with pytest.raises(FormatError):
        ms.inspect(path)


def test_unknown_flavor(tmp_path, model):
    est, X = model
    path = tmp_path / "m"
    ms.save(est, path)
    _rewrite_manifest(path, lambda d: d["components"]["model"].update(flavor="quantum"))
    with pytest.raises(FormatError, match="Unknown flavor 'quantum'"):
        ms.load(path)


@pytest.mark.parametrize("target", ["nope.msafe", "plain.txt", "a_dir"])
def test_non_artifact_paths(tmp_path, target):
    (tmp_path / "plain.txt").write_text("hello")
    (tmp_path / "a_dir").mkdir()
    with pytest.raises(FormatError) as err:
        ms.load(tmp_path / target)
    assert str(tmp_path / target) in str(err.value)


def test_sample_whose_predict_fails_leaves_nothing(tmp_path, model):
    est, X = model
    with pytest.raises(SaveError, match="failed on the verification sample") as err:
        ms.save(est, tmp_path / "m.msafe", sample=np.ones((3, 99)))
    assert "ValueError" in str(err.value)
    assert os.listdir(tmp_path) == []


def test_overwrite_false(tmp_path, model):
    est, X = model
    path = tmp_path / "m.msafe"
    ms.save(est, path)
    before = path.read_bytes()
    with pytest.raises(SaveError, match="overwrite=False"):
        ms.save(est, path)
    assert path.read_bytes() == before
    ms.save(est, path, overwrite=True, sample=X[:3])
    assert ms.inspect(path).verification is not None


def test_overwrite_replaces_only_an_artifact(tmp_path, model):
    est, X = model
    notes = tmp_path / "notes.msafe"
    notes.write_text("the only copy of my notes")
    with zipfile.ZipFile(tmp_path / "other.msafe", "w") as archive:  # a zip, but not an artifact
        archive.writestr("data.csv", "a,b\n1,2\n")
    for victim in (notes, tmp_path / "other.msafe"):
        before = victim.read_bytes()
        with pytest.raises(SaveError, match=r"is a file that is not a modelsafe artifact; overwrite=True only "
                                            r"replaces artifacts, so it was left as it is") as info:
            ms.save(est, victim, overwrite=True)
        assert info.value.path == str(victim) and victim.read_bytes() == before
    (tmp_path / "empty.msafe").touch()  # an empty file holds nothing to lose (a NamedTemporaryFile)
    ms.save(est, tmp_path / "empty.msafe", overwrite=True, sample=X[:3])
    ms.save(est, tmp_path / "folder", sample=X[:3])
    for target in (tmp_path / "empty.msafe", tmp_path / "folder"):  # an artifact, file or folder, is replaced
        ms.save(est, target, overwrite=True, sample=X[:3])
        assert ms.load(target).verify().ok
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.msafe", "folder", "notes.msafe", "other.msafe"]


@pytest.mark.parametrize("name", ["model.pkl", "model.joblib", "model.pt", "model.PTH", "model.h5", "model.keras",
                                  "model.onnx", "model.bin", "model.safetensors", "model.zip"])
def test_a_foreign_model_suffix_is_refused_with_the_msafe_name(tmp_path, model, name):
    est, X = model
    with pytest.raises(SaveError) as info:
        ms.save(est, tmp_path / name, sample=X[:3])
    stem = str(tmp_path / name.split(".")[0])
    assert info.value.suggestion == stem + ".msafe" and info.value.suffix == "." + name.split(".")[1]
    assert f"Save to {stem + '.msafe'!r} for a single file, or to {stem!r} for a folder." in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_verification_mismatch_reports_largest_difference(tmp_path, model):
    est, X = model
    path = tmp_path / "m.msafe"
    ms.save(est, path, sample=X[:10])
    bundle = ms.load(path)
    bundle.model.coef_ = bundle.model.coef_ * 1.01  # the model no longer predicts as it did
    report = bundle.verify()
    assert not report.ok
    proba = next(c for c in report.checks if c.output == "predict_proba")
    assert not proba.ok and proba.max_difference > 0 and proba.position is not None
    assert proba.tolerance == {"rtol": 1e-7, "atol": 1e-9}
    text = str(report)
    assert "largest difference" in text and "predict_proba" in text and "rtol=1e-07" in text
    with pytest.raises(VerificationError) as err:
        report.raise_if_failed()
    assert err.value.report is report
    json.dumps(report.to_dict())


def test_dataframe_sample_round_trips_without_pickle(tmp_path, fresh):
    import pandas as pd
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    df = pd.DataFrame({"x": np.arange(40.0), "c": pd.Categorical(list("ab") * 20),
                       "s": ["u", "v", "w", "u"] * 10, "n": np.arange(40)})
    y = np.array(["yes", "no"] * 20)
    ct = make_column_transformer((OneHotEncoder(), ["c", "s"]), remainder="passthrough")
    model = make_pipeline(ct, LogisticRegression(max_iter=500)).fit(df, y)
    ms.save(model, tmp_path / "m.msafe", sample=df.iloc[:12])
    names = ms.inspect(tmp_path / "m.msafe").members
    assert not [n for n in names if n.startswith("sample/") and not n.endswith(".npy")]
    fresh("""
        import modelsafe as ms
        b = ms.load("m.msafe")
        sample = b.sample()
        assert list(sample.inputs.columns) == ["x", "c", "s", "n"]
        assert str(sample.inputs["c"].dtype) == "category"
        assert sample.outputs["predict"].dtype.kind == "U"
        assert b.verify().ok
    """)


@pytest.mark.parametrize(("small_in_stream", "oob_score"), [
    (True, False),
    (False, False),  # small arrays out of band, as in artifacts written before INBAND_BYTES
    (True, True),  # oob_decision_function_: a large array that lives on beside the trees
])
def test_a_loaded_forest_does_not_hold_the_bytes_its_trees_copied(tmp_path, monkeypatch, small_in_stream, oob_score):
    """Trees copy their node arrays into their own memory; nothing else may pin the read copy."""
    import gc
    import tracemalloc

    from sklearn.ensemble import RandomForestClassifier

    from modelsafe.flavors import _pickled

    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 8))
    y = (X[:, 0] + rng.normal(size=len(X)) > 0).astype(int)
    forest = RandomForestClassifier(30, oob_score=oob_score, random_state=0).fit(X, y)
    path = tmp_path / "forest.msafe"
    with monkeypatch.context() as patch:
        if not small_in_stream:
            patch.setattr(_pickled, "INBAND_BYTES", 0)
        ms.save(forest, path, sample=X[:5])
    with zipfile.ZipFile(path) as archive:
        buffers = sum(i.file_size for i in archive.infolist() if "/buffers-" in i.filename)
    assert buffers > 100_000

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        with ms.load(path) as bundle:
            loaded = bundle.model
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(loaded.predict_proba(X), forest.predict_proba(X))
    if oob_score:
        np.testing.assert_array_equal(loaded.oob_decision_function_, forest.oob_decision_function_)
    assert held < buffers / 4, f"the loaded forest holds {held} bytes of Python memory; its buffers are {buffers}"
