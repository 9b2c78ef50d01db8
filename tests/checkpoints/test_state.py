"""The training state of a checkpoint: JSON plus safetensors members, split when large."""

from __future__ import annotations

import json

import pytest
import torch

from modelsafe.artifact.reader import open_artifact
from modelsafe.artifact.writer import ArtifactWriter
from modelsafe.checkpoints.state import STATE_TENSORS, read_state, write_state
from modelsafe.errors import FormatError
from modelsafe.flavors._base import ComponentSource, ComponentStore
from modelsafe.flavors.torch.tensors import write_tensors


def _round_trip(tmp_path, state, write=write_state):
    path = tmp_path / "c.msafe"
    with ArtifactWriter(path) as writer:
        store = ComponentStore(writer, "checkpoint")
        record = write(store, state)
        writer.commit(b"{}")
    with open_artifact(path) as reader:
        names = reader.names()
        restored = read_state(ComponentSource(reader, "checkpoint"), json.loads(json.dumps(record)))
    return record, names, restored


def _optimizer_state(mib_each: int) -> dict:
    n = mib_each << 18  # float32 elements
    moment = torch.arange(n, dtype=torch.float32)
    return {"optimizer": {"class": "torch.optim.adam.Adam", "state": {
        "state": {0: {"exp_avg": moment, "exp_avg_sq": moment * 2, "step": torch.tensor(3.0)},
                  1: {"exp_avg": moment[:10], "exp_avg_sq": moment + 1, "step": torch.tensor(3.0)}},
        "param_groups": [{"lr": 1e-3, "params": [0, 1]}]}}}


def test_large_state_is_split_in_two_members_and_restores_exactly(tmp_path):
    state = _optimizer_state(40)  # 120 MiB of moments: above the 64 MiB split size
    state["optimizer"]["state"]["state"][1]["exp_avg"] = state["optimizer"]["state"]["state"][0]["exp_avg"]  # shared
    record, names, restored = _round_trip(tmp_path, state)
    assert record["tensors"] == ["state-0.safetensors", "state-1.safetensors"]
    assert {"checkpoint/state-0.safetensors", "checkpoint/state-1.safetensors"} <= set(names)
    assert record["aliases"]  # the shared tensor is stored once
    got, want = restored["optimizer"]["state"]["state"], state["optimizer"]["state"]["state"]
    for index in (0, 1):
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(got[index][key], want[index][key])
    assert got[1]["exp_avg"] is got[0]["exp_avg"]


def test_small_state_stays_one_member(tmp_path):
    record, names, restored = _round_trip(tmp_path, _optimizer_state(1))
    assert record["tensors"] == [STATE_TENSORS]
    assert torch.equal(restored["optimizer"]["state"]["state"][0]["exp_avg_sq"],
                       _optimizer_state(1)["optimizer"]["state"]["state"][0]["exp_avg_sq"])


def test_checkpoints_written_with_one_named_member_still_restore(tmp_path):
    """Before the split, the record named its single member as a string."""
    from modelsafe.flavors.torch.tree import encode

    def write_single(store, state):  # what write_state wrote then
        encoded = encode(dict(state))
        store.write("state.json", json.dumps({"tree": encoded.tree}).encode("utf-8"))
        member = write_tensors(store, STATE_TENSORS, encoded.tensors)["member"]
        return {"json": "state.json", "tensors": member, "parts": sorted(state), "rng": True}

    state = _optimizer_state(1)
    record, _, restored = _round_trip(tmp_path, state, write_single)
    assert record["tensors"] == STATE_TENSORS and "aliases" not in record
    assert torch.equal(restored["optimizer"]["state"]["state"][1]["exp_avg_sq"],
                       state["optimizer"]["state"]["state"][1]["exp_avg_sq"])


@pytest.mark.parametrize("record", [{"tensors": 3}, {"tensors": ["state.safetensors"], "aliases": {"a": "missing"}}])
def test_malformed_state_records_are_refused(tmp_path, record):
    _, names, _ = _round_trip(tmp_path, _optimizer_state(1))
    with open_artifact(tmp_path / "c.msafe") as reader:
        with pytest.raises(FormatError, match="training state"):
            read_state(ComponentSource(reader, "checkpoint"), {"json": "state.json", **record})
