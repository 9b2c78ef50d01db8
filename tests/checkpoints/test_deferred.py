"""Async checkpoints copy the optimizer's state after save returns, and hold whatever would change it meanwhile.

What is held is observed from the outside: the order of events between the copy being
released and the step or the call that waited for it (no timings are asserted).
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from modelsafe.checkpoints import snapshot as _snapshot
from modelsafe.checkpoints.deferred import Deferral
from modelsafe.checkpoints.snapshot import HostSnapshot

torch = pytest.importorskip("torch")


def _state_tensors(opt):
    return [t for per_param in opt.state.values() for t in per_param.values()]


def _numpy_bytes(tensor):
    return tensor.detach().reshape(-1).view(torch.uint8).numpy()


def _release_later(deferral, events, seconds=0.3):
    def release():
        events.append("released")
        deferral.release()

    timer = threading.Timer(seconds, release)
    timer.start()
    return timer


def test_only_the_optimizers_state_is_covered(trained):
    model, opt = trained
    deferral = Deferral.of(model, opt)
    assert deferral is not None
    for tensor in _state_tensors(opt):
        assert deferral.covers(_numpy_bytes(tensor))
        assert deferral.covers(_numpy_bytes(tensor)[1:])  # a piece inside it
    for tensor in [*model.parameters(), *model.buffers()]:
        assert not deferral.covers(_numpy_bytes(tensor))
    assert not deferral.covers(np.zeros(1 << 16, dtype=np.uint8))


def test_nothing_is_deferred_where_it_could_not_be_held(trained):
    model, opt = trained
    assert Deferral.of(model, torch.optim.Adam(model.parameters())) is None  # no state before its first step
    assert Deferral.of(model, object()) is None  # not a torch optimizer: no step hooks
    with torch.device("cpu"):  # a function mode of the user's own: ours could be taken off the stack
        assert Deferral.of(model, opt) is None
    shared = next(model.parameters())
    opt.state[shared]["kept"] = shared  # a state tensor that is the module's own memory
    deferral = Deferral.of(model, opt)
    assert not deferral.covers(_numpy_bytes(shared))
    assert deferral.covers(_numpy_bytes(opt.state[shared]["exp_avg"]))


def test_the_next_step_waits_for_the_copy(trained):
    model, opt = trained
    deferral = Deferral.of(model, opt)
    events: list[str] = []
    opt.register_step_post_hook(lambda *args: events.append("stepped"))
    model(torch.randn(4, 64)).sum().backward()
    deferral.hold()
    timer = _release_later(deferral, events)
    opt.step()
    timer.join()
    assert events == ["released", "stepped"]
    assert torch._C._len_torch_function_stack() == 0  # the step left the mode
    deferral.remove()
    assert not opt._optimizer_step_pre_hooks


def test_forward_backward_and_the_weights_are_not_held(trained):
    model, opt = trained
    deferral = Deferral.of(model, opt)
    events: list[str] = []
    deferral.hold()
    timer = _release_later(deferral, events, seconds=120)  # only if something waited wrongly
    model(torch.randn(4, 64)).sum().backward()  # reads the weights, writes gradients and BatchNorm statistics
    with torch.no_grad():
        next(model.parameters()).add_(1)  # the module's tensors were copied before save returned
    opt.zero_grad()
    assert events == []
    timer.cancel()
    deferral.release()
    opt.step()
    deferral.remove()


@pytest.mark.parametrize("change", ["zero_", "copy_", "numpy", "data", "load_state_dict", "foreach"])
def test_a_torch_call_reaching_the_state_waits_for_the_copy(trained, change):
    model, opt = trained
    moment = opt.state[next(model.parameters())]["exp_avg"]
    deferral = Deferral.of(model, opt)
    events: list[str] = []
    deferral.hold()
    timer = _release_later(deferral, events)
    with torch.no_grad():
        if change == "zero_":
            moment.zero_()
        elif change == "copy_":
            moment.copy_(torch.ones_like(moment))
        elif change == "numpy":
            moment.numpy()[:] = 3
        elif change == "data":
            moment.data.add_(1)
        elif change == "load_state_dict":
            opt.load_state_dict(opt.state_dict())  # reads the saved tensors to place them
        else:
            torch._foreach_mul_([t for t in _state_tensors(opt) if t.dim()], 0.5)
    events.append("changed")
    timer.join()
    deferral.remove()
    assert events[-2:] == ["released", "changed"]
    assert torch._C._len_torch_function_stack() == 0


def test_a_mode_entered_after_save_stays_above_ours_until_it_is_left(trained):
    model, opt = trained
    deferral = Deferral.of(model, opt)
    deferral.hold()
    deferral.release()
    with torch.device("cpu"):
        deferral.remove()  # ours is not on top: it stays, passing calls on, and so does the step hook
        assert torch._C._len_torch_function_stack() == 2
        assert torch.zeros(2).device.type == "cpu"
    assert torch._C._len_torch_function_stack() == 1
    model(torch.randn(2, 64))  # passes through the mode that is no longer needed
    opt.step()  # the step's hook leaves it
    assert torch._C._len_torch_function_stack() == 0
    deferral.remove()  # and now the hook goes too
    assert not opt._optimizer_step_pre_hooks


def test_deferred_pieces_are_placed_and_copied_later(monkeypatch):
    monkeypatch.setattr(_snapshot, "_BUFFERED", 4)
    live = np.arange(64, dtype=np.uint8)
    later = live[16:48]
    snapshot = HostSnapshot({"m": np.zeros(64, dtype=np.uint8)}, defer=lambda a: a.ctypes.data == later.ctypes.data)
    snapshot.add("m", [live[:16], later, live[48:]], size=64)
    assert snapshot.deferred_nbytes == 32
    assert bytes(snapshot._data["m"][16:48]) == bytes(32)  # placed, not copied yet
    assert bytes(snapshot._data["m"][:16]) == bytes(range(16))
    live[16:48] = 7  # changes before the copy land in the snapshot: what the holds are for
    snapshot.copy_deferred()
    assert snapshot.deferred_nbytes == 0 and bytes(snapshot._data["m"]) == bytes(live)


def test_more_than_announced_copies_the_deferred_pieces_first(monkeypatch):
    monkeypatch.setattr(_snapshot, "_BUFFERED", 4)
    live = np.arange(8, dtype=np.uint8)
    snapshot = HostSnapshot({}, defer=lambda a: True)
    with snapshot.open_member("m", size=8) as out:
        out.write_pieces([live])
        out.write(b"tail")
    live[:] = 0
    assert b"".join(snapshot._data["m"]) == bytes(range(8)) + b"tail" and snapshot.deferred_nbytes == 0


FIRST_SAVE = """
    import copy, json, torch, modelsafe as ms
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(1024, 2048), torch.nn.BatchNorm1d(2048), torch.nn.Linear(2048, 1024))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(32, 1024)
    model(x).pow(2).mean().backward(); opt.step()
    expected = {"model": copy.deepcopy(model.state_dict()), "optimizer": copy.deepcopy(opt.state_dict())}
    ck = ms.Checkpointer("ck", async_save=True)             # a new run: its first save
    info = ck.save(1, model=model, optimizer=opt)
    deferred = ck._pending._deferral is not None
    with torch.no_grad():                                     # training goes on at once, in place:
        for p in model.parameters():
            p.mul_(-2)                                        # the weights,
        for state in opt.state.values():
            state["exp_avg"].add_(1)                          # the optimizer's state outside its step,
    pending = not info.path.exists()
    for _ in range(2):                                        # and through its steps (BatchNorm statistics too)
        opt.zero_grad(); model(x).pow(2).mean().backward(); opt.step()
    ck.close()
    torch.save(expected, "expected.pt")
    print(json.dumps({"deferred": deferred, "pending": pending}))
"""


def test_a_new_runs_first_save_is_exact_while_training_goes_on_at_once(fresh, tmp_path):
    out = json.loads(fresh(FIRST_SAVE).stdout.strip().splitlines()[-1])
    assert out == {"deferred": True, "pending": True}
    result = fresh("""
        import json, torch, modelsafe as ms
        expected = torch.load("expected.pt")
        model = torch.nn.Sequential(torch.nn.Linear(1024, 2048), torch.nn.BatchNorm1d(2048),
                                    torch.nn.Linear(2048, 1024))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        ms.Checkpointer("ck").restore(model=model, optimizer=opt)
        weights = all(torch.equal(v, expected["model"][k]) for k, v in model.state_dict().items())
        saved, restored = expected["optimizer"]["state"], opt.state_dict()["state"]
        moments = all(torch.equal(restored[i][k], saved[i][k]) for i in saved for k in saved[i])
        loaded = ms.load(next(iter(ms.Checkpointer("ck").list())).path, trust_code=True).model
        same = all(torch.equal(v, expected["model"][k]) for k, v in loaded.state_dict().items())
        print(json.dumps({"weights": weights, "moments": moments, "ms.load": same}))
    """).stdout.strip().splitlines()[-1]
    assert json.loads(result) == {"weights": True, "moments": True, "ms.load": True}
