"""Keras models with several inputs: called with a list ``[a, b]`` or a dict of named inputs.

Saved here, loaded and verified in one fresh process. A list sample used to be stacked into one
array (a bare numpy ValueError when the inputs had different shapes), and a dict with a wrong key
reached Keras's own ValueError.
"""

from __future__ import annotations

import numpy as np
import pytest

import modelsafe as ms

keras = pytest.importorskip("keras")


def test_list_and_dict_inputs(tmp_path, fresh):
    a = keras.Input((3,), name="a")
    b = keras.Input((2,), name="b")
    out = keras.layers.Dense(1)(keras.layers.Concatenate()([a, b]))
    rng = np.random.default_rng(0)
    A, B = rng.normal(size=(40, 3)).astype("float32"), rng.normal(size=(40, 2)).astype("float32")
    np.save(tmp_path / "a.npy", A)
    np.save(tmp_path / "b.npy", B)
    ms.save(keras.Model([a, b], out), tmp_path / "list.msafe", sample=[A, B])
    named = keras.Model({"a": a, "b": b}, out)
    ms.save(named, tmp_path / "dict.msafe", sample={"a": A, "b": B})
    ms.save(named, tmp_path / "dict-no-sample.msafe")
    fresh("""
        import numpy as np, modelsafe as ms

        A, B = np.load("a.npy"), np.load("b.npy")
        listed = ms.load("list.msafe")
        assert listed.verify().ok and listed.manifest.schema["kind"] == "positional"
        assert np.allclose(listed.predict([A, B]), listed.model.predict([A, B], verbose=0))
        try:
            listed.predict([A, B[:, :1]])
            raise SystemExit("a wrong shape reached Keras")
        except ms.SchemaError as exc:
            assert exc.input == 1 and "Input 1 of 2" in str(exc), exc

        for name in ("dict.msafe", "dict-no-sample.msafe"):
            bundle = ms.load(name)
            assert np.allclose(bundle.predict({"b": B, "a": A}), listed.predict([A, B]), atol=1e-6)
            try:
                bundle.predict({"a": A, "c": B})
                raise SystemExit(f"{name}: a wrong key reached Keras")
            except ms.SchemaError as exc:
                assert exc.missing == ["b"] and exc.expected == ["a", "b"], (name, exc)
    """, cwd=tmp_path)
