"""Failures on a real S3 API (moto's server on loopback, behind the cutting/stalling proxy): each one a
ModelsafeError naming what happened, nothing left at the target, and no wait without an end.

Every test here has a pytest-timeout of its own: a regression that makes a network wait unbounded
fails the test instead of stalling the run."""

from __future__ import annotations

import numpy as np
import pytest

import modelsafe as ms
from modelsafe.artifact import remote_upload
from modelsafe.artifact.writer import ArtifactWriter

pytestmark = pytest.mark.timeout(180, method="thread")  # a hang ends the run with every stack printed


def _uploads(s3) -> list:
    return s3["fs"].call_s3("list_multipart_uploads", Bucket=s3["bucket"]).get("Uploads", [])


def _quick(options: dict, timeout: int = 1) -> dict:
    """``options`` with short timeouts and one attempt: a dead peer is noticed in seconds."""
    return {**options, "retries": 1, "config_kwargs": {"connect_timeout": timeout, "read_timeout": timeout,
                                                       "retries": {"max_attempts": 1}}}


@pytest.fixture
def small_parts(monkeypatch):
    """Parts of 5 MiB (S3's least): multipart uploads of a few MiB, so the tests move little data."""
    monkeypatch.setattr(remote_upload, "PART_BYTES", 5 << 20)


def test_an_error_mid_upload_aborts_it_and_leaves_nothing(s3):
    url = f"s3://{s3['bucket']}/aborted.msafe"
    with pytest.raises(RuntimeError):
        with ArtifactWriter(url, storage_options=s3["options"]) as writer:
            # A numpy array is one buffer (it was once iterated byte by byte: the test ran for an hour).
            writer.add("model/big.bin", np.ones(40 << 20, dtype=np.uint8))  # past one part: multipart started
            raise RuntimeError("the save failed")
    assert not s3["fs"].exists(f"{s3['bucket']}/aborted.msafe")
    assert _uploads(s3) == []


def test_an_error_mid_upload_of_a_folder_aborts_every_member_upload(s3, small_parts):
    url = f"s3://{s3['bucket']}/aborted-dir"
    with pytest.raises(RuntimeError):
        with ArtifactWriter(url, storage_options=s3["options"]) as writer:
            writer.add("model/a.bin", np.ones(12 << 20, dtype=np.uint8))  # completed as it ends
            with writer.open_member("model/b.bin") as out:
                out.write(np.ones(12 << 20, dtype=np.uint8))  # two parts sent, not completed
                raise RuntimeError("the save failed")
    assert s3["fs"].find(f"{s3['bucket']}/aborted-dir") == []
    assert _uploads(s3) == []


def test_a_folder_of_many_large_members_over_a_slow_link(s3, small_parts):
    """More members than upload threads, each past one part, on an uplink slower than the writes: every
    member's completion waits for its own parts (which deadlocked when both ran on one pool)."""
    size, count = (6 << 20) + 1, 9
    root = f"{s3['bucket']}/many"
    s3["proxy"].upload_delay = 0.004
    with ArtifactWriter(f"s3://{root}", storage_options=s3["proxied"]) as writer:
        for i in range(count):
            writer.add(f"model/w{i}.bin", np.full(size, i, dtype=np.uint8))
        writer.commit(b"{}")
    s3["proxy"].reset()
    fs = s3["fs"]
    for i in range(count):
        key = f"{root}/model/w{i}.bin"
        assert fs.info(key)["size"] == size
        assert fs.cat_file(key, start=size - 2) == bytes([i, i])
    assert fs.cat_file(f"{root}/modelsafe.json") == b"{}" and _uploads(s3) == []


def test_the_server_stopped_mid_upload_leaves_no_object(s3):
    from moto.server import ThreadedMotoServer

    url = f"s3://{s3['bucket']}/stopped.msafe"
    server = s3["server"]
    try:
        with pytest.raises(ms.SaveError) as err:
            with ArtifactWriter(url, storage_options=_quick(s3["options"], 2)) as writer:
                writer.add("model/a.bin", np.ones(20 << 20, dtype=np.uint8))  # one part sent
                server.stop()
                writer.add("model/b.bin", np.ones(20 << 20, dtype=np.uint8))
                writer.commit(b"{}")
        assert err.value.reason == "connection"
    finally:
        server._server = None
        restarted = ThreadedMotoServer(ip_address="127.0.0.1", port=s3["port"], verbose=False)
        restarted.start()
        server.__dict__.update(restarted.__dict__)  # the session fixture stops it at the end
    assert not s3["fs"].exists(f"{s3['bucket']}/stopped.msafe")


def test_a_connection_cut_mid_download_is_a_clear_error(s3):
    big = np.arange(24 << 20, dtype=np.uint8)
    url = f"s3://{s3['bucket']}/cut.msafe"
    ms.save({"weights": big}, url, storage_options=s3["options"])
    proxy = s3["proxy"]
    proxy.reset()
    proxy.cut_after = 4 << 20
    with pytest.raises(ms.FormatError) as err:
        ms.load(url, storage_options=s3["proxied"], verify=False)
    assert err.value.reason == "connection"
    assert "Nothing from the artifact was used" in str(err.value)
    proxy.reset()
    assert ms.load(url, storage_options=s3["proxied"]).model["weights"].sum() == big.sum()


def _saved_through_the_proxy(s3, name: str) -> tuple[str, np.ndarray, int]:
    """A 4 MiB artifact, and how many bytes the server sends before a load reaches its member (inspect's)."""
    big = np.arange(4 << 20, dtype=np.uint8)
    url = f"s3://{s3['bucket']}/{name}"
    ms.save({"weights": big}, url, storage_options=s3["options"])
    proxy = s3["proxy"]
    proxy.reset()
    ms.inspect(url, storage_options=s3["proxied"])
    before, proxy.sent = proxy.sent, 0
    return url, big, before


def test_a_connection_cut_once_is_retried_by_the_store_client(s3):
    url, big, before = _saved_through_the_proxy(s3, "flaky.msafe")
    proxy = s3["proxy"]
    proxy.cut_after, proxy.cuts = before + (1 << 20), 1  # inside the member's bytes, once
    model = ms.load(url, storage_options=s3["proxied"]).model
    assert proxy.cuts == 0 and np.array_equal(model["weights"], big)


def test_a_silent_peer_mid_download_is_a_connection_error_not_a_hang(s3):
    url, _, before = _saved_through_the_proxy(s3, "silent.msafe")
    proxy = s3["proxy"]
    proxy.stall_after = before + (1 << 20)  # the member's bytes stop coming; no FIN
    with pytest.raises(ms.FormatError) as err:
        ms.load(url, storage_options=_quick(s3["proxied"]))
    proxy.reset()
    assert err.value.reason == "connection"
    assert "retries" in str(err.value)  # says how to give a slow store more time


def test_a_silent_peer_mid_upload_is_a_save_error_and_leaves_nothing(s3, small_parts):
    url = f"s3://{s3['bucket']}/silent-up.msafe"
    proxy = s3["proxy"]
    proxy.reset()
    writer = ArtifactWriter(url, storage_options=_quick(s3["proxied"]))
    with pytest.raises(ms.SaveError) as err:
        with writer:
            proxy.stall_after, proxy.sent = 0, 0  # no answer to anything from here on
            writer.add("model/a.bin", np.ones(12 << 20, dtype=np.uint8))
            writer.commit(b"{}")
    proxy.reset()
    assert err.value.reason == "connection"
    assert not s3["fs"].exists(f"{s3['bucket']}/silent-up.msafe")
    for upload in _uploads(s3):  # the abort could not reach the silent store: clean up like a lifecycle rule
        s3["fs"].call_s3("abort_multipart_upload", Bucket=s3["bucket"], Key=upload["Key"],
                         UploadId=upload["UploadId"])


def test_an_object_replaced_between_range_reads_is_refused(s3):
    from modelsafe.artifact.integrity import check_member
    from modelsafe.artifact.reader import open_artifact, read_manifest

    url = f"s3://{s3['bucket']}/moving.msafe"
    weights = np.arange(1 << 20, dtype=np.float32)  # 4 MiB: beyond the tail read when the object is opened
    ms.save({"w": weights}, url, storage_options=s3["options"])
    with open_artifact(url, s3["options"]) as reader:
        manifest = read_manifest(reader)
        ms.save({"w": weights + 1}, url, overwrite=True, storage_options=s3["options"])  # a new version
        name = max(manifest.members, key=lambda n: manifest.members[n].size)
        with pytest.raises(ms.IntegrityError) as err:
            check_member(reader, name, manifest.members[name])
    assert err.value.reason == "changed" and err.value.path == url
