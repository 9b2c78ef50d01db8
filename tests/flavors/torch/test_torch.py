"""PyTorch flavor: save here (classes from a local module file), load in a fresh process.

The model classes live in a module file written into ``tmp_path`` under a name unique to the
test, imported here from there, and imported by the fresh process (whose working directory
is ``tmp_path``) as a local module, the way a project keeps ``models.py`` beside its scripts.
"""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pytest

import modelsafe as ms
from modelsafe.errors import (
    ArchitectureMismatchError,
    FlavorError,
    IntegrityError,
    SaveError,
    UnsavableObjectError,
    UntrustedContentError,
)

torch = pytest.importorskip("torch")
import modelsafe.flavors.torch.flavor as torch_flavor  # noqa: E402  (installs the constructor-argument recorder)

MODELS = '''
import torch
import torch.nn as nn


class MLP(nn.Module):
    def __init__(self, d_in, hidden=16, classes=3, act=nn.ReLU, dropout=0.5):
        super().__init__()
        self.fc1 = nn.Linear(d_in, hidden)
        self.act = act()
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, classes)
        self.register_buffer("scale", torch.full((classes,), 2.0), persistent=False)

    def forward(self, x):
        return self.fc2(self.drop(self.act(self.fc1(x)))) * self.scale


class TiedLM(nn.Module):
    def __init__(self, vocab=50, dim=8):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, ids):
        return self.head(self.norm(self.emb(ids).mean(1)))


class Strided(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.arange(12.0).reshape(3, 4).t())
        self.register_buffer("b", torch.arange(20.0).reshape(4, 5)[:, ::2])

    def forward(self, x):
        return x @ self.w + self.b.sum(0)


class NoAttrs(nn.Module):
    def __init__(self, a, b):
        super().__init__()
        self.layer = nn.Linear(a, b)

    def forward(self, x):
        return self.layer(x)


class Wrapper(nn.Module):
    def __init__(self, backbone, classes=2):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(3, classes)

    def forward(self, x):
        return self.head(self.backbone(x))


class TwoHeads(nn.Module):
    def __init__(self, d=4):
        super().__init__()
        self.bn = nn.BatchNorm1d(d)
        self.a = nn.Linear(d, 2)
        self.b = nn.Linear(d, 1)

    def forward(self, x):
        z = self.bn(x)
        return {"score": self.b(z), "logits": self.a(z)}
'''


@pytest.fixture
def models(tmp_path, monkeypatch):
    """The MODELS module, written to tmp_path under a unique name and imported from there."""
    name = f"tm_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{name}.py").write_text(MODELS)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module(name)
    yield module
    sys.modules.pop(name, None)


def _x(rows: int = 8, cols: int = 5) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(rows, cols)).astype(np.float32)


def _fresh_json(fresh, code: str, **kwargs):
    """Run ``code`` (which sets ``out``) in a fresh process and return ``out`` as parsed JSON."""
    proc = fresh(textwrap.dedent(code) + "\nimport json as _j; print('@@' + _j.dumps(out))\n", **kwargs)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("@@")][-1]
    return json.loads(line[2:])


# ---------------------------------------------------------------------------------------
# round trips
# ---------------------------------------------------------------------------------------


def test_module_round_trip_fresh_process_eval_mode_and_predict(tmp_path, fresh, models):
    torch.manual_seed(0)
    model = models.MLP(5, hidden=32, act=torch.nn.GELU)  # stays in train mode: dropout is active
    x = _x()
    manifest = ms.save(model, tmp_path / "mlp.msafe", sample=x)
    data = manifest.components["model"].data
    assert model.training, "save must not switch the caller's model to eval"
    assert data["architecture"] == {"class": [models.__name__, "MLP"], "args": [5], "args_from": "recorded",
                                    "kwargs": {"hidden": 32, "act": {"$ref": ["torch.nn.modules.activation",
                                                                               "GELU"]}}}
    assert data["buffers"] == "buffers.safetensors" and data["weights"]["members"] == ["weights-0.safetensors"]
    assert "torch" in manifest.environment["packages"]
    assert manifest.environment["devices"]["torch_device"] == "cpu"
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(x)).numpy()
    np.save(tmp_path / "expected.npy", expected)
    out = _fresh_json(fresh, """
        import numpy as np, torch, modelsafe as ms
        x = np.load("expected.npy")
        b = ms.load("mlp.msafe")
        m = b.model
        pred = b.predict(np.asarray(b.sample_inputs()))
        from_tensor = b.predict(torch.from_numpy(np.asarray(b.sample_inputs())))
        out = {"type": type(m).__module__ + "." + type(m).__name__, "training": m.training,
                "act": type(m.act).__name__, "scale": m.scale.tolist(), "device": str(m.fc1.weight.device),
                "pred_is_numpy": type(pred).__name__, "close": bool(np.allclose(pred, x, atol=1e-6)),
                "tensor_close": bool(np.allclose(from_tensor, x, atol=1e-6)),
                "float64_ok": bool(np.allclose(b.predict(np.asarray(b.sample_inputs(), dtype=np.float64)), x,
                                               atol=1e-5)),
                "grad": torch.is_grad_enabled(), "verify": ms.verify("mlp.msafe").ok}
    """)
    assert out == {"type": f"{models.__name__}.MLP", "training": False, "act": "GELU", "scale": [2.0, 2.0, 2.0],
                   "device": "cpu", "pred_is_numpy": "ndarray", "close": True, "tensor_close": True,
                   "float64_ok": True, "grad": True, "verify": True}


def test_main_script_class_is_bundled_and_gated_by_trust_code(tmp_path, fresh):
    # The seeds' SimpleNet, defined in a training script (__main__), saved with modelsafe.
    (tmp_path / "train.py").write_text(textwrap.dedent('''
        import torch
        import torch.nn as nn
        import torch.optim as optim
        import modelsafe as ms

        class SimpleNet(nn.Module):
            def __init__(self):
                super(SimpleNet, self).__init__()
                self.fc1 = nn.Linear(5, 10)
                self.relu = nn.ReLU()
                self.fc2 = nn.Linear(10, 2)

            def forward(self, x):
                return self.fc2(self.relu(self.fc1(x)))

        torch.manual_seed(0)
        X = torch.randn(100, 5)
        y = torch.randint(0, 2, (100,)).long()
        model = SimpleNet()
        optimizer = optim.Adam(model.parameters())
        criterion = nn.CrossEntropyLoss()
        for epoch in range(5):
            optimizer.zero_grad()
            loss = criterion(model(X), y)
            loss.backward()
            optimizer.step()
        ms.save(model, "pytorch_model.msafe", sample=X[:10])
    '''))
    fresh("import runpy; runpy.run_path('train.py', run_name='__main__')")
    out = _fresh_json(fresh, """
        import modelsafe as ms
        try:
            ms.load("pytorch_model.msafe")
            refused = None
        except ms.UntrustedContentError as exc:
            refused = {"modules": exc.modules, "text": str(exc)}
        b = ms.load("pytorch_model.msafe", trust_code=True, device="auto")
        out = {"refused": refused, "class": type(b.model).__name__, "training": b.model.training,
               "verified": b.verify().ok, "device": str(next(b.model.parameters()).device)}
    """)
    assert out["refused"]["modules"] == ["__main__"] and "trust_code=True" in out["refused"]["text"]
    assert out["refused"]["text"].count("SimpleNet") >= 1
    assert out["class"] == "SimpleNet" and out["training"] is False and out["verified"] is True
    assert out["device"] == "cpu"


def test_tied_and_non_contiguous_tensors_round_trip(tmp_path, fresh, models):
    torch.manual_seed(1)
    tied = models.TiedLM(vocab=40, dim=6)
    ids = torch.randint(0, 40, (4, 7))
    manifest = ms.save(tied, tmp_path / "tied.msafe", sample=ids)
    weights = manifest.components["model"].data["weights"]
    assert weights["aliases"] == {"head.weight": "emb.weight"}
    assert weights["keys"] == list(tied.state_dict())
    stored = manifest.members["model/weights-0.safetensors"].size
    assert stored < 1.5 * sum(t.numel() * 4 for t in tied.state_dict().values() if t is not tied.head.weight) + 4096

    strided = models.Strided()
    assert not strided.w.is_contiguous() and not strided.b.is_contiguous()
    ms.save(strided, tmp_path / "strided.msafe", sample=torch.ones(2, 4))
    torch.save({"w": strided.w.detach(), "b": strided.b}, tmp_path / "expected.pt")
    out = _fresh_json(fresh, """
        import torch, modelsafe as ms
        from modelsafe.flavors.torch.legacy import read_checkpoint
        t = ms.load("tied.msafe").model
        s = ms.load("strided.msafe").model
        expected = read_checkpoint("expected.pt")
        out = {"tied": t.head.weight is t.emb.weight, "param": type(t.head.weight).__name__,
               "trains_together": [p.shape[0] for p in t.parameters()],
               "w": torch.equal(s.w, expected["w"]), "b": torch.equal(s.b, expected["b"]),
               "shapes": [list(s.w.shape), list(s.b.shape)]}
    """)
    # one shared Parameter: parameters() lists it once (emb/head), then the LayerNorm's two
    assert out == {"tied": True, "param": "Parameter", "trains_together": [40, 6, 6], "w": True, "b": True,
                   "shapes": [[4, 3], [4, 3]]}


def test_wrappers_and_prefixed_state_dicts_load_into_the_plain_module(tmp_path, fresh, models):
    torch.manual_seed(2)
    model = models.MLP(5)
    x = _x()
    dp = ms.save(torch.nn.DataParallel(model), tmp_path / "dp.msafe", sample=x)
    compiled = ms.save(torch.compile(model), tmp_path / "compiled.msafe", sample=x)
    prefixed = torch.nn.DataParallel(model).state_dict()  # an OrderedDict with "module." keys
    assert all(k.startswith("module.") for k in prefixed)
    sd = ms.save(prefixed, tmp_path / "sd.msafe")
    assert dp.components["model"].data["wrappers"] == ["DataParallel"]
    assert compiled.components["model"].data["wrappers"] == ["OptimizedModule"]
    assert sd.flavor == "torch" and sd.components["model"].data["stripped_prefix"] == "module."
    out = _fresh_json(fresh, f"""
        import torch, modelsafe as ms
        from {models.__name__} import MLP
        a, c = ms.load("dp.msafe").model, ms.load("compiled.msafe").model
        state = ms.load("sd.msafe").model
        plain = MLP(5)
        plain.load_state_dict(state)
        out = {{"types": [type(a).__name__, type(c).__name__], "keys": list(a.state_dict()),
                "state": type(state).__name__,
                "same": all(torch.equal(state[k], v) for k, v in a.state_dict().items())}}
    """)
    assert out == {"types": ["MLP", "MLP"], "keys": ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"],
                   "state": "OrderedDict", "same": True}


def test_checkpoint_dict_is_stored_weights_only(tmp_path, fresh, models):
    import argparse

    torch.manual_seed(3)
    model = models.MLP(5)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model(torch.from_numpy(_x())).sum().backward()
    opt.step()
    checkpoint = {"model_state_dict": model.state_dict(), "optimizer_state_dict": opt.state_dict(), "epoch": 3,
                  "best": np.float64(0.25), "args": argparse.Namespace(lr=0.01, tags=("a", "b")),
                  "loss": float("nan")}
    manifest = ms.save(checkpoint, tmp_path / "ckpt.msafe")
    assert manifest.flavor == "torch" and manifest.components["model"].data["kind"] == "state"
    assert not [m for m in manifest.members if m.endswith(".pkl")]
    with pytest.raises(SaveError, match="no forward"):
        ms.save(model.state_dict(), tmp_path / "bad.msafe", sample=_x())
    assert not (tmp_path / "bad.msafe").exists()
    out = _fresh_json(fresh, f"""
        import math, torch, modelsafe as ms
        from {models.__name__} import MLP
        c = ms.load("ckpt.msafe").model
        m = MLP(5)
        m.load_state_dict(c["model_state_dict"])
        opt = torch.optim.Adam(m.parameters(), lr=0.01)
        opt.load_state_dict(c["optimizer_state_dict"])
        out = {{"epoch": c["epoch"], "best": [type(c["best"]).__name__, float(c["best"])],
                "args": [type(c["args"]).__name__, c["args"].lr, list(c["args"].tags)],
                "nan": math.isnan(c["loss"]), "state_keys": sorted(c["optimizer_state_dict"]["state"]),
                "step": float(c["optimizer_state_dict"]["state"][0]["step"])}}
    """)
    assert out == {"epoch": 3, "best": ["float64", 0.25], "args": ["Namespace", 0.01, ["a", "b"]], "nan": True,
                   "state_keys": [0, 1, 2, 3], "step": 1.0}


def test_nested_module_arguments_and_multiple_outputs(tmp_path, fresh, models):
    torch.manual_seed(4)
    wrapped = models.Wrapper(models.MLP(5, hidden=7), classes=4)
    x = _x()
    manifest = ms.save(wrapped, tmp_path / "wrapped.msafe", sample=x)
    arch = manifest.components["model"].data["architecture"]
    assert arch["kwargs"]["classes"] == 4
    assert arch["args"][0]["$module"]["kwargs"] == {"hidden": 7}
    heads = models.TwoHeads(4)
    heads(torch.randn(16, 4))  # running stats move in train mode
    ms.save(heads, tmp_path / "heads.msafe", sample=_x(cols=4))
    assert set(ms.inspect(tmp_path / "heads.msafe").verification["outputs"]) == {"predict.score", "predict.logits"}
    out = _fresh_json(fresh, """
        import numpy as np, modelsafe as ms
        w = ms.load("wrapped.msafe")
        h = ms.load("heads.msafe")
        p = h.predict(np.ones((3, 4), np.float32))
        out = {"backbone": type(w.model.backbone).__name__, "hidden": w.model.backbone.fc1.out_features,
               "heads": sorted(p), "shapes": [list(p["score"].shape), list(p["logits"].shape)],
               "tracked": int(h.model.bn.num_batches_tracked)}
    """)
    assert out == {"backbone": "MLP", "hidden": 7, "heads": ["logits", "score"], "shapes": [[3, 1], [3, 2]],
                   "tracked": 1}


def test_half_precision_weights_keep_their_dtype(tmp_path, fresh, models):
    model = models.MLP(5).to(torch.bfloat16)
    manifest = ms.save(model, tmp_path / "bf16.msafe", sample=_x())
    assert manifest.verification["outputs"]["predict"]["dtype"] == "float32"  # bf16 outputs compared as float32
    out = _fresh_json(fresh, """
        import numpy as np, modelsafe as ms
        b = ms.load("bf16.msafe")
        out = [str(b.model.fc1.weight.dtype), str(b.predict(np.ones((2, 5))).dtype)]
    """)
    assert out == ["torch.bfloat16", "float32"]


def test_torch_module_inside_a_python_object_is_embedded(tmp_path, fresh):
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3))
    ms.save({"net": model, "labels": ["a", "b", "c"]}, tmp_path / "obj.msafe")
    manifest = ms.inspect(tmp_path / "obj.msafe")
    embedded = manifest.components["model"].data["embedded"]
    assert [e["flavor"] for e in embedded] == ["torch"]
    out = _fresh_json(fresh, """
        import modelsafe as ms
        o = ms.load("obj.msafe").model
        out = [type(o["net"]).__name__, o["labels"], o["net"].training]
    """)
    assert out == ["Sequential", ["a", "b", "c"], False]


# ---------------------------------------------------------------------------------------
# architecture: constructor arguments
# ---------------------------------------------------------------------------------------


def test_init_args_explicit_inferred_and_refused(tmp_path, models):
    torch_flavor.install_recorder()
    model = models.NoAttrs(5, 3)
    from modelsafe.flavors.torch import args as torch_args
    torch_args._RECORDED.pop(model, None)  # as if built before modelsafe was imported
    with pytest.raises(SaveError) as info:
        ms.save(model, tmp_path / "a.msafe")
    text = str(info.value)
    assert "init_args=" in text and "a, b have no default and no attribute of that name" in text
    assert not list(tmp_path.glob("*.msafe")) and not list(tmp_path.glob(".*tmp*"))

    manifest = ms.save(model, tmp_path / "b.msafe", init_args={"a": 5, "b": 3}, sample=_x())
    assert manifest.components["model"].data["architecture"]["args_from"] == "init_args"

    with pytest.raises(SaveError) as info:
        ms.save(model, tmp_path / "c.msafe", init_args={"a": 5, "b": 3, "bogus": 1})
    assert "do not match the constructor" in str(info.value) and "bogus" in str(info.value)
    assert info.value.problem.endswith("'bogus'")
    with pytest.raises(SaveError) as info:
        ms.save(model, tmp_path / "d.msafe", init_args={"a": 5, "b": 4})
    assert "do not rebuild the model" in str(info.value) and "layer.weight (3, 5) -> (4, 5)" in str(info.value)
    with pytest.raises(UnsavableObjectError) as info:
        ms.save(model, tmp_path / "e.msafe", init_args={"a": object(), "b": 3})
    assert info.value.problems[0][:2] == ("init_args.a", "builtins.object")
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".msafe") == ["b.msafe"]

    # Attributes named like the parameters (the usual pattern) are enough without the recorder.
    linear = torch.nn.Linear(4, 2, bias=False)
    torch_args._RECORDED.pop(linear, None)
    arch = ms.save(linear, tmp_path / "lin.msafe").components["model"].data["architecture"]
    assert arch["args_from"] == "inferred" and arch["kwargs"]["bias"] is None
    seq = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh())
    arch = ms.save(seq, tmp_path / "seq.msafe").components["model"].data["architecture"]
    assert arch["args_from"] == "torch container" and arch["args"][1]["$module"]["class"][1] == "Tanh"


def test_rebuild_check_runs_once_per_class_arguments_and_shapes(tmp_path, models, monkeypatch):
    from modelsafe.flavors.torch import arch as torch_arch
    builds = []
    real = torch_arch.construct
    monkeypatch.setattr(torch_arch, "construct", lambda *a, **k: builds.append(a[0]) or real(*a, **k))
    model = models.NoAttrs(5, 3)
    ms.save(model, tmp_path / "a.msafe", init_args={"a": 5, "b": 3})
    ms.save(model, tmp_path / "b.msafe", init_args={"a": 5, "b": 3})  # a checkpoint every few steps
    assert builds == [models.NoAttrs]

    model.layer = torch.nn.Linear(5, 4)  # same arguments, but the model no longer matches them
    with pytest.raises(SaveError) as info:
        ms.save(model, tmp_path / "c.msafe", init_args={"a": 5, "b": 3})
    assert "layer.weight (4, 5) -> (3, 5)" in str(info.value) and len(builds) == 2
    assert not (tmp_path / "c.msafe").exists()


def test_wrong_recorded_arguments_are_caught_at_save_by_the_sample(tmp_path, models):
    from modelsafe.flavors.torch import args as torch_args
    model = models.MLP(5, act=torch.nn.Tanh)
    torch_args._RECORDED[model] = ((5,), {})  # as if the recorder had missed `act`: ReLU would be rebuilt
    with pytest.raises(SaveError) as info:
        ms.save(model, tmp_path / "m.msafe", sample=_x())
    assert "predicts differently on the sample" in str(info.value) and "init_args" in str(info.value)
    assert not (tmp_path / "m.msafe").exists()


def test_save_leaves_torch_rng_untouched(tmp_path, models):
    model = models.MLP(5)
    before = torch.random.get_rng_state().clone()
    ms.save(model, tmp_path / "m.msafe", sample=_x())
    bundle = ms.load(tmp_path / "m.msafe")
    assert torch.equal(before, torch.random.get_rng_state())
    bundle.close()


# ---------------------------------------------------------------------------------------
# strict loading and the mismatch report
# ---------------------------------------------------------------------------------------

CHANGED = MODELS.replace(
    "self.fc1 = nn.Linear(d_in, hidden)", "self.fc1 = nn.Linear(d_in, hidden * 2)"
).replace(
    "self.fc2 = nn.Linear(hidden, classes)", "self.head = nn.Linear(hidden * 2, classes)"
).replace(
    "return self.fc2(self.drop(self.act(self.fc1(x)))) * self.scale",
    "return self.head(self.drop(self.act(self.fc1(x)))) * self.scale")


def test_architecture_drift_raises_a_key_by_key_report(tmp_path, fresh, models):
    torch.manual_seed(5)
    ms.save(models.MLP(5, hidden=8, classes=3), tmp_path / "mlp.msafe", sample=_x())
    (tmp_path / f"{models.__name__}.py").write_text(CHANGED)  # the project's code moves on
    out = _fresh_json(fresh, """
        import warnings, modelsafe as ms
        from modelsafe.flavors.torch.flavor import load_report
        warnings.simplefilter("ignore")
        try:
            ms.load("mlp.msafe")
        except ms.ArchitectureMismatchError as exc:
            err = {"missing": exc.missing, "unexpected": exc.unexpected,
                   "mismatched": {k: [list(a), list(b)] for k, (a, b) in exc.mismatched.items()},
                   "renames": exc.renames, "changes": exc.code_changes, "text": str(exc)}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            b = ms.load("mlp.msafe", strict=False, verify=False)
        report = load_report(b.model)
        out = {"err": err, "warned": [type(w.message).__name__ for w in caught],
               "report": report.to_dict(), "loaded_fc2": None,
               "head_bias_kept_init": b.model.head.bias.abs().sum().item() > 0}
    """)
    err = out["err"]
    assert err["missing"] == ["head.weight", "head.bias"]
    assert err["unexpected"] == ["fc2.weight", "fc2.bias"]
    assert err["mismatched"] == {"fc1.weight": [[8, 5], [16, 5]], "fc1.bias": [[8], [16]]}
    assert err["renames"] == {}  # head.weight has another shape (16 inputs): fc2 -> head is not a plain rename
    text = err["text"]
    assert text.startswith(f"The saved weights do not fit {models.__name__}.MLP as it is defined now (6 key(s) "
                           "differ, 0 match):\n  key          saved   current  problem\n")
    assert "\n  fc1.weight   (8, 5)  (16, 5)  shape differs\n" in text
    assert "\n  fc2.weight   (3, 8)  -        not in the model\n" in text
    assert "\n  head.weight  -       (3, 16)  not in the saved weights\n" in text
    assert f"The weights were saved from {models.__name__}.MLP(5, hidden=8, classes=3)." in text
    assert "Local module(s) whose source changed since the model was saved" in text
    assert "strict=False" in text
    assert "PartialLoadWarning" in out["warned"]
    assert out["report"]["ok"] is False and out["report"]["matched"] == 0
    assert out["head_bias_kept_init"] is True


def test_rename_suggestions(tmp_path, fresh, models):
    torch.manual_seed(6)
    ms.save(models.MLP(5, hidden=8), tmp_path / "mlp.msafe", sample=_x())
    renamed = MODELS.replace("self.fc2 = nn.Linear(hidden, classes)", "self.head = nn.Linear(hidden, classes)") \
        .replace("return self.fc2(", "return self.head(")
    (tmp_path / f"{models.__name__}.py").write_text(renamed)
    out = _fresh_json(fresh, """
        import warnings, modelsafe as ms
        warnings.simplefilter("ignore")
        try:
            ms.load("mlp.msafe")
        except ms.ArchitectureMismatchError as exc:
            out = {"renames": exc.renames, "changes": exc.code_changes, "text": str(exc)}
    """)
    assert out["renames"] == {"fc2.weight": "head.weight", "fc2.bias": "head.bias"}
    assert out["changes"] == [models.__name__]
    name = models.__name__
    assert out["text"] == (
        f"The saved weights do not fit {name}.MLP as it is defined now (4 key(s) differ, 2 match):\n"
        "  key          saved   current  problem\n"
        "  fc2.weight   (3, 8)  -        not in the model (renamed to head.weight?)\n"
        "  fc2.bias     (3,)    -        not in the model (renamed to head.bias?)\n"
        "  head.weight  -       (3, 8)   not in the saved weights\n"
        "  head.bias    -       (3,)     not in the saved weights\n"
        f"The weights were saved from {name}.MLP(5, hidden=8).\n"
        f"Local module(s) whose source changed since the model was saved: {name}.\n"
        "Looks like renames: fc2.weight -> head.weight, fc2.bias -> head.bias.\n"
        "Why it matters: weights loaded into a different architecture would be silently wrong, or fail later at "
        "predict.\n"
        "How to fix: use the class as it was when the model was saved (load with code='bundled' and trust_code=True "
        "to use the copy bundled with the artifact); or rename the attributes back, or map the old keys to the new "
        "names; or load with strict=False to load the 2 matching tensors and keep the rest as initialized.")


def test_bundled_copy_loads_when_the_local_code_drifted(tmp_path, fresh, models):
    ms.save(models.MLP(5, hidden=8), tmp_path / "mlp.msafe", sample=_x())
    (tmp_path / f"{models.__name__}.py").write_text(CHANGED)
    out = _fresh_json(fresh, """
        import modelsafe as ms
        b = ms.load("mlp.msafe", code="bundled", trust_code=True)
        out = [type(b.model).__name__, b.model.fc1.out_features, b.verify().ok]
    """)
    assert out == ["MLP", 8, True]


# ---------------------------------------------------------------------------------------
# devices
# ---------------------------------------------------------------------------------------


def test_devices_and_a_gpu_saved_model_on_a_cpu_machine(tmp_path, fresh, models):
    ms.save(models.MLP(5), tmp_path / "gpu_model", sample=_x())  # a folder artifact: its manifest is editable
    manifest_path = tmp_path / "gpu_model" / "modelsafe.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["components"]["model"]["data"]["device"] = "cuda:0"  # as if saved on a GPU
    manifest["environment"]["devices"].update({"torch_device": "cuda:0", "torch_cuda": "12.1", "cudnn": 90100})
    manifest_path.write_text(json.dumps(manifest))
    out = _fresh_json(fresh, """
        import warnings, modelsafe as ms, torch
        assert not torch.cuda.is_available()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            b = ms.load("gpu_model")
        notes = [str(w.message) for w in caught if type(w.message).__name__ == "DeviceChangedWarning"]
        auto = ms.load("gpu_model", device="auto")
        errors = {}
        for device in ("cuda", "cuda:1", "tpu:7", "meta"):
            try:
                ms.load("gpu_model", device=device)
            except ms.FlavorError as exc:
                errors[device] = str(exc)
        out = {"device": str(next(b.model.parameters()).device), "notes": notes,
               "auto": str(next(auto.model.parameters()).device), "errors": errors,
               "verified": b.verify().ok}
    """)
    assert out["device"] == "cpu" and out["auto"] == "cpu" and out["verified"] is True
    assert len(out["notes"]) == 1
    assert "saved on cuda:0 and is loaded on cpu (device=None means CPU)" in out["notes"][0]
    assert "0 CUDA device(s)" in out["errors"]["cuda"] and "device='auto'" in out["errors"]["cuda"]
    assert set(out["errors"]) == {"cuda", "cuda:1", "tpu:7", "meta"}


# ---------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------


def _rewrite_member(path: Path, member: str, change) -> None:
    """Rewrite one member of a single-file artifact in place (same size), as corruption would."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
    from modelsafe.artifact.reader import open_artifact

    with open_artifact(path) as reader:
        offset = reader.locate(member)[1]
    with open(path, "r+b") as f:
        f.seek(offset)
        data = bytearray(f.read(info.file_size))
        change(data)
        f.seek(offset)
        f.write(data)


def test_corrupted_safetensors_member_is_refused(tmp_path, models):
    path = tmp_path / "m.msafe"
    ms.save(models.MLP(5), path, sample=_x())

    def flip(data: bytearray) -> None:
        data[-3] ^= 0xFF

    _rewrite_member(path, "model/weights-0.safetensors", flip)
    with pytest.raises(IntegrityError) as info:
        ms.load(path)
    assert info.value.member == "model/weights-0.safetensors"
    assert "changed after saving" in str(info.value)


def test_crafted_safetensors_header_is_refused_before_reading(tmp_path, models):
    folder = tmp_path / "m"
    ms.save(models.MLP(5), folder, sample=_x())
    member = folder / "model" / "weights-0.safetensors"
    raw = bytearray(member.read_bytes())
    length = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + length])
    header["fc1.bias"]["data_offsets"][1] += 4  # overlaps the next tensor
    new = json.dumps(header, separators=(",", ":")).encode()
    new += b" " * (length - len(new))
    raw[8 : 8 + length] = new
    member.write_bytes(bytes(raw))
    manifest = json.loads((folder / "modelsafe.json").read_text())
    import hashlib

    manifest["members"]["model/weights-0.safetensors"]["sha256"] = hashlib.sha256(raw).hexdigest()
    (folder / "modelsafe.json").write_text(json.dumps(manifest))
    with pytest.raises(ms.FormatError, match="not a valid safetensors file: entry 'fc1.bias' spans"):
        ms.load(folder)


def test_tampered_architecture_is_refused_before_import(tmp_path):
    folder = tmp_path / "lin"
    ms.save(torch.nn.Linear(3, 2), folder)
    manifest_path = folder / "modelsafe.json"
    original = json.loads(manifest_path.read_text())
    for bad, error, needle in (
        (["os", "system"], UntrustedContentError, "os.system, which can run code"),
        (["torch.hub", "load"], UntrustedContentError, "can run code"),
    ):
        manifest = json.loads(json.dumps(original))
        if bad[0] == "os":
            manifest["components"]["model"]["data"]["architecture"]["class"] = bad
        else:
            manifest["components"]["model"]["data"]["architecture"]["kwargs"]["device"] = {"$ref": bad}
        manifest_path.write_text(json.dumps(manifest))
        with pytest.raises(error, match=needle):
            ms.load(folder)


def test_missing_class_module_names_module_class_and_fix(tmp_path, fresh):
    # A class from an *installed* package (not bundled) that is absent where the model is loaded.
    site = tmp_path / "site"
    (site / "fakenets").mkdir(parents=True)
    (site / "fakenets" / "__init__.py").write_text(MODELS)
    dist = site / "fakenets-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fakenets\nVersion: 1.0\n")
    (dist / "top_level.txt").write_text("fakenets\n")
    (dist / "RECORD").write_text("fakenets/__init__.py,,\n")
    fresh("""
        import sys; sys.path.insert(0, "site")
        import torch, numpy as np, modelsafe as ms
        from fakenets import MLP
        ms.save(MLP(5), "m.msafe", sample=np.ones((4, 5), np.float32), export=True)
        m = ms.inspect("m.msafe")
        assert m.code == () and m.environment["packages"]["fakenets"]["version"] == "1.0", m.environment
    """)
    out = _fresh_json(fresh, """
        import warnings, numpy as np, modelsafe as ms
        try:
            ms.load("m.msafe", program="class")
        except ms.EnvironmentMismatchError as exc:
            err = str(exc)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            b = ms.load("m.msafe")
        out = {"err": err, "fallback": [type(w.message).__name__ for w in caught],
               "type": type(b.model).__name__, "pred": b.predict(np.ones((3, 5), np.float32)).shape}
    """)
    assert "fakenets.MLP" in out["err"] and "'fakenets' is not importable here" in out["err"]
    assert "Install the package that provides it" in out["err"]
    assert "ProgramFallbackWarning" in out["fallback"]
    assert out["type"] == "GraphModule" and out["pred"] == [3, 3]


# ---------------------------------------------------------------------------------------
# the exported program
# ---------------------------------------------------------------------------------------


def test_exported_program_round_trip_and_audit(tmp_path, fresh, models):
    torch.manual_seed(7)
    folder = tmp_path / "exp"
    manifest = ms.save(models.MLP(5, hidden=6), folder, sample=_x(), export=True)
    export = manifest.components["model"].data["export"]
    assert export["program"] == "program/program.json"
    assert not [m for m in manifest.members if m.endswith((".pt", ".pkl"))]
    program = json.loads((folder / "model" / "program" / "program.json").read_text())
    assert program["guards_code"] == []
    out = _fresh_json(fresh, """
        import numpy as np, modelsafe as ms
        b = ms.load("exp", program="exported")
        out = [type(b.model).__name__, b.verify().ok, list(b.predict(np.ones((1, 5), np.float32)).shape)]
    """)
    assert out == ["GraphModule", True, [1, 3]]
    with pytest.raises(SaveError, match="export=True needs a sample"):
        ms.save(models.MLP(5), tmp_path / "x.msafe", export=True)

    import hashlib

    def tamper(change) -> None:
        graph = json.loads(json.dumps(program))
        change(graph)
        raw = json.dumps(graph).encode()
        (folder / "model" / "program" / "program.json").write_bytes(raw)
        manifest_path = folder / "modelsafe.json"
        m = json.loads(manifest_path.read_text())
        m["members"]["model/program/program.json"] = {"size": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
        manifest_path.write_text(json.dumps(m))

    def guards(graph):
        graph["guards_code"] = ["__import__('os').system('echo pwned')"]

    def target(graph):
        graph["graph_module"]["graph"]["nodes"][0]["target"] = "torch.hub.load"

    def sympy(graph):
        graph["range_constraints"] = {"s0": {"min_val": 2, "max_val": None}}
        graph["graph_module"]["graph"]["sym_int_values"] = {
            "s0": {"as_expr": {"expr_str": "__import__('os').system('x')", "hint": None}}}

    for change, needle in ((guards, "guards code"), (target, "torch.hub.load"), (sympy, "integer arithmetic")):
        tamper(change)
        with pytest.raises(UntrustedContentError, match=needle):
            ms.load(folder, program="exported")


def test_program_audit_accepts_what_export_writes():
    from modelsafe.flavors.torch.export import _sympy_ok

    assert _sympy_ok("Mul(Integer(3), Symbol('s77', positive=True, integer=True))")
    assert _sympy_ok("FloorDiv(Symbol('s0', integer=True), Integer(-2))")
    assert not _sympy_ok("Symbol('s0').__class__")
    assert not _sympy_ok("eval('1')")
    assert not _sympy_ok("Integer(1); import os")


def test_invalid_program_option(tmp_path, models):
    ms.save(models.MLP(5), tmp_path / "m.msafe")
    with pytest.raises(ValueError, match="Invalid `program`"):
        ms.load(tmp_path / "m.msafe", program="both")
    with pytest.raises(ms.FormatError, match="holds no exported program"):
        ms.load(tmp_path / "m.msafe", program="exported")


def test_predict_on_weights_only_artifact_explains(tmp_path, models):
    ms.save(models.MLP(5).state_dict(), tmp_path / "sd.msafe")
    bundle = ms.load(tmp_path / "sd.msafe")
    with pytest.raises(FlavorError, match="weights only"):
        bundle.predict(_x())
    bundle.close()


def test_load_report_is_none_for_a_full_match(tmp_path, models):
    ms.save(models.MLP(5), tmp_path / "m.msafe")
    bundle = ms.load(tmp_path / "m.msafe", strict=False)
    assert torch_flavor.load_report(bundle.model) is None
    bundle.close()


def test_mismatch_error_class_is_the_spec_one():
    assert issubclass(ArchitectureMismatchError, ms.ModelsafeError)


def test_mapped_and_copied_loads_agree(tmp_path, models):
    path = tmp_path / "m.msafe"
    ms.save(models.MLP(5), path, sample=_x())
    mapped, copied = ms.load(path), ms.load(path, mmap=False)
    for name, tensor in mapped.model.state_dict().items():
        assert torch.equal(tensor, copied.model.state_dict()[name])
    with torch.no_grad():
        mapped.model.fc1.weight.add_(1.0)  # the map is private: the artifact does not change
    assert ms.verify(path).ok
    with pytest.raises(ValueError, match="Invalid `mmap`"):
        ms.load(path, mmap="yes")
    mapped.close()
    copied.close()


def test_constructor_arguments_are_recorded_whatever_the_import_order(tmp_path, fresh):
    (tmp_path / "plainnet.py").write_text(MODELS)
    out = _fresh_json(fresh, """
        import sys
        import modelsafe as ms          # before torch: the recorder is armed, torch is not imported
        assert "torch" not in sys.modules
        import torch
        from plainnet import NoAttrs    # its arguments are stored on no attribute
        m = ms.save(NoAttrs(5, 2), "n.msafe", sample=torch.ones(3, 5))
        out = [m.components["model"].data["architecture"]["args_from"], ms.load("n.msafe").verify().ok]
    """)
    assert out == ["recorded", True]
