"""az:// and gs:// against real servers of their APIs on loopback: Azurite (Microsoft's Azure Storage
emulator, from npm) through adlfs, and gcp-storage-emulator (a Cloud Storage emulator, from PyPI) through
gcsfs. Each store: save in both forms, inspect, load and verify in a fresh process, scan, a flipped byte
refused before anything is deserialized, overwrite=False refused, an interrupted save leaving nothing.

Neither store gets the conditional writes modelsafe makes on S3: overwrite=False refuses an existing object
before anything is written, and a new one is checked again just before the commit, with a warning that a
writer saving there at the same moment could still replace it (tested here)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

import modelsafe as ms

from .conftest import free_port, wait_for_server

pytestmark = pytest.mark.timeout(300, method="thread")

# gcsfs (2026) first asks Cloud Storage's gRPC control plane for each bucket's layout, which the emulator does not
# serve (every call then waits for a 60 s timeout): its plain JSON API client is used instead. Set as this module
# is collected, before anything imports gcsfs (which reads it then); fresh processes inherit it.
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"

REPO = Path(__file__).resolve().parents[3]
AZURITE = REPO / ".tools" / "node_modules" / ".bin" / "azurite-blob"
#: Azurite's documented development account: a well-known public key, valid only against the emulator.
AZURITE_ACCOUNT = ("devstoreaccount1",
                   "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==")


@pytest.fixture(scope="module")
def azure(tmp_path_factory) -> Iterator[dict]:
    if not AZURITE.is_file():
        pytest.fail(f"{AZURITE} is missing: `make test` installs Azurite from npm (make azurite).")
    from azure.storage.blob import BlobServiceClient

    port = free_port()
    folder = tmp_path_factory.mktemp("azurite")
    proc = subprocess.Popen([str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location",
                             str(folder), "--silent", "--skipApiVersionCheck", "--loose"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_server(f"http://127.0.0.1:{port}/", proc, "Azurite")
        name, key = AZURITE_ACCOUNT
        connection = (f"DefaultEndpointsProtocol=http;AccountName={name};AccountKey={key};"
                      f"BlobEndpoint=http://127.0.0.1:{port}/{name};")
        BlobServiceClient.from_connection_string(connection).create_container("models")
        yield {"scheme": "az", "bucket": "models", "options": {"connection_string": connection}}
    finally:
        proc.terminate()  # Azurite waits for open connections to close: a few seconds, then it is killed
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def gcs() -> Iterator[dict]:
    from gcp_storage_emulator.server import create_server

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket="models")
    server.start()
    try:
        yield {"scheme": "gs", "bucket": "models",
               "options": {"endpoint_url": f"http://127.0.0.1:{port}", "token": "anon", "project": "test"}}
    finally:
        server.stop()


@pytest.fixture(params=["az", "gs"])
def store(request) -> dict:
    return request.getfixturevalue({"az": "azure", "gs": "gcs"}[request.param])


def _forest():
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 4))
    return RandomForestClassifier(40, random_state=0).fit(X, X[:, 0] > 0), X


def _fs(store: dict):
    import fsspec

    return fsspec.filesystem(store["scheme"], **store["options"])


def test_both_forms_round_trip_and_a_fresh_process_verifies_them(store, tmp_path, fresh):
    model, X = _forest()
    base = f"{store['scheme']}://{store['bucket']}/{tmp_path.name}"
    for url in (f"{base}/forest.msafe", f"{base}/forest-folder"):
        ms.save(model, url, sample=X[:8], storage_options=store["options"])
        manifest = ms.inspect(url, storage_options=store["options"])
        assert manifest.flavor == "sklearn"
        assert ms.scan(url, storage_options=store["options"]).ok
        assert ms.check_env(url, storage_options=store["options"]).ok
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "expected.npy", model.predict_proba(X))
    fresh(f"""
        import numpy as np, modelsafe as ms
        X, expected = np.load("X.npy"), np.load("expected.npy")
        for url in ({base + '/forest.msafe'!r}, {base + '/forest-folder'!r}):
            bundle = ms.load(url, storage_options={store['options']!r})
            assert bundle.verify().ok and ms.verify(url, storage_options={store['options']!r}).ok
            assert np.array_equal(bundle.predict_proba(X), expected), url
    """, cwd=tmp_path)


def test_a_flipped_byte_is_refused_before_anything_is_deserialized(store, tmp_path, monkeypatch):
    model, X = _forest()
    url = f"{store['scheme']}://{store['bucket']}/{tmp_path.name}/flipped.msafe"
    manifest = ms.save(model, url, sample=X[:8], storage_options=store["options"])
    fs, key = _fs(store), url.split("://", 1)[1]
    data = bytearray(fs.cat_file(key))
    stream = next(n for n in manifest.members if n.endswith("graph.pkl"))
    data[bytes(data).index(b"sklearn")] ^= 0xFF  # inside the pickle stream's bytes
    fs.pipe_file(key, bytes(data))
    from modelsafe.security import _unpickler

    def never(*args, **kwargs):
        raise AssertionError("deserialized before the integrity check")

    monkeypatch.setattr(_unpickler._RestrictedUnpickler, "load", never)  # the class every load path builds
    with pytest.raises(ms.IntegrityError) as err:
        ms.load(url, storage_options=store["options"])
    assert err.value.member == stream


def test_overwrite_false_is_refused_and_a_new_save_says_the_check_is_not_conditional(store, tmp_path):
    model, X = _forest()
    url = f"{store['scheme']}://{store['bucket']}/{tmp_path.name}/once.msafe"
    # A new object: saved, with a warning that another writer saving there at the same moment could still win.
    with pytest.warns(UserWarning, match="cannot make a write conditional"):
        ms.save(model, url, sample=X[:8], storage_options=store["options"])
    fs, key = _fs(store), url.split("://", 1)[1]
    before = fs.cat_file(key)
    with pytest.raises(ms.SaveError) as err:  # an existing one: refused before anything is written
        ms.save(model, url, sample=X[:4], storage_options=store["options"])
    assert err.value.reason == "exists"
    fs.invalidate_cache()
    assert fs.cat_file(key) == before
    ms.save(model, url, sample=X[:4], storage_options=store["options"], overwrite=True)
    assert ms.inspect(url, storage_options=store["options"]).verification["rows"] == 4


def test_a_save_that_fails_half_way_leaves_nothing(store, tmp_path):
    from modelsafe.artifact.writer import ArtifactWriter

    for name in ("broken.msafe", "broken-folder"):
        url = f"{store['scheme']}://{store['bucket']}/{tmp_path.name}/{name}"
        with pytest.raises(RuntimeError):
            with ArtifactWriter(url, storage_options=store["options"]) as writer:
                writer.add("model/big.bin", np.ones(12 << 20, dtype=np.uint8))
                raise RuntimeError("the save failed")
        fs = _fs(store)
        fs.invalidate_cache()
        assert not fs.exists(url.split("://", 1)[1]), url
        assert fs.find(f"{store['bucket']}/{tmp_path.name}/{name}") == []
