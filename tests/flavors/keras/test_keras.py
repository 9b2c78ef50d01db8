"""Keras flavor: save here or in a real ``__main__`` script, load in a fresh process.

Every load runs in a new interpreter (``fresh``), the way a model moves to a service.
Each fresh process batches the checks of one artifact to keep TensorFlow start-ups few.
"""

from __future__ import annotations

import hashlib
import io
import json
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

import modelsafe as ms
from modelsafe.errors import SaveError, UnsupportedModelError

keras = pytest.importorskip("keras")
layers = keras.layers


def _x(rows: int = 12, cols: int = 5) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(rows, cols)).astype("float32")


# ---------------------------------------------------------------------------------------
# built-in layers: Sequential (the seeds' examples, rewritten) and Functional
# ---------------------------------------------------------------------------------------


def test_seed_sequential_and_functional_round_trip(tmp_path, fresh):
    # Seed example: Sequential(Dense(input_shape=...)), compiled and fitted; the seed then saved
    # to 'keras_model' (no extension, refused by Keras 3). With modelsafe that is a folder artifact.
    X = np.random.rand(100, 5)
    y = np.random.randint(0, 2, size=100)
    with pytest.warns(UserWarning, match="input_shape"):   # Keras 3 still accepts the seed's input_shape
        seq = keras.Sequential([layers.Dense(10, activation="relu", input_shape=(5,)),
                                layers.Dense(2, activation="softmax")])
    seq.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    seq.fit(X, y, epochs=2, verbose=0)
    manifest = ms.save(seq, tmp_path / "keras_model", sample=X[:8])

    inp = keras.Input((5,), name="features")
    hidden = layers.Dense(6, activation="tanh")(inp)
    functional = keras.Model(inp, [layers.Dense(1, name="score")(hidden), layers.Dense(3, name="logits")(hidden)])
    ms.save(functional, tmp_path / "functional.msafe", sample=X[:8])

    data = manifest.components["model"].data
    assert manifest.flavor == "keras" and data["format"] == "keras"
    assert data["keras_version"] == keras.__version__ and data["backend"] == "tensorflow"
    assert data["tensorflow_version"] and data["custom_objects"] == [] and data["lambda_layers"] == []
    packages = manifest.environment["packages"]
    assert "keras" in packages and any(name.startswith("tensorflow") for name in packages)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "seq.npy", seq.predict(X, verbose=0))
    np.save(tmp_path / "score.npy", functional.predict(X, verbose=0)[0])
    np.save(tmp_path / "logits.npy", functional.predict(X, verbose=0)[1])

    fresh("""
        import sys, numpy as np, modelsafe as ms
        ms.inspect("keras_model")
        assert "keras" not in sys.modules and "tensorflow" not in sys.modules
        X = np.load("X.npy")
        bundle = ms.load("keras_model")
        assert type(bundle.model).__name__ == "Sequential"
        assert bundle.model.compiled is False          # compile=False unless asked
        out = bundle.predict(X)
        assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (100, 2)
        assert np.allclose(out, np.load("seq.npy"), rtol=1e-5, atol=1e-6)
        report = bundle.verify()
        assert report.ok and report.checks[0].tolerance == {"rtol": 1e-4, "atol": 1e-5}, report

        compiled = ms.load("keras_model", compile=True)
        assert compiled.model.compiled and compiled.model.optimizer.__class__.__name__ == "Adam"

        two = ms.load("functional.msafe")
        score, logits = two.predict(X)
        assert np.allclose(score, np.load("score.npy"), rtol=1e-5, atol=1e-6)
        assert np.allclose(logits, np.load("logits.npy"), rtol=1e-5, atol=1e-6)
        assert sorted(c.output for c in two.verify().checks) == ["predict.0", "predict.1"]
    """)


# ---------------------------------------------------------------------------------------
# custom code from a real __main__ script
# ---------------------------------------------------------------------------------------

CUSTOM_MAIN = """
    import numpy as np, keras
    from keras import layers
    import modelsafe as ms

    @keras.saving.register_keras_serializable(package="demo")
    class Scale(layers.Layer):
        def __init__(self, factor=2.0, **kwargs):
            super().__init__(**kwargs)
            self.factor = factor

        def build(self, input_shape):
            self.w = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="w")

        def call(self, x):
            return x * self.w * self.factor

        def get_config(self):
            return {**super().get_config(), "factor": self.factor}

    def half_relu(x):
        return keras.ops.relu(x) * 0.5

    def weighted_mse(y_true, y_pred):
        return keras.ops.mean(keras.ops.square(y_true - y_pred)) * 2.0

    class SimpleModel(keras.Model):          # the seed's subclassed model, without get_config
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.dense1 = layers.Dense(5, activation="relu")
            self.scale = Scale(1.5)
            self.dense2 = layers.Dense(2)

        def call(self, inputs):
            return self.dense2(self.scale(self.dense1(inputs)))

    X = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    inp = keras.Input((4,))
    out = layers.Dense(3, activation=half_relu)(Scale(3.0)(inp))
    model = keras.Model(inp, out)
    model.compile(optimizer="sgd", loss=weighted_mse)
    model.fit(X, np.ones((32, 3)), epochs=1, verbose=0)
    ms.save(model, "custom.msafe", sample=X[:6])

    sub = SimpleModel()
    sub(X[:1])
    ms.save(sub, "subclassed.msafe", sample=X[:6])
    np.save("X.npy", X)
    np.save("custom.npy", model.predict(X, verbose=0))
    np.save("subclassed.npy", sub.predict(X, verbose=0))
"""


def test_custom_layer_function_loss_and_subclassed_model_from_main(fresh, tmp_path):
    fresh.script("train.py", CUSTOM_MAIN)
    data = ms.inspect(tmp_path / "custom.msafe").components["model"].data
    assert {(r["name"], r["module"], r["qualname"], r["kind"]) for r in data["custom_objects"]} == {
        ("demo>Scale", "__main__", "Scale", "class"), ("half_relu", "__main__", "half_relu", "function"),
        ("weighted_mse", "__main__", "weighted_mse", "function")}
    sub = ms.inspect(tmp_path / "subclassed.msafe")
    assert {r["qualname"] for r in sub.components["model"].data["custom_objects"]} == {"SimpleModel", "Scale"}
    assert [c["module"] for c in sub.code] == ["__main__"]

    fresh("""
        import sys, numpy as np, modelsafe as ms
        from modelsafe.errors import UntrustedContentError
        X = np.load("X.npy")
        for path in ("custom.msafe", "subclassed.msafe"):
            try:
                ms.load(path)
            except UntrustedContentError as exc:
                assert exc.modules == ["__main__"], exc.modules
                assert "trust_code=True" in str(exc)
            else:
                raise AssertionError("loaded bundled code without trust_code")
            assert not [m for m in sys.modules if m.startswith("_modelsafe_code_")]

        bundle = ms.load("custom.msafe", trust_code=True)
        assert np.allclose(bundle.predict(X), np.load("custom.npy"), rtol=1e-5, atol=1e-6)
        scale = bundle.model.layers[1]
        assert type(scale).__name__ == "Scale" and scale.factor == 3.0
        import keras
        assert keras.saving.get_registered_object("demo>Scale") is type(scale)   # registered again, same name
        assert bundle.model.compiled is False
        compiled = ms.load("custom.msafe", trust_code=True, compile=True)
        assert compiled.model.loss.__name__ == "weighted_mse"

        sub = ms.load("subclassed.msafe", trust_code=True)
        assert type(sub.model).__name__ == "SimpleModel"
        assert np.allclose(sub.predict(X), np.load("subclassed.npy"), rtol=1e-5, atol=1e-6)
        assert sub.verify().ok
    """)


# ---------------------------------------------------------------------------------------
# Lambda layers: refused, trusted, and refused on another Python minor version
# ---------------------------------------------------------------------------------------


def _lambda_model() -> "keras.Model":
    inp = keras.Input((5,))
    hidden = layers.Lambda(lambda t: t * 2.0 + 1.0, name="double_plus_one")(inp)
    return keras.Model(inp, layers.Dense(2)(hidden))


def _set_saved_python(folder: Path, version: str) -> None:
    path = folder / "modelsafe.json"
    manifest = json.loads(path.read_text())
    manifest["components"]["model"]["data"]["python"] = version
    manifest["environment"]["python"]["version"] = f"{version}.0"
    path.write_text(json.dumps(manifest))


def test_lambda_refused_then_trusted_then_refused_on_other_python(tmp_path, fresh):
    model = _lambda_model()
    X = _x()
    ms.save(model, tmp_path / "lam", sample=X[:4])
    ms.save(model, tmp_path / "lam-old-python", sample=X[:4])
    _set_saved_python(tmp_path / "lam-old-python", "3.9")
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "expected.npy", model.predict(X, verbose=0))
    assert ms.inspect(tmp_path / "lam").components["model"].data["lambda_layers"] == ["double_plus_one"]

    fresh("""
        import sys, numpy as np, modelsafe as ms
        from modelsafe.errors import EnvironmentMismatchError, UntrustedContentError
        try:
            ms.load("lam")
        except UntrustedContentError as exc:
            assert exc.layers == ["double_plus_one"] and "'double_plus_one'" in str(exc), exc
            assert "trust_code=True" in str(exc)
        else:
            raise AssertionError("a Lambda layer loaded without trust_code")
        try:
            ms.load("lam", safe_mode=False)
        except ValueError as exc:
            assert "trust_code" in str(exc)
        else:
            raise AssertionError("safe_mode=False was accepted")

        bundle = ms.load("lam", trust_code=True)
        assert np.allclose(bundle.predict(np.load("X.npy")), np.load("expected.npy"), rtol=1e-5, atol=1e-6)

        try:
            ms.load("lam-old-python", trust_code=True, env="ignore")
        except EnvironmentMismatchError as exc:
            assert exc.layers == ["double_plus_one"] and exc.saved == "3.9", vars(exc)
            assert "Python 3.9 bytecode" in str(exc) and "'double_plus_one'" in str(exc)
        else:
            raise AssertionError("Python 3.9 bytecode was loaded")
    """)


# ---------------------------------------------------------------------------------------
# verification negative control, and tampering the audit must catch
# ---------------------------------------------------------------------------------------


def test_verification_fails_after_perturbing_one_weight(tmp_path, fresh):
    model = keras.Sequential([keras.Input((5,)), layers.Dense(4, activation="relu"), layers.Dense(1)])
    ms.save(model, tmp_path / "m.msafe", sample=_x()[:6])
    fresh("""
        import numpy as np, modelsafe as ms
        from modelsafe.errors import VerificationError
        bundle = ms.load("m.msafe")
        assert bundle.verify().ok
        kernel = bundle.model.layers[-1].kernel
        values = kernel.numpy()
        values[0, 0] += 0.5
        kernel.assign(values)
        report = bundle.verify()
        assert not report.ok and report.checks[0].mismatches > 0, report
        assert "FAIL" in str(report)
        try:
            report.raise_if_failed()
        except VerificationError:
            pass
        else:
            raise AssertionError("raise_if_failed did not raise")
    """)


def _rewrite_keras_member(folder: Path, edit) -> None:
    """Edit config.json inside model/model.keras and re-record its hash, as an attacker would."""
    member = folder / "model" / "model.keras"
    out = io.BytesIO()
    with zipfile.ZipFile(member) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "config.json":
                data = json.dumps(edit(json.loads(data))).encode()
            dst.writestr(info, data)
    member.write_bytes(out.getvalue())
    manifest_path = folder / "modelsafe.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["members"]["model/model.keras"] = {"size": member.stat().st_size,
                                                "sha256": hashlib.sha256(member.read_bytes()).hexdigest()}
    manifest_path.write_text(json.dumps(manifest))


def test_audit_reads_the_config_not_the_manifest(tmp_path, fresh):
    X = _x()
    plain = keras.Sequential([keras.Input((5,)), layers.Dense(2)])
    ms.save(plain, tmp_path / "injected-lambda", sample=X[:4])
    lam_config = json.loads(zipfile.ZipFile(io.BytesIO(_keras_bytes(_lambda_model()))).read("config.json"))
    lambda_layer = next(layer for layer in lam_config["config"]["layers"] if layer["class_name"] == "Lambda")

    def inject_lambda(config):
        lambda_layer["config"]["name"] = "evil"
        config["config"]["layers"].insert(1, lambda_layer)
        return config

    _rewrite_keras_member(tmp_path / "injected-lambda", inject_lambda)
    ms.save(plain, tmp_path / "unknown-class", sample=X[:4])

    def rename_class(config):
        config["config"]["layers"][0].update(module=None, class_name="Sneaky", registered_name="x>Sneaky")
        return config

    _rewrite_keras_member(tmp_path / "unknown-class", rename_class)
    ms.save(plain, tmp_path / "unsafe-function", sample=X[:4])

    def unsafe_activation(config):
        config["config"]["layers"][0]["config"]["activation"] = {
            "module": "keras.config", "class_name": "function", "config": "enable_unsafe_deserialization",
            "registered_name": "function"}
        return config

    _rewrite_keras_member(tmp_path / "unsafe-function", unsafe_activation)
    fresh("""
        import modelsafe as ms
        from modelsafe.errors import FormatError, UntrustedContentError
        try:
            ms.load("injected-lambda")
        except UntrustedContentError as exc:
            assert exc.layers == ["evil"], exc.layers
        else:
            raise AssertionError("an injected Lambda passed the audit")
        try:
            ms.load("unknown-class", trust_code=True)
        except FormatError as exc:
            assert "x>Sneaky" in str(exc), exc
        else:
            raise AssertionError("an unrecorded class passed the audit")
        try:
            ms.load("unsafe-function")
        except UntrustedContentError as exc:
            assert any("enable_unsafe_deserialization" in g for g in exc.globals), exc.globals
        else:
            raise AssertionError("a config naming enable_unsafe_deserialization passed the audit")
    """)


def _keras_bytes(model) -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.keras"
        model.save(path)
        return path.read_bytes()


# ---------------------------------------------------------------------------------------
# saves that could not load elsewhere fail at save, naming the class; nothing is left behind
# ---------------------------------------------------------------------------------------


class Holder:
    """A plain object as a constructor argument: Keras cannot serialize it."""

    def __init__(self, value: float) -> None:
        self.value = value


class NeedsConfig(layers.Layer):
    def __init__(self, holder, **kwargs):
        super().__init__(**kwargs)
        self.holder = holder

    def call(self, x):
        return x * self.holder.value


class ForgetsArgument(layers.Layer):
    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units))

    def call(self, x):
        return keras.ops.matmul(x, self.kernel)

    def get_config(self):
        return super().get_config()      # forgets `units`: from_config cannot rebuild the layer


class Unbuilt(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = layers.Dense(2)

    def call(self, x):
        return self.dense(x)


class Shifted(layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.shift = 0.0

    def call(self, x):
        return x + self.shift


def _state_outside_config():
    layer = Shifted()
    layer.shift = 3.0           # set after construction: neither in the config nor a weight
    return _model_with(layer)


def _local_layer_model():
    class Local(layers.Layer):
        def call(self, x):
            return x + 1.0

    inp = keras.Input((5,))
    return keras.Model(inp, Local()(inp))


def _model_with(layer):
    inp = keras.Input((5,))
    return keras.Model(inp, layer(inp))


@pytest.mark.parametrize("build, culprit", [
    (lambda: _model_with(NeedsConfig(Holder(2.0))), "NeedsConfig"),
    (lambda: _model_with(ForgetsArgument(3)), "ForgetsArgument"),
    (lambda: Unbuilt(), "Unbuilt"),
    (_local_layer_model, "Local"),
    (_state_outside_config, "predicts differently on the sample"),
])
def test_unloadable_model_fails_at_save_naming_the_class(tmp_path, build, culprit):
    target = tmp_path / "m.msafe"
    with pytest.raises(SaveError) as info:
        ms.save(build(), target, sample=_x()[:4])
    assert culprit in str(info.value), str(info.value)
    assert list(tmp_path.iterdir()) == []          # no artifact, no temporary left behind


def test_non_keras_tensorflow_objects_are_refused_with_a_way_forward(tmp_path):
    import tensorflow as tf

    with pytest.raises(UnsupportedModelError) as info:
        ms.save(tf.Module(), tmp_path / "m.msafe")
    assert "tf.saved_model.save" in str(info.value) and "ms.convert" in str(info.value)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------
# dict inputs, and a Keras model inside a plain Python object (an embedded component)
# ---------------------------------------------------------------------------------------


def test_named_inputs_and_model_embedded_in_a_python_object(tmp_path, fresh):
    a, b = keras.Input((3,), name="a"), keras.Input((2,), name="b")
    multi = keras.Model({"a": a, "b": b}, layers.Dense(1)(layers.Concatenate()([a, b])))
    sample = {"a": _x(6, 3), "b": _x(6, 2)}
    ms.save(multi, tmp_path / "multi.msafe", sample=sample)
    net = keras.Sequential([keras.Input((5,)), layers.Dense(2)])
    ms.save({"net": net, "threshold": 0.5}, tmp_path / "holder.msafe")
    assert ms.inspect(tmp_path / "holder.msafe").components["model"].data["embedded"]
    np.save(tmp_path / "X.npy", _x())
    np.save(tmp_path / "net.npy", net.predict(_x(), verbose=0))
    fresh("""
        import numpy as np, modelsafe as ms
        multi = ms.load("multi.msafe")
        assert multi.verify().ok
        holder = ms.load("holder.msafe").model
        assert holder["threshold"] == 0.5 and type(holder["net"]).__name__ == "Sequential"
        assert np.allclose(holder["net"].predict(np.load("X.npy"), verbose=0), np.load("net.npy"), rtol=1e-5, atol=1e-6)
    """)


# ---------------------------------------------------------------------------------------
# code from a local module and from an installed package
# ---------------------------------------------------------------------------------------

LOCAL_LAYERS = """
    import keras


    @keras.saving.register_keras_serializable(package="project")
    class Offset(keras.layers.Layer):
        def __init__(self, offset=1.0, **kwargs):
            super().__init__(**kwargs)
            self.offset = offset

        def call(self, x):
            return x + self.offset

        def get_config(self):
            return {**super().get_config(), "offset": self.offset}
"""

TRAIN_WITH_LOCAL_MODULE = """
    import numpy as np, keras, tensorflow as tf
    import modelsafe as ms
    from mylayers import Offset

    X = np.random.default_rng(1).normal(size=(10, 5)).astype("float32")
    inp = keras.Input((5,))
    out = keras.layers.Dense(3, activation=tf.math.softplus)(Offset(2.0)(inp))   # a TensorFlow function
    model = keras.Model(inp, out)
    ms.save(model, "local.msafe", sample=X)
    np.save("X.npy", X)
    np.save("expected.npy", model.predict(X, verbose=0))
"""


def test_local_module_layer_and_installed_package_function(tmp_path, fresh):
    project = tmp_path / "project"
    project.mkdir()
    (project / "mylayers.py").write_text(textwrap.dedent(LOCAL_LAYERS))
    fresh.script("train.py", TRAIN_WITH_LOCAL_MODULE, cwd=project)
    manifest = ms.inspect(project / "local.msafe")
    records = {r["name"]: r for r in manifest.components["model"].data["custom_objects"]}
    assert records["project>Offset"]["module"] == "mylayers"
    softplus = next(r for r in records.values() if r["kind"] == "function")
    assert softplus["module"].startswith("tensorflow")              # installed: referenced, not bundled
    assert [(c["module"], c["kind"]) for c in manifest.code] == [("mylayers", "local")]
    check = """
        import numpy as np, modelsafe as ms
        from modelsafe.errors import UntrustedContentError
        X = np.load("{folder}/X.npy")
        {body}
    """
    # Beside its module (the project folder), the importable copy is used: no bundled code runs.
    fresh(check.format(folder=".", body="""
        bundle = ms.load("local.msafe")
        assert type(bundle.model.layers[1]).__module__ == "mylayers"
        assert np.allclose(bundle.predict(X), np.load("expected.npy"), rtol=1e-5, atol=1e-6)
    """), cwd=project)
    # Elsewhere, only the bundled copy exists: it needs trust_code.
    fresh(check.format(folder="project", body="""
        try:
            ms.load("project/local.msafe")
        except UntrustedContentError as exc:
            assert exc.modules == ["mylayers"]
        else:
            raise AssertionError("bundled module imported without trust_code")
        bundle = ms.load("project/local.msafe", trust_code=True)
        assert np.allclose(bundle.predict(X), np.load("project/expected.npy"), rtol=1e-5, atol=1e-6)
    """))


def test_config_walk_survives_hostile_nesting_and_finds_buried_lambdas():
    from modelsafe.flavors.keras.config import lambda_layers

    config = {"class_name": "Functional", "module": "keras", "config": {"name": "top"}}
    node = config
    for i in range(5000):
        node["config"]["inner"] = {"class_name": "Dense", "module": "keras.layers", "config": {"name": f"d{i}"}}
        node = node["config"]["inner"]
    node["config"]["inbound_nodes"] = [{"kwargs": {"f": {"class_name": "__lambda__", "config": {"code": "AA=="}}}}]
    assert lambda_layers(config) == ["d4999"]
