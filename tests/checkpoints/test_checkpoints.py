"""ms.Checkpointer with PyTorch: snapshots, retention, exact resume in new processes, async writes, bad input.

The model classes and the training step live in a module file written into ``tmp_path``
under a unique name: this process imports it from there, and fresh processes (working
directory ``tmp_path``) import it as a local module, the way ``train.py`` imports ``models.py``.
"""

from __future__ import annotations

import copy
import importlib
import json
import math
import sys
import textwrap
import uuid
import warnings
from pathlib import Path

import numpy as np
import pytest

import modelsafe as ms
from modelsafe.checkpoints.checkpointer import CheckpointInfo, MetricWarning, Restored
from modelsafe.errors import FormatError

torch = pytest.importorskip("torch")

TRAIN = '''
import random

import numpy as np
import torch
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, d_in=6, hidden=16, d_out=2, p=0.3):
        super().__init__()
        self.fc1 = nn.Linear(d_in, hidden)
        self.drop = nn.Dropout(p)
        self.fc2 = nn.Linear(hidden, d_out)

    def forward(self, x):
        return self.fc2(self.drop(torch.relu(self.fc1(x))))


class Renamed(nn.Module):
    def __init__(self, d_in=6, hidden=16, d_out=2):
        super().__init__()
        self.fc1 = nn.Linear(d_in, hidden)
        self.head = nn.Linear(hidden, d_out)

    def forward(self, x):
        return self.head(torch.relu(self.fc1(x)))


def deterministic(seed=0):
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build(seed=0, hidden=16, lr=0.05):
    torch.manual_seed(seed)
    model = Net(hidden=hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5)
    return model, optimizer, scheduler


def train_step(model, optimizer, scheduler):
    """One step whose data come from Python's, numpy's and torch's generators; dropout is on."""
    model.train()
    x = torch.randn(32, 6) * (1.0 + random.random()) + float(np.random.normal())
    y = x[:, :2].sin()
    loss = (model(x) - y).pow(2).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    scheduler.step()
    return float(loss.detach())


def save_params(model, path):
    np.savez(path, **{k: v.detach().cpu().numpy() for k, v in model.state_dict().items()})
'''


@pytest.fixture
def train(tmp_path, monkeypatch):
    """The TRAIN module, written to tmp_path under a unique name and imported from there."""
    name = f"ckm_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{name}.py").write_text(TRAIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module(name)
    yield module
    sys.modules.pop(name, None)


def _fresh_json(fresh, code: str, **kwargs):
    proc = fresh(textwrap.dedent(code) + "\nimport json as _j; print('@@' + _j.dumps(out))\n", **kwargs)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("@@")][-1]
    return json.loads(line[2:])


def _state_copy(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".msafe"))


# ---------------------------------------------------------------------------------------
# the API and what is on disk
# ---------------------------------------------------------------------------------------


def test_save_list_restore_and_every_checkpoint_is_an_artifact(tmp_path, train, fresh):
    model, opt, sched = train.build()
    ck = ms.Checkpointer(tmp_path / "ck", monitor="val_loss", keep_best=1, keep_last=2)
    saved = []
    for step, val in enumerate([0.9, 0.4, 0.6, 0.7]):
        train.train_step(model, opt, sched)
        info = ck.save(step, model=model, optimizer=opt, scheduler=sched, metrics={"val_loss": val, "acc": 1 - val},
                       extra={"epoch": step, "note": "x", "seen": torch.arange(3) + step})
        saved.append(info)
        assert isinstance(info, CheckpointInfo) and info.path.is_file() and info.size == info.path.stat().st_size
    listed = ck.list()
    assert [c.step for c in listed] == [1, 2, 3]  # best (step 1) + the last two
    assert ck.best.step == 1 and ck.best.metrics == {"val_loss": 0.4, "acc": 0.6}
    assert ck.latest.step == 3 and ck.latest.path == tmp_path / "ck" / "step-0000000003.msafe"
    assert listed[0].time <= listed[1].time <= listed[2].time
    assert _files(tmp_path / "ck") == ["step-0000000001.msafe", "step-0000000002.msafe", "step-0000000003.msafe"]
    assert listed[0].to_dict()["metrics"] == {"val_loss": 0.4, "acc": 0.6}

    manifest = ms.inspect(ck.best.path)  # an ordinary artifact: the manifest says what it is
    facts = manifest.metadata["modelsafe.checkpoint"]
    assert (facts["step"], facts["metrics"], manifest.flavor) == (1, {"val_loss": 0.4, "acc": 0.6}, "torch")
    assert sorted(facts["training"]["parts"]) == ["extra", "optimizer", "scheduler"]

    fresh_model, fresh_opt, fresh_sched = train.build(seed=7)
    restored = ck.restore(model=fresh_model, optimizer=fresh_opt, scheduler=fresh_sched, which=2)
    assert isinstance(restored, Restored) and (restored.step, restored.metrics["val_loss"]) == (2, 0.6)
    assert restored.extra["epoch"] == 2 and torch.equal(restored.extra["seen"], torch.arange(3) + 2)
    assert fresh_sched.last_epoch == 3 and fresh_opt.param_groups[0]["lr"] == opt.param_groups[0]["lr"]

    # ms.load gives the model back in a new process (class from the local module, bundled too).
    out = _fresh_json(fresh, f"""
        import modelsafe as ms
        b = ms.load({str(ck.latest.path)!r})
        out = {{"type": type(b.model).__name__, "training": b.model.training, "hidden": b.model.fc1.out_features,
                "verify": b.verify().ok}}
    """)
    assert out == {"type": "Net", "training": False, "hidden": 16, "verify": True}


def test_restore_returns_everything_and_keeps_optimizer_bound_to_parameters(tmp_path, train):
    model, opt, sched = train.build()
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=7)
    for _ in range(4):
        train.train_step(model, opt, sched)
    ck = ms.Checkpointer(tmp_path / "ck")
    ck.save(4, model=model, optimizer=opt, scheduler=sched, scaler=scaler)
    expected_params, expected_opt = _state_copy(model), copy.deepcopy(opt.state_dict())

    model2, opt2, sched2 = train.build(seed=3)
    scaler2 = torch.amp.GradScaler("cpu")
    params_before = [id(p) for p in model2.parameters()]
    ck.restore(model=model2, optimizer=opt2, scheduler=sched2, scaler=scaler2)
    assert [id(p) for p in model2.parameters()] == params_before  # copied in, not replaced
    assert _same(_state_copy(model2), expected_params)
    restored_opt = opt2.state_dict()
    for i, state in expected_opt["state"].items():
        assert all(torch.equal(state[k], restored_opt["state"][i][k]) for k in state)
    assert restored_opt["param_groups"] == expected_opt["param_groups"]
    assert scaler2.state_dict() == scaler.state_dict()
    assert sched2.state_dict() == sched.state_dict()
    # the optimizer still updates the model's own parameters
    train.train_step(model2, opt2, sched2)
    assert not torch.equal(model2.fc1.weight, expected_params["fc1.weight"])


def test_rng_states_are_restored(tmp_path, train):
    import random

    model, opt, sched = train.build()
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    ck = ms.Checkpointer(tmp_path / "ck")
    ck.save(0, model=model)
    expected = (random.random(), float(np.random.normal()), torch.rand(3))
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    ck.restore(model=model)
    assert (random.random(), float(np.random.normal())) == expected[:2] and torch.equal(torch.rand(3), expected[2])


# ---------------------------------------------------------------------------------------
# snapshot semantics
# ---------------------------------------------------------------------------------------


def test_best_checkpoint_is_a_snapshot_not_a_reference(tmp_path, train):
    """The seeds' bug: a kept 'best' state_dict() keeps changing. Here it never does."""
    model, opt, sched = train.build()
    ck = ms.Checkpointer(tmp_path / "ck", monitor="val_loss", keep_best=1, keep_last=1)
    best_params = best_opt = None
    for step in range(8):
        train.train_step(model, opt, sched)
        val = 0.1 if step == 2 else 1.0 + step
        ck.save(step, model=model, optimizer=opt, metrics={"val_loss": val})
        if step == 2:
            best_params = copy.deepcopy(model.state_dict())
            best_opt = copy.deepcopy(opt.state_dict())
    assert ck.best.step == 2
    model2, opt2, _ = train.build(seed=1)
    ck.restore(model=model2, optimizer=opt2, which="best")
    assert _same(_state_copy(model2), best_params)
    assert not _same(_state_copy(model2), _state_copy(model))
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], best_opt["state"][0]["exp_avg"])


def test_async_save_is_a_snapshot_while_training_goes_on(tmp_path, train):
    # ~100 MB per checkpoint (weights + Adam moments), so the write is still running when training resumes.
    torch.manual_seed(0)
    model = train.Net(d_in=2048, hidden=2048, d_out=2048)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(8, 2048)
    model(x).pow(2).mean().backward()
    opt.step()
    ck = ms.Checkpointer(tmp_path / "ck", async_save=True)
    at_save, opt_at_save = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    info = ck.save(1, model=model, optimizer=opt, metrics={"loss": 1.0})
    with torch.no_grad():  # change the weights in place at once, while the write is pending
        for p in model.parameters():
            p.add_(1.0)
    still_pending = not info.path.exists()
    for _ in range(2):  # and keep training (Adam's moments change in place too)
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
    ck.wait()
    assert still_pending, "the background write finished before training changed the weights; the test proves nothing"
    assert info.path.is_file() and ck.latest.step == 1
    model2 = train.Net(d_in=2048, hidden=2048, d_out=2048)
    opt2 = torch.optim.Adam(model2.parameters(), lr=1e-3)
    ck.restore(model=model2, optimizer=opt2)
    assert _same(_state_copy(model2), at_save)
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt_at_save["state"][0]["exp_avg"])
    assert opt2.state_dict()["state"][0]["step"] == opt_at_save["state"][0]["step"] == 1


def test_async_second_save_waits_for_the_first_and_list_sees_both(tmp_path, train):
    model, opt, sched = train.build(hidden=512)
    ck = ms.Checkpointer(tmp_path / "ck", async_save=True, keep_last=3)
    first = ck.save(1, model=model, optimizer=opt)
    train.train_step(model, opt, sched)
    ck.save(2, model=model, optimizer=opt)
    assert first.path.is_file()  # the second save began only after the first write ended
    assert [c.step for c in ck.list()] == [1, 2]  # list() waits for the pending write


# ---------------------------------------------------------------------------------------
# retention
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["min", "max"])
def test_retention_keeps_best_k_and_last_k_and_never_ranks_nan_or_missing(tmp_path, train, mode):
    model, _, _ = train.build()
    sign = 1 if mode == "min" else -1
    values = [5, 3, float("nan"), 4, None, 6, 7, 8]
    ck = ms.Checkpointer(tmp_path / "ck", monitor="val", mode=mode, keep_best=2, keep_last=2)
    for step, value in enumerate(values):
        metrics = {"other": 1.0} if value is None else {"val": sign * value}
        if value is None or math.isnan(value):
            with pytest.warns(MetricWarning, match=r"'val' of checkpoint step \d.*can never be the best"):
                ck.save(step, model=model, metrics=metrics)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("error", MetricWarning)
                ck.save(step, model=model, metrics=metrics)
        on_disk = {c.step for c in ck.list()}
        assert step in on_disk  # the newest is never deleted
        finite = [(v, s) for s, v in enumerate(values[: step + 1]) if v is not None and not math.isnan(v)]
        assert min(finite)[1] in on_disk  # nor the best so far (a smaller raw value is better in both modes)
    assert [c.step for c in ck.list()] == [1, 3, 6, 7]  # best two (3, 4) + last two
    assert ck.best.step == 1
    assert len(_files(tmp_path / "ck")) == 4


@pytest.mark.parametrize("mode", ["min", "max"])
def test_the_index_records_monitor_and_mode_so_best_works_in_a_fresh_process(tmp_path, train, fresh, mode):
    model, _, _ = train.build()
    ck = ms.Checkpointer(tmp_path / "ck", monitor="val_acc", mode=mode, keep_best=1, keep_last=1)
    for step, value in enumerate([0.5, 0.9, 0.1, 0.7]):
        ck.save(step, model=model, metrics={"val_acc": value})
    ck.close()
    best = 2 if mode == "min" else 1
    index = json.loads((tmp_path / "ck" / "checkpoints.json").read_text())
    assert (index["monitor"], index["mode"]) == ("val_acc", mode)
    out = _fresh_json(fresh, f"""
        import json, os, {train.__name__} as train, modelsafe as ms
        model, _, _ = train.build(seed=1)
        ck = ms.Checkpointer("ck")          # no monitor given: the index says how they are ranked
        out = {{"best": ck.best.step, "restored": ck.restore(model=model, which="best").step}}
        ck.save(4, model=model, metrics={{"val_acc": 0.3}})   # retention still keeps the best
        out["kept"] = [c.step for c in ck.list()]
        ck.close()
        os.remove("ck/checkpoints.json")     # a lost index is rebuilt from the checkpoints' own facts
        out["rebuilt"] = ms.Checkpointer("ck").best.step
    """)
    assert out == {"best": best, "restored": best, "kept": [best, 4], "rebuilt": best}


def test_all_nan_metrics_give_no_best(tmp_path, train):
    model, _, _ = train.build()
    ck = ms.Checkpointer(tmp_path / "ck", monitor="val")
    with pytest.warns(MetricWarning, match="is NaN"):
        ck.save(0, model=model, metrics={"val": float("nan")})
    assert ck.best is None and ck.latest.step == 0 and math.isnan(ck.latest.metrics["val"])
    with pytest.raises(FormatError, match=r"No checkpoint .* has a finite 'val' metric"):
        ck.restore(model=model, which="best")


def test_saving_a_step_again_keeps_both_and_latest_is_the_newest_save(tmp_path, train):
    model, opt, sched = train.build()
    ck = ms.Checkpointer(tmp_path / "ck", keep_last=3)
    ck.save(5, model=model)
    ck.save(6, model=model)
    train.train_step(model, opt, sched)
    again = ck.save(5, model=model)  # e.g. resumed from step 4 and reached step 5 again
    assert again.path.name == "step-0000000005.3.msafe"
    assert ck.latest.path == again.path and ck.latest.step == 5
    restored_into = train.build(seed=9)[0]
    ck.restore(model=restored_into, which=5)
    assert _same(_state_copy(restored_into), _state_copy(model))


# ---------------------------------------------------------------------------------------
# exact resume in new processes
# ---------------------------------------------------------------------------------------


def test_resume_in_a_new_process_is_bitwise_identical(tmp_path, train, fresh):
    n, k = 12, 5
    setup = f"import {train.__name__} as t, modelsafe as ms, numpy as np, torch, random"
    fresh(f"""
        {setup}
        t.deterministic()
        model, opt, sched = t.build()
        for _ in range({n}):
            t.train_step(model, opt, sched)
        t.save_params(model, "straight.npz")
    """)
    # First part: async save, then the process just ends: exit flushes the pending write.
    fresh(f"""
        {setup}
        t.deterministic()
        model, opt, sched = t.build()
        for _ in range({k}):
            t.train_step(model, opt, sched)
        ck = ms.Checkpointer("ck", async_save=True)
        ck.save({k}, model=model, optimizer=opt, scheduler=sched, metrics={{"loss": 0.5}})
    """)
    out = _fresh_json(fresh, f"""
        {setup}
        t.deterministic(seed=123)  # other seeds, other initial weights: restore must set everything
        model, opt, sched = t.build(seed=42)
        ck = ms.Checkpointer("ck")
        restored = ck.restore(model=model, optimizer=opt, scheduler=sched)
        for _ in range({n} - restored.step):
            t.train_step(model, opt, sched)
        t.save_params(model, "resumed.npz")
        out = {{"step": restored.step, "lr": sched.get_last_lr()}}
    """)
    assert out["step"] == k
    straight, resumed = np.load(tmp_path / "straight.npz"), np.load(tmp_path / "resumed.npz")
    assert sorted(straight.files) == sorted(resumed.files)
    for name in straight.files:
        assert straight[name].dtype == resumed[name].dtype
        assert straight[name].tobytes() == resumed[name].tobytes(), name
    assert out["lr"] == [0.05 * 0.5 ** (n // 3)]


def test_reading_a_checkpoint_directory_imports_no_framework(tmp_path, train, fresh):
    model, opt, sched = train.build()
    ms.Checkpointer(tmp_path / "ck", monitor="loss").save(2, model=model, optimizer=opt, metrics={"loss": 0.5})
    out = _fresh_json(fresh, """
        import sys, modelsafe as ms
        ck = ms.Checkpointer("ck", monitor="loss")
        listed = [(c.step, c.metrics) for c in ck.list()]
        facts = ms.inspect(ck.best.path).metadata["modelsafe.checkpoint"]
        out = {"listed": listed, "step": facts["step"],
               "imported": sorted(m for m in ("torch", "tensorflow", "keras", "sklearn") if m in sys.modules)}
    """)
    assert out == {"listed": [[2, {"loss": 0.5}]], "step": 2, "imported": []}
