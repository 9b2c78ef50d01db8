"""Interoperability with the real ``model_signing`` (OpenSSF Model Signing 1.x), both ways, on the
folder form: its CLI (a subprocess) and its Python API. The single-file form, unzipped to a folder."""

from __future__ import annotations

import base64
import json
import zipfile
from pathlib import Path

import model_signing
import pytest

import modelsafe as ms


def _ok(proc) -> None:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "succeeded" in proc.stdout


def _refused(proc, *fragments: str) -> None:
    # model_signing formats its diff with repr(): match fragments of its message, not sentences.
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Verification failed" in proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr, proc.stderr


@pytest.fixture
def folder(tmp_path, kit) -> Path:
    return kit.save(tmp_path / "model", provenance={"team": "risk", "run": {"epochs": 3, "lr": 0.5, "seed": None}})


@pytest.mark.parametrize("curve", ["P-256", "P-384"])
def test_model_signing_cli_verifies_a_modelsafe_signature(tmp_path, kit, folder, curve):
    keys = kit.make_keys(tmp_path / curve, curve=curve)
    ms.sign(folder, key=keys.private, provenance={"git": {"commit": "a" * 40, "dirty": False}})
    _ok(kit.model_signing("verify", "key", "--signature", kit.sig_of(folder), "--public_key", keys.public, folder))


def test_model_signing_api_verifies_a_modelsafe_signature(folder, keys, kit):
    ms.sign(folder, key=keys.private)
    model_signing.verifying.Config().use_elliptic_key_verifier(public_key=keys.public).verify(folder, kit.sig_of(folder))


def test_model_signing_refuses_what_modelsafe_refuses(folder, keys, other_keys, kit):
    ms.sign(folder, key=keys.private)
    verify = ("verify", "key", "--signature", kit.sig_of(folder), "--public_key")
    _refused(kit.model_signing(*verify, other_keys.public, folder), "Key mismatch")
    (folder / "extra.txt").write_text("added after signing")
    _refused(kit.model_signing(*verify, keys.public, folder), "extra.txt")
    with pytest.raises(ms.SignatureMismatchError):
        ms.load(folder, signature="require", trusted_keys=[keys.public])


@pytest.mark.parametrize("curve", ["P-256", "P-384"])
def test_modelsafe_verifies_a_model_signing_cli_signature(tmp_path, kit, folder, curve):
    keys = kit.make_keys(tmp_path / curve, curve=curve)
    _ok_sign = kit.model_signing("sign", "key", "--signature", kit.sig_of(folder), "--private_key", keys.private,
                                 folder)
    assert _ok_sign.returncode == 0, _ok_sign.stderr
    report = ms.verify_signature(folder, trusted_keys=[keys.public])
    assert report.ok and report.signer == keys.fingerprint and report.mode == "key"
    assert report.files == len(ms.inspect(folder).members) + 1 and report.provenance is None
    bundle = ms.load(folder, signature="require", trusted_keys=[keys.public])
    assert bundle.verify().ok


def test_modelsafe_verifies_a_model_signing_api_signature(folder, keys, kit):
    model_signing.signing.Config().use_elliptic_key_signer(private_key=keys.private).sign(folder, kit.sig_of(folder))
    assert ms.verify_signature(folder, trusted_keys=[keys.public]).ok
    ms.load(folder, signature="require", trusted_keys=[keys.public]).close()


def test_model_signing_signature_over_fewer_files_is_refused(folder, keys, kit):
    proc = kit.model_signing("sign", "key", "--signature", kit.sig_of(folder), "--private_key", keys.private,
                             "--ignore-paths", folder / "sample", folder)
    assert proc.returncode == 0, proc.stderr
    with pytest.raises(ms.SignatureMismatchError) as info:
        ms.load(folder, signature="require", trusted_keys=[keys.public])
    assert info.value.added == sorted(n for n in ms.inspect(folder).members if n.startswith("sample/"))


def test_model_signing_signature_inside_the_folder(folder, keys, kit):
    """model_signing's CLI leaves out its own --signature file when it lies inside the model folder (it
    lists it in ignore_paths): moved beside the folder, where modelsafe looks, it verifies."""
    inside = folder / "model.sig"
    proc = kit.model_signing("sign", "key", "--signature", inside, "--private_key", keys.private, folder)
    assert proc.returncode == 0, proc.stderr
    assert ms.verify_signature(folder, trusted_keys=[keys.public]).signed is False
    inside.rename(kit.sig_of(folder))
    ms.load(folder, signature="require", trusted_keys=[keys.public]).close()


def test_statement_equals_the_one_model_signing_builds(folder, keys, kit):
    """Apart from modelsafe's provenance field, and ignore_paths order (model_signing's is random)."""
    from google.protobuf import json_format
    from model_signing._signing import signing as oms_signing

    ms.sign(folder, key=keys.private)
    ours = json.loads(base64.b64decode(json.loads(kit.sig_of(folder).read_bytes())["dsseEnvelope"]["payload"]))
    theirs = json_format.MessageToDict(oms_signing.Payload(model_signing.hashing.hash(folder)).statement.pb)
    assert ours["predicate"].pop("modelsafe_provenance")["artifact"]["flavor"] == "sklearn"
    for statement in (ours, theirs):
        statement["predicate"]["serialization"]["ignore_paths"].sort()
    assert ours == theirs


def test_provenance_extra_field_is_accepted_by_model_signing(folder, keys, kit):
    report = ms.sign(folder, key=keys.private, provenance={"datasets": ["s3://bucket/train.parquet"],
                                                           "notes": "données été", "score": 0.93, "ok": True})
    assert report.provenance["team"] == "risk" and report.provenance["notes"] == "données été"
    _ok(kit.model_signing("verify", "key", "--signature", kit.sig_of(folder), "--public_key", keys.public, folder))
    model_signing.verifying.Config().use_elliptic_key_verifier(public_key=keys.public).verify(folder, kit.sig_of(folder))


def test_single_file_verified_by_model_signing_once_unzipped(tmp_path, kit, keys):
    """The README's recipe: the .msafe file's signature verifies its members, unzipped to a folder."""
    artifact = kit.save(tmp_path / "model.msafe")
    ms.sign(artifact, key=keys.private)
    unzipped = tmp_path / "unzipped"
    with zipfile.ZipFile(artifact) as zf:
        zf.extractall(unzipped)
    _ok(kit.model_signing("verify", "key", "--signature", kit.sig_of(artifact), "--public_key", keys.public,
                          unzipped))
    # and the other way: model_signing signs the unzipped folder, modelsafe checks the .msafe with it
    proc = kit.model_signing("sign", "key", "--signature", kit.sig_of(artifact), "--private_key", keys.private,
                             unzipped)
    assert proc.returncode == 0, proc.stderr
    ms.load(artifact, signature="require", trusted_keys=[keys.public]).close()


def test_certificate_mode_modelsafe_to_model_signing(tmp_path, kit, folder):
    chain = kit.make_chain(tmp_path / "pki")
    report = ms.sign(folder, key=chain.leaf_key, certificate_chain=[chain.leaf, chain.intermediate])
    assert report.mode == "certificate" and report.certificate == "CN=model publisher"
    _ok(kit.model_signing("verify", "certificate", "--signature", kit.sig_of(folder), "--certificate_chain",
                          chain.root, folder))
    model_signing.verifying.Config().use_certificate_verifier(certificate_chain=[chain.root]).verify(
        folder, kit.sig_of(folder))


def test_certificate_mode_model_signing_to_modelsafe(tmp_path, kit, folder):
    chain = kit.make_chain(tmp_path / "pki")
    proc = kit.model_signing("sign", "certificate", "--signature", kit.sig_of(folder), "--private_key",
                             chain.leaf_key, "--signing_certificate", chain.leaf, "--certificate_chain",
                             chain.intermediate, folder)
    assert proc.returncode == 0, proc.stderr
    report = ms.verify_signature(folder, trusted_keys=[chain.root])
    assert report.ok and report.signer == chain.leaf_fingerprint and report.trusted_by == str(chain.root)
    ms.load(folder, signature="require", trusted_keys=[chain.root]).close()
