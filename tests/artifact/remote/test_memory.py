"""Fast unit tests on fsspec's memory:// store (in addition to the S3 server tests)."""

from __future__ import annotations

import uuid
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import modelsafe as ms
from modelsafe.artifact.location import RemotePath, is_url, resolve


@pytest.fixture
def root() -> str:
    return f"memory://t-{uuid.uuid4().hex[:10]}"


def _save(obj, url, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # memory:// cannot make the write conditional: it says so
        return ms.save(obj, url, **kw)


def test_local_paths_never_take_the_remote_path(tmp_path):
    assert not is_url(str(tmp_path / "m.msafe")) and not is_url("C:\\models\\m.msafe")
    assert resolve(f"file://{tmp_path}/m.msafe") == tmp_path / "m.msafe"
    assert isinstance(resolve("memory://x/m.msafe"), RemotePath)


def test_zip_and_folder_round_trip(root):
    arrays = {"w": np.arange(1000.0), "b": np.ones(3)}
    for url in (f"{root}/m.msafe", f"{root}/folder"):
        _save(arrays, url)
        loaded = ms.load(url).model
        assert np.array_equal(loaded["w"], arrays["w"]) and np.array_equal(loaded["b"], arrays["b"])


def test_overwrite_false_warns_that_the_store_cannot_make_it_conditional(root):
    with pytest.warns(UserWarning, match="cannot make a write conditional"):
        ms.save({"w": np.ones(2)}, f"{root}/m.msafe")
    with pytest.raises(ms.SaveError) as err:
        _save({"w": np.ones(2)}, f"{root}/m.msafe")
    assert err.value.reason == "exists"


def test_a_folder_without_its_manifest_or_a_listed_member_is_refused(root):
    import fsspec

    fs = fsspec.filesystem("memory")
    manifest = _save({"w": np.ones(10)}, f"{root}/f1")
    member = next(iter(manifest.members))
    fs.rm(f"{root}/f1/{member}")
    with pytest.raises(ms.IntegrityError) as err:
        ms.load(f"{root}/f1")
    assert err.value.member == member
    _save({"w": np.ones(10)}, f"{root}/f2")
    fs.rm(f"{root}/f2/modelsafe.json")
    with pytest.raises(ms.FormatError) as err:
        ms.load(f"{root}/f2")
    assert err.value.reason == "no-manifest"


def test_replacing_a_folder_removes_members_the_new_artifact_lacks(root):
    import fsspec

    _save({"a": np.ones(10), "b": np.zeros(5)}, f"{root}/f", overwrite=True)
    _save({"a": np.ones(4)}, f"{root}/f", overwrite=True)
    assert sorted(ms.load(f"{root}/f").model) == ["a"]
    fs = fsspec.filesystem("memory")
    listed = {p.rsplit("/f/", 1)[1] for p in fs.find(f"{root}/f")}
    assert listed == set(ms.inspect(f"{root}/f").members) | {"modelsafe.json"}


def test_a_missing_store_package_names_the_extra(monkeypatch):
    import importlib
    import sys

    registry = importlib.import_module("fsspec.registry")  # the module (fsspec.registry is its read-only view)
    for package in ("gcsfs", "adlfs"):  # installed for the tests of those stores: made unimportable here
        monkeypatch.setitem(sys.modules, package, None)
    stores = {"gs", "gcs", "az", "abfs", "abfss", "adl"}  # and forgotten by fsspec, had a test used them already
    for store in stores:
        monkeypatch.delitem(registry._registry, store, raising=False)
    for url, package in (("gs://bucket/model.msafe", "gcsfs"), ("az://container/model.msafe", "adlfs")):
        with pytest.raises(ms.FlavorNotInstalledError) as err:
            ms.inspect(url)
        assert "modelsafe[remote]" in err.value.hint and err.value.package == package


def test_http_is_read_only(root):
    from modelsafe.artifact.remote_upload import open_upload

    with pytest.raises(ms.SaveError) as err:
        open_upload(resolve("http://127.0.0.1:9/m.msafe"))
    assert err.value.reason == "read-only"


@settings(max_examples=25, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=3000), min_size=1, max_size=5), st.data())
def test_any_flipped_byte_of_any_member_is_caught(payloads, data):
    import fsspec

    url = f"memory://h-{uuid.uuid4().hex[:10]}/m.msafe"
    _save({f"p{i}": np.frombuffer(p, dtype=np.uint8).copy() for i, p in enumerate(payloads)}, url)
    fs = fsspec.filesystem("memory")
    blob = bytearray(fs.cat_file(url))
    manifest = ms.inspect(url)
    sized = [n for n, r in manifest.members.items() if r.size]
    name = data.draw(st.sampled_from(sized))
    from modelsafe.artifact.reader import open_artifact

    with open_artifact(url) as reader:
        start = reader._data_start(name)
    at = start + data.draw(st.integers(0, manifest.members[name].size - 1))
    blob[at] ^= 0x01
    fs.pipe_file(url, bytes(blob))
    with pytest.raises(ms.IntegrityError) as err:
        ms.load(url, verify=False)
    assert err.value.member == name


def test_a_checkpointer_where_the_store_has_no_conditional_write_says_so_once(root):
    torch = pytest.importorskip("torch")
    model = torch.nn.Linear(2, 2)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with ms.Checkpointer(f"{root}/run", keep_last=2) as ck:
            for step in range(3):
                ck.save(step, model=model)
            assert [c.step for c in ck.list()] == [1, 2] and ck.latest.step == 2
    said = [w for w in seen if "no conditional write" in str(w.message)]
    assert len(said) == 1 and "checkpoints.json" in str(said[0].message)
    fresh = torch.nn.Linear(2, 2)
    assert ms.Checkpointer(f"{root}/run").restore(model=fresh).step == 2
    assert torch.equal(fresh.weight, model.weight)


def test_a_read_only_store_is_refused_for_checkpoints():
    with pytest.raises(ms.SaveError) as err:
        ms.Checkpointer("https://example.invalid/run")
    assert err.value.reason == "read-only"
