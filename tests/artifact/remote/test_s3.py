"""Artifacts on a real S3 API (moto's server on loopback): round trips, range reads, conditional
writes, store errors, the hash cache, scan, the CLI and convert (failures mid-transfer: test_s3_failures)."""

from __future__ import annotations

import numpy as np
import pytest

import modelsafe as ms
from modelsafe.artifact.writer import ArtifactWriter


def _model():
    from sklearn.linear_model import LogisticRegression

    X = np.random.default_rng(0).normal(size=(60, 4))
    return LogisticRegression().fit(X, (X[:, 0] > 0).astype(int)), X


def test_inspect_of_a_200_mb_artifact_reads_under_1_mib(s3):
    big = np.random.default_rng(1).integers(0, 255, size=200 << 20, dtype=np.uint8)
    url = f"s3://{s3['bucket']}/big.msafe"
    ms.save({"weights": big}, url, storage_options=s3["options"])
    proxy = s3["proxy"]
    proxy.reset()
    manifest = ms.inspect(url, storage_options=s3["proxied"])
    assert sum(m.size for m in manifest.members.values()) > 200 << 20
    assert 0 < proxy.sent <= 1 << 20, proxy.sent
    proxy.reset()
    assert ms.check_env(url, storage_options=s3["proxied"]).ok
    assert 0 < proxy.sent <= 1 << 20, proxy.sent


def test_a_flipped_byte_is_an_integrity_error_before_anything_is_deserialized(s3, monkeypatch):
    model, X = _model()
    url = f"s3://{s3['bucket']}/flip.msafe"
    manifest = ms.save(model, url, sample=X[:8], storage_options=s3["options"])
    fs, key = s3["fs"], f"{s3['bucket']}/flip.msafe"
    data = bytearray(fs.cat_file(key))
    stream = next(n for n in manifest.members if n.endswith("graph.pkl"))
    at = bytes(data).index(b"sklearn")  # inside the pickle stream's bytes
    data[at] ^= 0xFF
    fs.pipe_file(key, bytes(data))
    from modelsafe.security import _unpickler

    def never(*args, **kwargs):
        raise AssertionError("deserialized before the integrity check")

    # The one unpickler class every load path's restricted_loads builds (patched on the class: the flavors bound
    # restricted_loads itself when they were imported).
    monkeypatch.setattr(_unpickler._RestrictedUnpickler, "load", never)
    with pytest.raises(ms.IntegrityError) as err:
        ms.load(url, storage_options=s3["options"])
    assert err.value.member == stream


@pytest.mark.parametrize("member_bytes", [4_000, 24 << 20], ids=["one-put", "multipart"])
def test_overwrite_false_on_an_existing_key_and_a_writer_that_lost_the_race(s3, member_bytes):
    model, X = _model()
    url = f"s3://{s3['bucket']}/taken.msafe"
    ms.save(model, url, storage_options=s3["options"])
    with pytest.raises(ms.SaveError) as err:
        ms.save(model, url, storage_options=s3["options"])
    assert err.value.reason == "exists"
    # Another writer completes first while this one is streaming: If-None-Match: * refuses this one.
    late = f"s3://{s3['bucket']}/race-{member_bytes}.msafe"
    with ArtifactWriter(late, storage_options=s3["options"]) as writer:
        writer.add("model/data.bin", np.random.default_rng(0).bytes(member_bytes))  # the multipart case: If-None-Match
        s3["fs"].pipe_file(late.removeprefix("s3://"), b"the other writer's bytes")  # on CompleteMultipartUpload
        with pytest.raises(ms.SaveError) as err:
            writer.commit(b"{}")
    assert err.value.reason == "exists"
    assert s3["fs"].cat_file(late.removeprefix("s3://")) == b"the other writer's bytes"
    uploads = s3["fs"].call_s3("list_multipart_uploads", Bucket=s3["bucket"]).get("Uploads", [])
    assert not [u for u in uploads if u["Key"] == late.split("/", 3)[3]]  # the refused one was aborted
    ms.save(model, url, sample=X[:8], overwrite=True, storage_options=s3["options"])
    assert ms.load(url, storage_options=s3["options"]).verify().ok


def test_a_writer_that_lost_the_race_for_a_folder_leaves_the_winners_members_alone(s3):
    model, X = _model()
    url = f"s3://{s3['bucket']}/raced"
    with ArtifactWriter(url, storage_options=s3["options"]) as writer:  # checked the prefix: free
        ms.save(model, url, sample=X[:8], storage_options=s3["options"])  # the other writer, start to end
        names = sorted(s3["fs"].find(f"{s3['bucket']}/raced"))
        winner = {name: s3["fs"].cat_file(name) for name in names}
        with pytest.raises(ms.SaveError) as err:  # the same member names, other bytes
            for name in names:
                member = name.removeprefix(f"{s3['bucket']}/raced/")
                if member != "modelsafe.json":
                    writer.add(member, b"the losing writer's bytes")
            writer.commit(b"{}")
    assert err.value.reason == "exists", str(err.value)
    s3["fs"].invalidate_cache()
    assert {name: s3["fs"].cat_file(name) for name in sorted(s3["fs"].find(f"{s3['bucket']}/raced"))} == winner
    assert ms.load(url, storage_options=s3["options"]).verify().ok


def test_overwrite_replaces_only_an_artifact(s3):
    s3["fs"].pipe_file(f"{s3['bucket']}/notes.msafe", b"not an artifact")
    model, _ = _model()
    with pytest.raises(ms.SaveError) as err:
        ms.save(model, f"s3://{s3['bucket']}/notes.msafe", overwrite=True, storage_options=s3["options"])
    assert err.value.reason == "not-an-artifact"
    assert s3["fs"].cat_file(f"{s3['bucket']}/notes.msafe") == b"not an artifact"


def test_store_errors_name_what_happened(s3, fresh):
    with pytest.raises(ms.FormatError) as err:
        ms.inspect("s3://no-such-bucket-here/m.msafe", storage_options=s3["options"])
    assert err.value.reason == "no-bucket"
    with pytest.raises(ms.FormatError) as err:
        ms.inspect(f"s3://{s3['bucket']}/nothing.msafe", storage_options=s3["options"])
    assert err.value.reason == "not-found"
    model, _ = _model()
    with pytest.raises(ms.SaveError) as err:
        ms.save(model, "s3://no-such-bucket-here/m.msafe", storage_options=s3["options"])
    assert err.value.reason == "no-bucket"
    out = fresh(f"""
        import os, modelsafe as ms
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
            os.environ.pop(key, None)
        os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.environ["AWS_CONFIG_FILE"] = os.devnull
        os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
        try:
            ms.inspect("s3://{s3['bucket']}/m.msafe", storage_options={s3['options']!r})
        except ms.FormatError as exc:
            print(exc.reason)
            print(exc)
    """)
    assert out.stdout.splitlines()[0] == "no-credentials"
    assert "storage_options" in out.stdout


def test_the_verified_hash_cache_keys_on_the_etag(s3):
    from modelsafe.artifact import hash_cache
    from modelsafe.artifact.reader import open_artifact, read_manifest

    big = {"weights": np.random.default_rng(2).normal(size=1 << 18)}  # 2 MiB: above CACHE_MIN_BYTES
    url = f"s3://{s3['bucket']}/cached.msafe"
    ms.save(big, url, storage_options=s3["options"])

    def key() -> str:
        with open_artifact(url, s3["options"]) as reader:
            found, _ = hash_cache.cache_key(reader, read_manifest(reader).members)
        assert found is not None
        return found

    first = key()
    assert not hash_cache.is_verified(first)
    ms.load(url, storage_options=s3["options"])
    assert hash_cache.is_verified(first)
    ms.save({"weights": big["weights"] + 1}, url, overwrite=True, storage_options=s3["options"])
    assert key() != first and not hash_cache.is_verified(key())


def test_scan_and_cli_take_urls(s3, cli):
    import pickle

    s3["fs"].pipe_file(f"{s3['bucket']}/plain.pkl", pickle.dumps({"w": [1.0, 2.0]}))
    s3["fs"].pipe_file(f"{s3['bucket']}/evil.pkl", b"cos\nsystem\n(S'echo hi'\ntR.")
    assert ms.scan(f"s3://{s3['bucket']}/plain.pkl", storage_options=s3["options"]).ok
    assert not ms.scan(f"s3://{s3['bucket']}/evil.pkl", storage_options=s3["options"]).ok
    model, X = _model()
    url = f"s3://{s3['bucket']}/cli.msafe"
    ms.save(model, url, sample=X[:8], storage_options=s3["options"])
    option = f"endpoint_url={s3['options']['endpoint_url']}"
    for command in ("inspect", "env", "verify", "scan", "doctor"):
        result = cli(command, url, "--storage-option", option, "--json")
        assert result.returncode == 0, (command, result.stdout, result.stderr)
    result = cli("scan", f"s3://{s3['bucket']}/evil.pkl", "--storage-option", option)
    assert result.returncode == 1
    result = cli("inspect", url, "--storage-option", "no-equals-sign")
    assert result.returncode == 2 and "KEY=VALUE" in result.stderr + result.stdout


def test_convert_from_and_to_s3(s3, tmp_path):
    import pickle

    model, X = _model()
    s3["fs"].pipe_file(f"{s3['bucket']}/legacy.pkl", pickle.dumps(model))
    url = f"s3://{s3['bucket']}/converted.msafe"
    manifest = ms.convert(f"s3://{s3['bucket']}/legacy.pkl", url, sample=X[:8], storage_options=s3["options"])
    assert manifest.flavor == "sklearn"
    assert ms.load(url, storage_options=s3["options"]).verify().ok
    report = ms.doctor(f"s3://{s3['bucket']}/legacy.pkl", storage_options=s3["options"])
    assert report.target == f"s3://{s3['bucket']}/legacy.pkl"
