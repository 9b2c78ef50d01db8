"""A new run's first async save defers the parameters too: reads go on, writes wait, unseen writes fail it.

As in test_deferred.py, what is held is observed from the order of events between the
copy's release and the call that waited for it; no timing is asserted.
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from modelsafe.checkpoints.deferred import Deferral
from modelsafe.errors import SaveError

torch = pytest.importorskip("torch")


def _bytes(tensor):
    return tensor.detach().reshape(-1).view(torch.uint8).numpy()


def _held(deferral, change) -> list[str]:
    """Run ``change`` with the deferral held; the events show whether it waited for the release."""
    events: list[str] = []
    deferral.hold()

    def release():
        events.append("released")
        deferral.release()

    timer = threading.Timer(0.3, release)
    timer.start()
    change()
    events.append("changed")
    timer.join()
    deferral.remove()
    return events


def test_the_parameters_are_covered_and_the_buffers_are_not(trained):
    model, opt = trained
    deferral = Deferral.of(model, opt, parameters=True)
    for p in model.parameters():
        assert deferral.covers(_bytes(p))
    for b in model.buffers():  # BatchNorm's statistics change inside the forward pass: copied at once
        assert not deferral.covers(_bytes(b))
    assert not Deferral.of(model, opt).covers(_bytes(next(model.parameters())))  # later saves copy them at once


def test_a_model_without_optimizer_state_still_defers_its_parameters(trained):
    model, _ = trained
    fresh_opt = torch.optim.SGD(model.parameters(), lr=0.1)  # SGD without momentum keeps no state
    deferral = Deferral.of(model, fresh_opt, parameters=True)
    assert deferral is not None and deferral.covers(_bytes(next(model.parameters())))
    assert Deferral.of(model, fresh_opt) is None


def test_reading_the_parameters_is_not_held(trained):
    model, opt = trained
    deferral = Deferral.of(model, opt, parameters=True)
    deferral.hold()
    timer = threading.Timer(120, deferral.release)  # only if something waited wrongly
    timer.start()
    loss = model(torch.randn(8, 64)).pow(2).mean()  # reads every weight, writes BatchNorm statistics
    loss.backward()
    total = sum(p.sum() for p in model.parameters()) + torch.cat([p.reshape(-1) for p in model.parameters()]).sum()
    opt.zero_grad()
    clone = next(model.parameters()).clone()
    assert deferral.changed() == [] and total.isfinite() and clone.shape
    assert timer.is_alive()
    timer.cancel()
    deferral.release()
    deferral.remove()


WRITES = {
    "add_": lambda p: p.add_(1),
    "operator": lambda p: p.__imul__(2),
    "copy_": lambda p: p.copy_(torch.zeros_like(p)),
    "out=": lambda p: torch.add(p, 1, out=p),
    "aten overload": lambda p: torch.ops.aten.mul_.Scalar(p, 0.5),
    "data alias": lambda p: p.data.clamp_(-0.01, 0.01),
    "numpy": lambda p: p.detach().numpy().__setitem__(..., 3),
    "setitem": lambda p: p.__setitem__(0, 0.0),
    "init": lambda p: torch.nn.init.zeros_(p),
    "foreach": lambda p: torch._foreach_mul_([p], 0.5),
}


@pytest.mark.parametrize("how", sorted(WRITES))
def test_a_write_to_a_parameter_waits_for_the_copy(trained, how):
    model, opt = trained
    weight = model[0].weight
    deferral = Deferral.of(model, opt, parameters=True)
    with torch.no_grad():
        events = _held(deferral, lambda: WRITES[how](weight))
    assert events == ["released", "changed"]
    assert torch._C._len_torch_function_stack() == 0


def test_load_state_dict_and_the_optimizer_step_wait_too(trained):
    model, opt = trained
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    assert _held(Deferral.of(model, opt, parameters=True), lambda: model.load_state_dict(saved)) == [
        "released", "changed"]
    assert _held(Deferral.of(model, opt, parameters=True), opt.step) == ["released", "changed"]


def test_a_change_no_hold_sees_is_named_by_the_version_check(trained):
    """Another thread's in-place change passes the (per-thread) mode: the version counter tells."""
    model, opt = trained
    deferral = Deferral.of(model, opt, parameters=True)
    deferral.hold()
    worker = threading.Thread(target=_bump, args=(model[2].bias,))
    worker.start()
    worker.join()
    deferral.release()
    _bump(model[2].weight)  # after the release: not a change of the snapshot
    assert deferral.changed() == ["2.bias"]
    deferral.remove()


def _bump(p):
    with torch.no_grad():
        p.add_(1)


UNSEEN_CHANGE = """
    import json, threading, torch, modelsafe as ms
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(512, 4096), torch.nn.Linear(4096, 512))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(8, 512)).sum().backward(); opt.step()
    ck = ms.Checkpointer("ck", async_save=True)
    from modelsafe.checkpoints import snapshot as snap
    gate = threading.Event()
    copy = snap.HostSnapshot.copy_deferred
    def slow_copy(self):                                     # the copy waits until the other thread wrote
        gate.wait(30); copy(self)
    snap.HostSnapshot.copy_deferred = slow_copy
    ck.save(1, model=model, optimizer=opt)
    def clip():                                              # another thread: the mode is not on its stack
        with torch.no_grad():
            model[0].weight.clamp_(-0.001, 0.001)
        gate.set()
    threading.Thread(target=clip).start()
    try:
        ck.wait()
        print(json.dumps({"error": None}))
    except ms.SaveError as exc:
        print(json.dumps({"error": str(exc), "listed": [c.step for c in ck.list()]}))
"""


def test_a_first_save_whose_parameters_changed_unseen_is_not_written(fresh, tmp_path):
    out = json.loads(fresh(UNSEEN_CHANGE).stdout.strip().splitlines()[-1])
    assert out["error"] and "0.weight" in out["error"] and "was not written" in out["error"]
    assert out["listed"] == []
    assert not any(p.suffix == ".msafe" for p in (tmp_path / "ck").iterdir())


RESUMED = """
    import json, torch, modelsafe as ms
    torch.manual_seed(0)
    model = torch.nn.Linear(1024, 1024)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(4, 1024)).sum().backward(); opt.step()
    first = ms.Checkpointer("ck", async_save=True)
    first.save(1, model=model, optimizer=opt)
    new_run = first._pending._deferral._written is not None
    first.save(2, model=model, optimizer=opt)                # a later save: its buffers exist
    later = first._pending._deferral._written is not None
    first.close()
    resumed = ms.Checkpointer("ck", async_save=True)          # a resumed run makes them when created
    resumed._join_prefetch()
    resumed.save(3, model=model, optimizer=opt)
    print(json.dumps({"new run": new_run, "later": later, "resumed": resumed._pending._deferral._written is not None}))
    resumed.close()
"""


def test_only_the_first_save_into_fresh_buffers_defers_the_parameters(fresh):
    out = json.loads(fresh(RESUMED).stdout.strip().splitlines()[-1])
    assert out == {"new run": True, "later": False, "resumed": False}


def test_the_deferred_pieces_equal_the_parameters_at_the_call(trained, monkeypatch):
    """Placed now, copied later: what lands is the value at the call, even after held writes."""
    from modelsafe.checkpoints import snapshot as _snapshot
    from modelsafe.checkpoints.snapshot import HostSnapshot

    monkeypatch.setattr(_snapshot, "_BUFFERED", 4)
    model, opt = trained
    weight = model[0].weight
    at_call = _bytes(weight).copy()
    deferral = Deferral.of(model, opt, parameters=True)
    snap = HostSnapshot({}, defer=deferral.covers)
    snap.add("w", [_bytes(weight)], size=at_call.nbytes)
    assert snap.deferred_nbytes == at_call.nbytes
    deferral.hold()
    done = threading.Event()

    def copy_then_release():
        snap.copy_deferred()
        deferral.release()
        done.set()

    threading.Timer(0.2, copy_then_release).start()
    with torch.no_grad():
        weight.mul_(-3)  # held until copied
    assert done.is_set()
    deferral.remove()
    assert np.array_equal(np.asarray(snap._data["w"]), at_call)
    assert deferral.changed() == []  # changed after the copy was made and released: the checkpoint stands


WARM = """
    import json, os, sys, modelsafe as ms
    if os.environ["FRAMEWORK"] == "torch":
        import torch
    from modelsafe.checks import environment
    ck = ms.Checkpointer("ck", async_save=True)
    ck._join_prefetch()                                        # the loop trains meanwhile
    print(json.dumps({"distributions read": environment._read_packages_distributions.cache_info().currsize,
                      "torch flavor": "modelsafe.flavors.torch.flavor" in sys.modules,
                      "torch": "torch" in sys.modules, "sync": ms.Checkpointer("sync")._warm is None}))
    ck.close()
"""


@pytest.mark.parametrize("framework", ["torch", "none"])
def test_an_async_checkpointer_reads_what_a_first_save_needs_in_the_background(fresh, framework):
    out = json.loads(fresh(WARM, env={"FRAMEWORK": framework}).stdout.strip().splitlines()[-1])
    assert out == {"distributions read": 1, "torch flavor": framework == "torch", "torch": framework == "torch",
                   "sync": True}


def test_which_calls_count_as_writes():
    from modelsafe.checkpoints.deferred import _writes

    writes = [torch.Tensor.add_, torch.Tensor.__iadd__, torch.Tensor.__imul__, torch.Tensor.__setitem__,
              torch.Tensor.numpy, torch.Tensor.data_ptr, torch._foreach_mul_, torch.ops.aten.mul_.Scalar]
    reads = [torch.Tensor.__int__, torch.Tensor.__iter__, torch.Tensor.__index__, torch.Tensor.__add__,
             torch.nn.functional.linear, torch.Tensor.sum, torch.ops.aten.mul.Scalar, torch.cat]
    assert [f for f in writes if not _writes(f, {})] == []
    assert [f for f in reads if _writes(f, {})] == []
    assert _writes(torch.add, {"out": None})
