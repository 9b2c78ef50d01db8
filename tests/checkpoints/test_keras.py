"""ms.Checkpointer with Keras 3: saved from a callback during fit, restored in a fresh process."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest

import modelsafe as ms
from modelsafe.errors import ArchitectureMismatchError, SaveError

keras = pytest.importorskip("keras")

BUILD = '''
import keras


def build(hidden=8):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(hidden, activation="relu"),
                              keras.layers.Dropout(0.2, seed=1), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    return model


class SaveEveryEpoch(keras.callbacks.Callback):
    def __init__(self, ck):
        super().__init__()
        self.ck = ck

    def on_epoch_end(self, epoch, logs=None):
        self.ck.save(epoch, model=self.model, metrics=logs, extra={"epoch": epoch})
'''


@pytest.fixture
def kbuild(tmp_path, monkeypatch):
    (tmp_path / "kbuild.py").write_text(BUILD)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib
    import sys

    sys.modules.pop("kbuild", None)
    module = importlib.import_module("kbuild")
    yield module
    sys.modules.pop("kbuild", None)


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    return x, x.sum(1, keepdims=True)


def test_callback_saves_each_epoch_and_a_fresh_process_restores_weights_and_optimizer(tmp_path, fresh, kbuild):
    x, y = _data()
    model = kbuild.build()
    ck = ms.Checkpointer(tmp_path / "ck", monitor="loss", keep_best=1, keep_last=1)
    model.fit(x, y, epochs=4, batch_size=16, verbose=0, callbacks=[kbuild.SaveEveryEpoch(ck)])
    assert ck.latest.step == 3 and set(ck.latest.metrics) == {"loss"}
    assert ck.best.metrics["loss"] == min(c.metrics["loss"] for c in ck.list())
    np.savez(tmp_path / "weights.npz", *model.get_weights())
    np.savez(tmp_path / "opt.npz", *[v.numpy() for v in model.optimizer.variables])

    out = fresh(textwrap.dedent(f"""
        import json, numpy as np, modelsafe as ms, kbuild
        model = kbuild.build(hidden=8)              # fresh, unbuilt optimizer
        restored = ms.Checkpointer("ck").restore(model=model)
        w, o = np.load("weights.npz"), np.load("opt.npz")
        out = {{"step": restored.step, "extra": restored.extra,
                "weights": all(np.array_equal(a, w[k]) for a, k in zip(model.get_weights(), w.files)),
                "optimizer": all(np.array_equal(v.numpy(), o[k]) for v, k in zip(model.optimizer.variables, o.files)),
                "iterations": int(model.optimizer.iterations.numpy())}}
        bundle = ms.load({str(ck.latest.path)!r})
        out["loaded"] = type(bundle.model).__name__
        print("@@" + json.dumps(out))
    """)).stdout
    result = json.loads([ln for ln in out.splitlines() if ln.startswith("@@")][-1][2:])
    assert result == {"step": 3, "extra": {"epoch": 3}, "weights": True, "optimizer": True,
                      "iterations": int(model.optimizer.iterations.numpy()), "loaded": "Sequential"}


def test_keras_mismatches_are_refused_before_anything_changes(tmp_path, kbuild):
    x, y = _data()
    model = kbuild.build()
    model.fit(x, y, epochs=1, verbose=0)
    ck = ms.Checkpointer(tmp_path / "ck")
    ck.save(1, model=model)
    other = kbuild.build(hidden=16)
    before = [w.copy() for w in other.get_weights()]
    with pytest.raises(ArchitectureMismatchError) as info:
        ck.restore(model=other)
    assert info.value.mismatched["model[0]"] == ((4, 8), (4, 16))
    assert all(np.array_equal(a, b) for a, b in zip(before, other.get_weights()))

    torch = pytest.importorskip("torch")
    with pytest.raises(ArchitectureMismatchError, match=r"holds a keras model, but a Linear \(torch\) was given"):
        ck.restore(model=torch.nn.Linear(2, 2))
    with pytest.raises(SaveError, match=r"scheduler= apply to PyTorch"):
        ck.save(2, model=model, scheduler=object())
