"""Legacy Keras / TensorFlow files: Keras 2 ``.h5`` and ``.keras``, Keras 3 legacy H5, SavedModels.

The Keras 2 files in ``tests/fixtures/keras`` were written by TensorFlow 2.15 (Keras 2.15)
with ``make_fixtures.py``; each comes with the outputs Keras 2 gave on ``inputs.npy``. A
converted artifact is always loaded back in a fresh process.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import modelsafe as ms
from modelsafe.errors import FlavorError, FormatError, UntrustedContentError

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")
from modelsafe.flavors.keras.legacy import read_legacy  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "keras"
X = np.load(FIXTURES / "inputs.npy")


def _expected(name: str) -> np.ndarray:
    return np.load(FIXTURES / f"{name}.expected.npy")


def _predict(obj, x):
    return obj.predict(x) if hasattr(obj, "endpoint") else obj.predict(x, verbose=0)


def _convert(name: str, target: Path, **kwargs) -> ms.Manifest:
    """What ``ms.convert`` does for a Keras file: read it safely, check it, save it with a sample."""
    obj = read_legacy(FIXTURES / name if not Path(name).is_absolute() else name, **kwargs)
    ms.save(obj, target, sample=X, metadata={"converted_from": Path(name).name})
    return ms.inspect(target)


def test_fixtures_were_written_by_keras_2():
    info = json.loads((FIXTURES / "fixtures.json").read_text())
    assert info["keras"].startswith("2.") and info["tensorflow"].startswith("2.15")
    for name in info["fixtures"]:
        assert (FIXTURES / name).exists() and (FIXTURES / f"{name}.expected.npy").is_file()


# ---------------------------------------------------------------------------------------
# H5
# ---------------------------------------------------------------------------------------


def test_keras2_h5_and_keras2_keras_are_read_to_the_same_predictions(tmp_path, fresh):
    for name in ("k2_sequential.h5", "k2_sequential.keras"):
        model = read_legacy(FIXTURES / name)
        assert isinstance(model, keras.Model)
        np.testing.assert_allclose(model.predict(X, verbose=0), _expected(name), rtol=1e-5, atol=1e-6)
    _convert("k2_sequential.h5", tmp_path / "from_h5.msafe")
    _convert("k2_sequential.keras", tmp_path / "from_keras2.msafe")
    for name in ("k2_sequential.h5", "k2_sequential.keras"):
        shutil.copy(FIXTURES / f"{name}.expected.npy", tmp_path / f"{name}.expected.npy")
    np.save(tmp_path / "X.npy", X)
    fresh("""
        import numpy as np, modelsafe as ms
        X = np.load("X.npy")
        for path, name in (("from_h5.msafe", "k2_sequential.h5"), ("from_keras2.msafe", "k2_sequential.keras")):
            bundle = ms.load(path)
            assert bundle.manifest.components["model"].data["format"] == "keras"
            assert bundle.verify().ok
            assert np.allclose(bundle.predict(X), np.load(name + ".expected.npy"), rtol=1e-5, atol=1e-6)
    """)


def test_keras2_h5_lambda_refused_then_trusted(tmp_path, fresh):
    with pytest.raises(UntrustedContentError) as info:
        read_legacy(FIXTURES / "k2_lambda.h5")
    assert info.value.layers == ["double_plus_one"] and "trust_code=True" in str(info.value)
    model = read_legacy(FIXTURES / "k2_lambda.h5", trust_code=True)
    np.testing.assert_allclose(model.predict(X, verbose=0), _expected("k2_lambda.h5"), rtol=1e-5, atol=1e-6)
    ms.save(model, tmp_path / "lam.msafe", sample=X)
    assert ms.inspect(tmp_path / "lam.msafe").components["model"].data["lambda_layers"] == ["double_plus_one"]
    fresh("""
        import modelsafe as ms
        from modelsafe.errors import UntrustedContentError
        try:
            ms.load("lam.msafe")
        except UntrustedContentError as exc:
            assert exc.layers == ["double_plus_one"]
        else:
            raise AssertionError("converted Lambda loaded without trust_code")
        assert ms.load("lam.msafe", trust_code=True).verify().ok
    """)


def test_h5_lambda_bytecode_this_python_cannot_read_is_explained(tmp_path):
    import codecs

    import h5py

    shutil.copy(FIXTURES / "k2_lambda.h5", tmp_path / "other-python.h5")
    with h5py.File(tmp_path / "other-python.h5", "r+") as h5:
        config = json.loads(h5.attrs["model_config"])
        layer = next(layer for layer in config["config"]["layers"] if layer["class_name"] == "Lambda")
        raw = codecs.decode(layer["config"]["function"][0].encode("ascii"), "base64")
        layer["config"]["function"][0] = codecs.encode(b"\xff" + raw[1:], "base64").decode("ascii")
        h5.attrs["model_config"] = json.dumps(config)
    with pytest.raises(FlavorError) as info:
        read_legacy(tmp_path / "other-python.h5", trust_code=True)
    assert info.value.layers == ["double_plus_one"] and "another Python version" in str(info.value)


def test_keras3_legacy_h5_and_keras3_keras_round_trip(tmp_path, fresh):
    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Dense(3, activation="sigmoid")(keras.layers.Dense(6)(inp)))
    model.save(tmp_path / "k3.h5")
    model.save(tmp_path / "k3.keras")
    (tmp_path / "k3.hdf5.renamed").write_bytes((tmp_path / "k3.h5").read_bytes())   # Keras picks by suffix
    expected = model.predict(X, verbose=0)
    for path in (tmp_path / "k3.h5", tmp_path / "k3.hdf5.renamed", tmp_path / "k3.keras"):
        np.testing.assert_allclose(read_legacy(path).predict(X, verbose=0), expected, rtol=1e-6, atol=1e-7)
    _convert(str(tmp_path / "k3.h5"), tmp_path / "k3.msafe")
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "expected.npy", expected)
    fresh("""
        import numpy as np, modelsafe as ms
        bundle = ms.load("k3.msafe")
        assert np.allclose(bundle.predict(np.load("X.npy")), np.load("expected.npy"), rtol=1e-5, atol=1e-6)
    """)


def test_weights_only_h5_and_non_model_files_are_explained(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.save_weights(tmp_path / "only.weights.h5")
    with pytest.raises(FormatError, match="weights only"):
        read_legacy(tmp_path / "only.weights.h5")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(FormatError, match="neither an HDF5 file"):
        read_legacy(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FormatError, match="without saved_model.pb"):
        read_legacy(tmp_path / "empty")


# ---------------------------------------------------------------------------------------
# .keras written by Keras 2 that Keras 3 cannot rebuild
# ---------------------------------------------------------------------------------------


def test_keras2_keras_file_keras3_cannot_read_names_version_and_migration():
    with pytest.raises(FormatError) as info:
        read_legacy(FIXTURES / "k2_locally_connected.keras")
    message = str(info.value)
    assert info.value.written_by == "2.15.0"
    assert "written by Keras 2.15.0" in message and "LocallyConnected1D" in message
    assert "tensorflow==2.15.*" in message and "tf.saved_model.save" in message


# ---------------------------------------------------------------------------------------
# SavedModel directories: inference-only endpoints
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["k2_tf_module_savedmodel", "k2_keras_savedmodel"])
def test_tf2_savedmodels_become_inference_endpoints(tmp_path, fresh, name):
    endpoint = read_legacy(FIXTURES / name)
    assert endpoint.endpoint == "serving_default"
    np.testing.assert_allclose(endpoint.predict(X), _expected(name), rtol=1e-5, atol=1e-6)
    manifest = ms.convert(FIXTURES / name, tmp_path / "sm.msafe", sample=X)  # scan, read, save, verify
    assert manifest.source["kind"] == "savedmodel-directory"
    data = manifest.components["model"].data
    assert data["format"] == "savedmodel" and data["endpoint"] == "serving_default"
    assert data["saved_by_tensorflow"] == "2.15.1" and "saved_model.pb" in data["files"]
    shutil.copy(FIXTURES / f"{name}.expected.npy", tmp_path / "expected.npy")
    np.save(tmp_path / "X.npy", X)
    fresh("""
        import numpy as np, modelsafe as ms
        bundle = ms.load("sm.msafe")
        assert bundle.verify().ok
        out = bundle.predict(np.load("X.npy"))
        assert isinstance(out, np.ndarray) and out.dtype == np.float32
        assert np.allclose(out, np.load("expected.npy"), rtol=1e-5, atol=1e-6)
    """)


def test_keras3_export_endpoint_is_chosen_automatically(tmp_path, fresh):
    inp = keras.Input((4,), name="x")
    model = keras.Model(inp, keras.layers.Dense(2)(inp))
    model.export(tmp_path / "exported", verbose=False)
    endpoint = read_legacy(tmp_path / "exported")
    assert endpoint.endpoint in ("serving_default", "serve")
    np.testing.assert_allclose(endpoint.predict(X), model.predict(X, verbose=0), rtol=1e-5, atol=1e-6)
    ms.save(endpoint, tmp_path / "exported.msafe", sample=X)
    fresh("""
        import modelsafe as ms
        assert ms.load("exported.msafe").verify().ok
    """)


class _TwoHeads(tf.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = tf.Variable(np.arange(8, dtype=np.float32).reshape(4, 2))

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
    def scores(self, x):
        return {"scores": tf.matmul(x, self.w)}

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
    def total(self, x):
        return {"total": tf.reduce_sum(x, axis=1)}


def test_ambiguous_savedmodel_lists_signatures_and_accepts_a_choice(tmp_path):
    module = _TwoHeads()
    tf.saved_model.save(module, str(tmp_path / "two"), signatures={"scores": module.scores, "total": module.total})
    with pytest.raises(FlavorError) as info:
        read_legacy(tmp_path / "two")
    assert info.value.signatures == ["scores", "total"] and "endpoint=" in str(info.value)
    chosen = read_legacy(tmp_path / "two", endpoint="total")
    np.testing.assert_allclose(chosen.predict(X), X.sum(axis=1), rtol=1e-6)
    with pytest.raises(FlavorError, match="no signature 'nope'"):
        read_legacy(tmp_path / "two", endpoint="nope")


class _Writer(tf.Module):
    """A SavedModel whose serving function writes a file: a TensorFlow program, not just math."""

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
    def __call__(self, x):
        tf.io.write_file("written-by-model.txt", tf.strings.as_string(tf.reduce_sum(x)))
        return {"y": x * 2.0}


def test_savedmodel_with_file_ops_needs_trust_code(tmp_path, fresh):
    tf.saved_model.save(_Writer(), str(tmp_path / "writer"))
    with pytest.raises(UntrustedContentError) as info:
        read_legacy(tmp_path / "writer")
    assert "WriteFile" in info.value.globals and "WriteFile" in str(info.value)
    endpoint = read_legacy(tmp_path / "writer", trust_code=True)
    ms.save(endpoint, tmp_path / "writer.msafe")
    (tmp_path / "written-by-model.txt").unlink(missing_ok=True)
    fresh("""
        import os, modelsafe as ms
        from modelsafe.errors import UntrustedContentError
        try:
            ms.load("writer.msafe")
        except UntrustedContentError as exc:
            assert "WriteFile" in exc.globals
        else:
            raise AssertionError("a SavedModel that writes files loaded without trust_code")
        assert not os.path.exists("written-by-model.txt")
        bundle = ms.load("writer.msafe", trust_code=True)
        assert bundle.model.endpoint == "serving_default"
    """)


# ---------------------------------------------------------------------------------------
# through ms.convert (scan, read with this module's reader, save, verify)
# ---------------------------------------------------------------------------------------


def test_ms_convert_keras2_h5_and_keras2_keras(tmp_path, fresh):
    for name in ("k2_sequential.h5", "k2_sequential.keras"):
        manifest = ms.convert(FIXTURES / name, tmp_path / f"{name}.msafe", sample=X)
        assert manifest.flavor == "keras" and manifest.source["sha256"]
        shutil.copy(FIXTURES / f"{name}.expected.npy", tmp_path / f"{name}.expected.npy")
    with pytest.raises(UntrustedContentError, match="double_plus_one"):
        ms.convert(FIXTURES / "k2_lambda.h5", tmp_path / "lam.msafe", sample=X)
    assert not (tmp_path / "lam.msafe").exists()
    trusted = ms.convert(FIXTURES / "k2_lambda.h5", tmp_path / "lam.msafe", sample=X, trust_code=True)
    assert trusted.flavor == "keras"
    with pytest.raises(UntrustedContentError, match="Lambda"):
        ms.load(tmp_path / "lam.msafe")  # the artifact keeps the gate: loading it needs trust_code too
    np.save(tmp_path / "X.npy", X)
    fresh("""
        import numpy as np, modelsafe as ms
        X = np.load("X.npy")
        for name in ("k2_sequential.h5", "k2_sequential.keras"):
            bundle = ms.load(name + ".msafe")
            assert np.allclose(bundle.predict(X), np.load(name + ".expected.npy"), rtol=1e-5, atol=1e-6)
    """)
