"""ms.Checkpointer given bad input on purpose: each case a clear error, and nothing lost."""

from __future__ import annotations

import copy
import json
import os
import re
import textwrap
import warnings
from pathlib import Path

import pytest

import modelsafe as ms
from modelsafe.checkpoints.checkpointer import MetricWarning
from modelsafe.checkpoints.write import CheckpointWarning
from modelsafe.errors import (
    ArchitectureMismatchError,
    FormatError,
    IntegrityError,
    SaveError,
    UnsavableObjectError,
    UnsupportedModelError,
)

torch = pytest.importorskip("torch")
nn = torch.nn


class Net(nn.Module):
    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        self.hidden = hidden
        self.fc1 = nn.Linear(6, hidden)
        self.fc2 = nn.Linear(hidden, 2)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


class Renamed(nn.Module):
    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        self.hidden = hidden
        self.fc1 = nn.Linear(6, hidden)
        self.head = nn.Linear(hidden, 2)


def _trained(hidden: int = 16, seed: int = 0):
    torch.manual_seed(seed)
    model = Net(hidden)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(4, 6)).sum().backward()
    opt.step()
    return model, opt


def _snapshot(*objects) -> list:
    return [copy.deepcopy(o.state_dict()) for o in objects]


def _unchanged(before: list, *objects) -> bool:
    after = [o.state_dict() for o in objects]
    return repr(before) == repr(after)


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".tmp-" in p.name)


@pytest.fixture
def saved(tmp_path):
    model, opt = _trained()
    ck = ms.Checkpointer(tmp_path / "ck", monitor="val")
    ck.save(3, model=model, optimizer=opt, metrics={"val": 0.5})
    return ck


# ---------------------------------------------------------------------------------------
# restoring into objects that do not fit
# ---------------------------------------------------------------------------------------


def test_restore_into_other_shapes_raises_the_torch_report_and_changes_nothing(saved):
    model, opt = _trained(hidden=32, seed=1)
    before = _snapshot(model, opt)
    with pytest.raises(ArchitectureMismatchError) as info:
        saved.restore(model=model, optimizer=opt)
    err = info.value
    assert err.mismatched == {"fc1.weight": ((16, 6), (32, 6)), "fc1.bias": ((16,), (32,)),
                              "fc2.weight": ((2, 16), (2, 32))}
    assert (err.missing, err.unexpected) == ([], [])
    text = str(err)
    assert re.search(r"fc1\.weight\s+\(16, 6\)\s+\(32, 6\)\s+shape differs", text)
    assert "How to fix" in text
    assert _unchanged(before, model, opt)


def test_restore_into_renamed_layers_names_keys_and_suggests_renames(saved):
    model = Renamed()
    before = _snapshot(model)
    with pytest.raises(ArchitectureMismatchError) as info:
        saved.restore(model=model)
    assert info.value.missing == ["head.weight", "head.bias"]
    assert info.value.unexpected == ["fc2.weight", "fc2.bias"]
    assert info.value.renames == {"fc2.weight": "head.weight", "fc2.bias": "head.bias"}
    assert "fc2.weight -> head.weight" in str(info.value)
    assert _unchanged(before, model)


def test_restore_with_another_optimizer_class_or_groups_changes_nothing(saved):
    model, _ = _trained(seed=2)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    before = _snapshot(model, sgd)
    with pytest.raises(ArchitectureMismatchError, match=r"torch\.optim\.adam\.Adam optimizer, but a "
                                                        r"torch\.optim\.sgd\.SGD was given") as info:
        saved.restore(model=model, optimizer=sgd)
    assert (info.value.part, info.value.saved, info.value.current) == (
        "optimizer", "torch.optim.adam.Adam", "torch.optim.sgd.SGD")
    assert _unchanged(before, model, sgd)

    partial = torch.optim.Adam(model.fc1.parameters(), lr=0.1)
    with pytest.raises(ArchitectureMismatchError, match=r"parameter groups of sizes \[4\], but the given optimizer "
                                                        r"has \[2\]"):
        saved.restore(model=model, optimizer=partial)
    assert _unchanged(before[:1], model)


def test_restore_parts_that_were_not_saved(tmp_path):
    model, opt = _trained()
    ck = ms.Checkpointer(tmp_path / "ck")
    ck.save(1, model=model)
    sched = torch.optim.lr_scheduler.StepLR(opt, 2)
    before = _snapshot(model, opt, sched)
    with pytest.raises(FormatError, match=r"step 1 .* holds no optimizer state: it was saved without optimizer="):
        ck.restore(model=model, optimizer=opt, scheduler=sched)
    assert _unchanged(before, model, opt, sched)


def test_tampered_checkpoint_is_refused_before_anything_changes(saved):
    path = saved.latest.path
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF  # inside the weights
    path.write_bytes(bytes(data))
    model, opt = _trained(seed=4)
    before = _snapshot(model, opt)
    with pytest.raises(IntegrityError):
        saved.restore(model=model, optimizer=opt)
    assert _unchanged(before, model, opt)


# ---------------------------------------------------------------------------------------
# directories, choices and arguments
# ---------------------------------------------------------------------------------------


def test_missing_and_empty_directories(tmp_path):
    model, _ = _trained()
    missing = ms.Checkpointer(tmp_path / "nope")
    assert missing.list() == [] and missing.latest is None and missing.best is None
    with pytest.raises(FormatError, match=r"No checkpoint to restore: '.*nope' does not exist\. .*Check the "
                                          r"directory") as info:
        missing.restore(model=model)
    assert info.value.path == str(tmp_path / "nope") and not (tmp_path / "nope").exists()  # not created by reading

    (tmp_path / "empty").mkdir()
    with pytest.raises(FormatError, match=r"'.*empty' holds no checkpoints"):
        ms.Checkpointer(tmp_path / "empty").restore(model=model, which="best")


def test_monitor_absent_from_metrics_warns_and_never_becomes_best(tmp_path):
    model, _ = _trained()
    ck = ms.Checkpointer(tmp_path / "ck", monitor="val_loss", keep_last=2)
    with pytest.warns(MetricWarning, match=r"'val_loss' of checkpoint step 0 is not among its metrics \(loss\)"):
        ck.save(0, model=model, metrics={"loss": 0.3})
    with pytest.warns(MetricWarning, match=r"is not among its metrics \(none given\)"):
        ck.save(1, model=model)
    assert ck.best is None and [c.step for c in ck.list()] == [0, 1]
    with pytest.raises(FormatError, match=r"finite 'val_loss' metric \(metrics recorded: \['loss'\]\)"):
        ck.restore(model=model, which="best")


def test_invalid_choices(saved):
    model, _ = _trained()
    with pytest.raises(ValueError, match=r"Invalid `which`: expected 'latest', 'best' or a step number\. "
                                         r"Received: which='newest'"):
        saved.restore(model=model, which="newest")
    with pytest.raises(FormatError, match=r"No checkpoint of step 7 .* the steps on disk are \[3\]") as info:
        saved.restore(model=model, which=7)
    assert info.value.steps == [3]
    unranked = ms.Checkpointer(saved.directory.parent / "unranked")  # saved without a monitor
    unranked.save(1, model=model, metrics={"loss": 0.5})
    with pytest.raises(FormatError, match=r"'best' needs a metric to rank by, and neither this Checkpointer nor "
                                          r"the directory's index names one") as info:
        ms.Checkpointer(saved.directory.parent / "unranked").restore(model=model, which="best")
    assert info.value.monitor is None and info.value.which == "best"


@pytest.mark.parametrize("kwargs, message", [
    ({"mode": "avg"}, r"Invalid `mode`: expected 'min' or 'max'\. Received: mode='avg'"),
    ({"keep_best": 0}, r"Invalid `keep_best`: expected an integer of at least 1"),
    ({"keep_last": 2.5}, r"Invalid `keep_last`"),
    ({"monitor": 3}, r"Invalid `monitor`"),
])
def test_invalid_constructor_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ms.Checkpointer(tmp_path, **kwargs)


def test_invalid_save_arguments_write_nothing(tmp_path):
    model, _ = _trained()
    ck = ms.Checkpointer(tmp_path / "ck")
    with pytest.raises(ValueError, match=r"Invalid `step`: expected a non-negative integer .* Received: step=-1"):
        ck.save(-1, model=model)
    with pytest.raises(ValueError, match=r"Invalid `metrics`: expected numbers, but 'name' is 'resnet'"):
        ck.save(1, model=model, metrics={"name": "resnet"})
    with pytest.raises(UnsupportedModelError, match="Checkpointer saves PyTorch modules and Keras models"):
        ck.save(1, model=lambda x: x)
    with pytest.raises(UnsavableObjectError, match=r"extra\.handle") as info:
        ck.save(1, model=model, extra={"handle": open(__file__)})  # noqa: SIM115
    assert info.value.problems[0][0] == "extra.handle"
    assert ck.list() == [] and _leftovers(tmp_path / "ck") == []


def test_directory_that_cannot_be_created(tmp_path):
    (tmp_path / "file").write_text("x")
    model, _ = _trained()
    with pytest.raises(SaveError, match=r"Cannot create the checkpoint directory '.*file/ck'.*Choose a writable"):
        ms.Checkpointer(tmp_path / "file" / "ck").save(0, model=model)


# ---------------------------------------------------------------------------------------
# a write that fails half-way (the file-size limit stands in for a full disk)
# ---------------------------------------------------------------------------------------

_FULL_DISK = """
import json, resource, signal, torch, modelsafe as ms

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # over the limit, write() fails with EFBIG instead
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.Linear(256, 256))
opt = torch.optim.Adam(model.parameters())
model(torch.randn(2, 256)).sum().backward(); opt.step()
ck = ms.Checkpointer("ck", async_save={async_save})
first = ck.save(1, model=model, optimizer=opt, metrics={{"loss": 1.0}})
ck.wait()
expected = {{k: v.clone() for k, v in model.state_dict().items()}}
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (first.path.stat().st_size // 2, hard))  # "the disk fills up"
with torch.no_grad():
    model[0].weight.add_(1)
out = {{"returned": False}}
try:
    ck.save(2, model=model, optimizer=opt, metrics={{"loss": 0.5}})
    out["returned"] = True
    ck.save(3, model=model, optimizer=opt)   # an async failure surfaces on the next call
except ms.SaveError as exc:
    out.update(error=str(exc), errno=exc.errno, step=exc.step, latest=exc.latest, kind=type(exc).__name__,
               oserror=isinstance(exc, OSError))
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
out["listed"] = [c.step for c in ck.list()]
out["files"] = sorted(p.name for p in ck.directory.iterdir())
fresh = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.Linear(256, 256))
out["restored"] = ck.restore(model=fresh).step
out["intact"] = all(torch.equal(v, expected[k]) for k, v in fresh.state_dict().items())
out["again"] = ck.save(4, model=model).step          # the Checkpointer still works once there is room
print("@@" + json.dumps(out))
"""


@pytest.mark.parametrize("async_save", [False, True])
def test_disk_full_during_a_write_keeps_previous_checkpoints_and_says_so(fresh, async_save):
    proc = fresh(_FULL_DISK.format(async_save=async_save))
    out = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("@@")][-1][2:])
    assert out["returned"] is async_save  # async: save returns; the failure comes with the next call
    assert out["errno"] == 27 and out["step"] == 2 and out["latest"] == 1
    assert out["kind"] == "ArtifactWriteError" and out["oserror"] is True  # `except OSError` still catches it
    where = " (in the background)" if async_save else ""
    assert f"Checkpoint step 2 could not be written{where} to" in out["error"]
    assert "File too large" in out["error"]
    assert "its temporary file was removed and the 1 checkpoint(s) already there are intact (latest: step 1, " \
           "step-0000000001.msafe)" in out["error"]
    assert "Free disk space" in out["error"]
    assert out["listed"] == [1]
    assert out["files"] == [".modelsafe-checkpoints.lock", "checkpoints.json", "step-0000000001.msafe"]
    assert out["restored"] == 1 and out["intact"] is True and out["again"] == 4


def test_a_second_writer_process_is_refused_until_the_first_closes(tmp_path, fresh):
    model, _ = _trained()
    ck = ms.Checkpointer(tmp_path / "ck")
    ck.save(1, model=model)
    code = textwrap.dedent(f"""
        import os, torch, modelsafe as ms
        ck = ms.Checkpointer({str(tmp_path / "ck")!r}, keep_last=2)
        try:
            ck.save(2, model=torch.nn.Linear(2, 2))
            print("@@saved")
        except ms.SaveError as exc:
            print("@@" + str(exc))
    """)
    refused = fresh(code).stdout
    assert f"process {os.getpid()} is writing checkpoints to" in refused
    assert "Use another directory for this run" in refused
    ck.close()
    assert "@@saved" in fresh(code).stdout
    assert [c.step for c in ms.Checkpointer(tmp_path / "ck", keep_last=2).list()] == [1, 2]
    assert json.loads((tmp_path / "ck" / "checkpoints.json").read_text())["next_seq"] == 3


def test_a_model_whose_constructor_cannot_be_recorded_is_checkpointed_as_weights(tmp_path):
    class Local(nn.Module):  # defined in a function: no other process could import it
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 3)

    torch.manual_seed(0)
    model = Local()
    ck = ms.Checkpointer(tmp_path / "ck", keep_last=2)
    with pytest.warns(CheckpointWarning, match=r"Checkpoints of .*Local store its weights only.*ms\.load\(checkpoint\) "
                                               r"gives the state dict"):
        first = ck.save(0, model=model)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CheckpointWarning)  # said once per Checkpointer
        ck.save(1, model=model)
    other = Local()
    assert ck.restore(model=other, device="cpu").step == 1 and torch.equal(other.fc.weight, model.fc.weight)
    loaded = ms.load(first.path).model
    assert list(loaded) == ["fc.weight", "fc.bias"] and torch.equal(loaded["fc.bias"], model.fc.bias)
