"""Legacy ``torch.save`` files read without ``torch.load``, and converted with ``ms.convert``."""

from __future__ import annotations

import argparse
import collections
import io
import json
import pickle
import textwrap
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pytest

import modelsafe as ms
from modelsafe.errors import FormatError, UntrustedContentError

torch = pytest.importorskip("torch")
from modelsafe.flavors.torch.flavor import DeviceChangedWarning  # noqa: E402
from modelsafe.flavors.torch.legacy import read_checkpoint  # noqa: E402

NET = '''
import torch.nn as nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(8, 2)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))
'''


@pytest.fixture
def net_module(tmp_path, monkeypatch):
    import importlib
    import sys

    name = f"legacy_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{name}.py").write_text(NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield importlib.import_module(name)
    sys.modules.pop(name, None)


def _state() -> "collections.OrderedDict":
    torch.manual_seed(0)
    return collections.OrderedDict([("w", torch.randn(3, 4)), ("b", torch.arange(3)), ("h", torch.ones(2).half()),
                                    ("t", torch.randn(4, 3).t()), ("flag", torch.tensor([True, False]))])


def _same(a, b) -> bool:
    return set(a) == set(b) and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("zip_layout", [True, False])
def test_state_dicts_in_both_layouts(tmp_path, zip_layout):
    state = _state()
    state["shared"] = state["w"][1]  # a view into another tensor's storage
    path = tmp_path / "sd.pt"
    torch.save(state, path, _use_new_zipfile_serialization=zip_layout)
    back = read_checkpoint(path)
    assert type(back) is collections.OrderedDict and list(back) == list(state)
    assert _same(back, state)
    assert back["shared"].untyped_storage().data_ptr() == back["w"].untyped_storage().data_ptr()


def test_extra_globals_are_listed_and_need_trust(tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save({"model": _state(), "args": argparse.Namespace(lr=0.1), "best": np.float64(0.5), "epoch": 7}, path)
    with pytest.raises(UntrustedContentError) as info:
        read_checkpoint(path)
    assert info.value.globals == ["argparse.Namespace", "numpy._core.multiarray.scalar", "numpy.dtype"]
    assert "trusted=['argparse.Namespace', 'numpy._core.multiarray.scalar', 'numpy.dtype']" in str(info.value)
    back = read_checkpoint(path, trusted=info.value.globals)
    assert back["args"].lr == 0.1 and back["best"] == np.float64(0.5) and back["epoch"] == 7
    assert _same(back["model"], _state())


def test_whole_pickled_model_needs_its_class_trusted(tmp_path, net_module):
    model = net_module.Net()
    path = tmp_path / "whole.pt"
    torch.save(model, path)
    with pytest.raises(UntrustedContentError) as info:
        read_checkpoint(path)
    assert info.value.globals == [f"{net_module.__name__}.Net"]  # torch.nn classes are accepted by this reader
    back = read_checkpoint(path, trusted=[f"{net_module.__name__}.Net"])
    assert type(back) is net_module.Net and isinstance(back.fc1.weight, torch.nn.Parameter)
    assert torch.equal(back(torch.ones(2, 4)), model(torch.ones(2, 4)))


def test_cuda_tagged_checkpoint_loads_on_the_cpu(tmp_path):
    path = tmp_path / "gpu.pt"

    def tag_cuda(obj):  # as torch.save records tensors that lived on a GPU
        return "cuda:0" if getattr(obj, "device", None) is not None and obj.device.type == "cpu" else None

    torch.serialization.register_package(1, tag_cuda, lambda obj, location: None)
    try:
        torch.save(_state(), path)
    finally:
        torch.serialization._package_registry[:] = [e for e in torch.serialization._package_registry
                                                    if e[1] is not tag_cuda]
    assert not torch.cuda.is_available()
    with zipfile.ZipFile(path) as zf:
        assert b"cuda:0" in zf.read([n for n in zf.namelist() if n.endswith("data.pkl")][0])
    with pytest.warns(DeviceChangedWarning, match="saved on cuda:0; they were read onto the CPU"):
        back = read_checkpoint(path)
    assert all(t.device.type == "cpu" for t in back.values()) and _same(back, _state())


def test_code_in_a_checkpoint_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"

    class Evil:
        def __reduce__(self):
            return (__import__("os").system, (f"touch {marker}",))

    torch.save({"w": torch.ones(2)}, path)
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    pkl = [n for n in members if n.endswith("data.pkl")][0]
    members[pkl] = pickle.dumps({"w": Evil()}, protocol=2)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    with pytest.raises(UntrustedContentError) as info:
        read_checkpoint(path)
    assert info.value.globals in (["posix.system"], ["os.system"], ["nt.system"])
    assert not marker.exists()


def _crafted_zip(path: Path, size: tuple[int, ...], stride: tuple[int, ...], nbytes: int = 16) -> None:
    """A torch zip whose one tensor claims ``size``/``stride`` over a storage of 4 floats."""

    class Storage:
        pass

    class Tensor:
        def __reduce__(self):
            return (torch._utils._rebuild_tensor_v2, (STORAGE, 0, size, stride, False, collections.OrderedDict()))

    STORAGE = Storage()

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.FloatStorage, "0", "cpu", 4) if obj is STORAGE else None

    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump({"x": Tensor()})
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", buf.getvalue())
        zf.writestr("archive/byteorder", "little")
        zf.writestr("archive/data/0", b"\0" * nbytes)
        zf.writestr("archive/version", "3\n")


def test_out_of_bounds_tensors_are_refused(tmp_path):
    ok = tmp_path / "ok.pt"
    _crafted_zip(ok, (2, 2), (2, 1))
    assert read_checkpoint(ok)["x"].shape == (2, 2)
    for size, stride, nbytes, needle in (((1000,), (1,), 16, "reaches element 1000 of a storage of 4"),
                                        ((2, 2), (1000, 1), 16, "reaches element 1002"),
                                        ((2,), (1,), 12, "should hold 16 bytes but its member holds 12")):
        path = tmp_path / "bad.pt"
        _crafted_zip(path, size, stride, nbytes)
        with pytest.raises(FormatError, match=needle):
            read_checkpoint(path)


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "x.pt").write_bytes(b"hello world")
    with pytest.raises(FormatError, match="is not a torch.save file"):
        read_checkpoint(tmp_path / "x.pt")
    pickle.dump({"a": 1}, open(tmp_path / "p.pt", "wb"), protocol=2)
    with pytest.raises(FormatError, match="no torch magic number"):
        read_checkpoint(tmp_path / "p.pt")


def test_convert_whole_model_and_state_dict_then_load_fresh(tmp_path, fresh, net_module):
    torch.manual_seed(1)
    model = net_module.Net()
    torch.save(model, tmp_path / "whole.pt")
    torch.save(model.state_dict(), tmp_path / "weights.pt", _use_new_zipfile_serialization=False)
    x = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    name = net_module.__name__
    # convert's scan lists torch.nn classes too; the torch reader itself accepts them (see the test above)
    manifest = ms.convert(tmp_path / "whole.pt", tmp_path / "whole.msafe",
                          trusted=[f"{name}.Net", "torch.nn.modules.*"], sample=x)
    assert manifest.components["model"].data["architecture"]["class"] == [name, "Net"]
    assert manifest.source["path"] == str((tmp_path / "whole.pt").resolve())
    assert manifest.components["model"].data["architecture"]["args_from"] == "inferred"
    ms.convert(tmp_path / "weights.pt", tmp_path / "weights.msafe")
    np.save(tmp_path / "x.npy", x)
    with torch.no_grad():
        np.save(tmp_path / "y.npy", model(torch.from_numpy(x)).numpy())
    out = fresh(textwrap.dedent(f"""
        import json, numpy as np, torch, modelsafe as ms
        from {name} import Net
        b = ms.load("whole.msafe")
        state = ms.load("weights.msafe").model
        fresh_net = Net()
        fresh_net.load_state_dict(state)
        y = np.load("y.npy")
        print(json.dumps([type(b.model).__name__, bool(np.allclose(b.predict(np.load("x.npy")), y, atol=1e-6)),
                          bool(np.allclose(fresh_net(torch.from_numpy(np.load("x.npy"))).detach().numpy(), y,
                                           atol=1e-6))]))
    """))
    assert json.loads(out.stdout.splitlines()[-1]) == ["Net", True, True]
