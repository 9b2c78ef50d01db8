"""Attacks on signed artifacts: swapped manifests and signatures, replayed signatures, signatures that
cover less than the artifact holds, forged bundles. Each is refused with the error that names it."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from pathlib import Path

import pytest

import modelsafe as ms
from modelsafe.signing.bundle import sign_statement
from modelsafe.signing.keys import load_private_key
from modelsafe.signing.statement import statement_for


def _load(path: Path, keys) -> None:
    ms.load(path, signature="require", trusted_keys=[keys.public]).close()


def _bundle(path: Path) -> dict:
    return json.loads(path.read_bytes())


def _write_bundle(path: Path, bundle: dict) -> None:
    path.write_text(json.dumps(bundle))


def _resources(folder: Path, skip: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    manifest = ms.inspect(folder)
    found = [(n, r.sha256) for n, r in manifest.members.items() if n not in skip]
    if "modelsafe.json" not in skip:
        found.append(("modelsafe.json", hashlib.sha256((folder / "modelsafe.json").read_bytes()).hexdigest()))
    return found


def test_validly_signed_manifest_of_another_artifact_swapped_in(tmp_path, kit, keys):
    """B's manifest and B's signature put into A: same member names, so the signature holds, and the
    integrity check refuses A's members; C's, which lists fewer files, is refused by the signature."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    model, X = kit.small_model
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    ms.save(model, a, sample=X[:5])
    ms.save(LogisticRegression(C=0.01).fit(X, X[:, 1] > 0), b, sample=X[:5])
    ms.save(DecisionTreeClassifier().fit(X, X[:, 2] > 0), c)  # no sample: no sample/ members
    for artifact in (a, b, c):
        ms.sign(artifact, key=keys.private)
    shutil.copy(b / "modelsafe.json", a / "modelsafe.json")
    shutil.copy(kit.sig_of(b), kit.sig_of(a))
    with pytest.raises(ms.IntegrityError):
        _load(a, keys)
    shutil.copy(c / "modelsafe.json", a / "modelsafe.json")  # now a manifest with other members
    shutil.copy(kit.sig_of(c), kit.sig_of(a))
    with pytest.raises(ms.SignatureMismatchError) as info:
        _load(a, keys)
    assert info.value.unlisted == sorted(n for n in ms.inspect(b).members if n.startswith("sample/"))


def test_manifest_of_another_artifact_with_the_original_signature(tmp_path, kit, keys):
    a, b = kit.save(tmp_path / "a.msafe"), kit.save(tmp_path / "b", metadata={"name": "b"})
    ms.sign(a, key=keys.private)
    ms.sign(b, key=keys.private)
    shutil.copy(kit.sig_of(b), kit.sig_of(a))  # b's valid signature beside a
    with pytest.raises(ms.SignatureMismatchError) as info:
        _load(a, keys)
    assert info.value.reason == "manifest changed"


def test_old_signature_replayed_after_re_saving(tmp_path, kit, keys):
    from sklearn.linear_model import LogisticRegression

    model, X = kit.small_model
    path = kit.save(tmp_path / "model.msafe")
    ms.sign(path, key=keys.private)
    old_signature = kit.sig_of(path).read_bytes()
    ms.save(LogisticRegression(C=5.0).fit(X, X[:, 1] > 0), path, sample=X[:5], overwrite=True)
    kit.sig_of(path).write_bytes(old_signature)
    with pytest.raises(ms.SignatureMismatchError) as info:
        _load(path, keys)
    assert "modelsafe.json" in [c[0] for c in info.value.changed]
    assert "if you re-saved it yourself, sign it again" in str(info.value)


def test_old_signature_names_both_save_times(tmp_path, kit, keys):
    path = kit.save(tmp_path / "model")
    ms.sign(path, key=keys.private)
    old_signature = kit.sig_of(path).read_bytes()
    manifest = json.loads((path / "modelsafe.json").read_bytes())
    manifest["created"] = "2031-01-01T00:00:00+00:00"  # a later save of the same model
    (path / "modelsafe.json").write_text(json.dumps(manifest))
    kit.sig_of(path).write_bytes(old_signature)
    with pytest.raises(ms.SignatureMismatchError, match=r"saved at .*; this one was saved at 2031-01-01"):
        _load(path, keys)


def _sign_resources(folder: Path, keys, resources, **kwargs) -> None:
    statement = statement_for(resources, model_name=folder.name, **kwargs)
    bundle = sign_statement(statement, load_private_key(keys.private))
    _write_bundle(Path(str(folder) + ".sig"), bundle)


def test_signature_over_fewer_members_than_the_archive_holds(tmp_path, kit, keys):
    folder = kit.save(tmp_path / "model")
    left_out = "sample/inputs.npy"
    _sign_resources(folder, keys, _resources(folder, skip=(left_out,)))
    with pytest.raises(ms.SignatureMismatchError) as info:
        _load(folder, keys)
    assert info.value.added == [left_out] and not info.value.changed


def test_signature_that_ignores_the_manifest(tmp_path, kit, keys):
    folder = kit.save(tmp_path / "model")
    _sign_resources(folder, keys, _resources(folder, skip=("modelsafe.json",)),
                    ignore_paths=(".git", ".gitattributes", ".github", ".gitignore", "modelsafe.json"))
    with pytest.raises(ms.SignatureMismatchError) as info:
        _load(folder, keys)
    assert info.value.added == ["modelsafe.json"]


def test_forged_key_hint(artifact, keys, other_keys, kit):
    """Signed by another key, with the trusted key's fingerprint written in: the signature fails."""
    ms.sign(artifact, key=other_keys.private)
    bundle = _bundle(kit.sig_of(artifact))
    bundle["verificationMaterial"]["publicKey"]["hint"] = keys.fingerprint
    _write_bundle(kit.sig_of(artifact), bundle)
    with pytest.raises(ms.InvalidSignatureError) as info:
        _load(artifact, keys)
    assert info.value.reason == "invalid" and info.value.fingerprint == keys.fingerprint


def test_payload_altered_without_re_signing(artifact, keys, kit):
    ms.sign(artifact, key=keys.private)
    bundle = _bundle(kit.sig_of(artifact))
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    statement["predicate"]["modelsafe_provenance"]["git"] = {"commit": "0" * 40}
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    _write_bundle(kit.sig_of(artifact), bundle)
    with pytest.raises(ms.InvalidSignatureError, match="does not verify"):
        _load(artifact, keys)


def test_signature_bytes_altered(artifact, keys, kit):
    ms.sign(artifact, key=keys.private)
    bundle = _bundle(kit.sig_of(artifact))
    raw = bytearray(base64.b64decode(bundle["dsseEnvelope"]["signatures"][0]["sig"]))
    raw[-1] ^= 0x01
    bundle["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(bytes(raw)).decode()
    _write_bundle(kit.sig_of(artifact), bundle)
    with pytest.raises(ms.InvalidSignatureError):
        _load(artifact, keys)


@pytest.mark.parametrize("mutate, detail", [
    (lambda b: b.update(mediaType="application/vnd.dev.sigstore.bundle+json;version=0.3"), "mediaType"),
    (lambda b: b["dsseEnvelope"].update(signatures=[]), "exactly one DSSE signature"),
    (lambda b: b["dsseEnvelope"].update(payloadType="text/plain"), "payloadType"),
    (lambda b: b["dsseEnvelope"].update(payload="%%%"), "not valid base64"),
    (lambda b: b.pop("dsseEnvelope"), "no dsseEnvelope"),
    (lambda b: b["verificationMaterial"].update(x509CertificateChain={"certificates": []}), "exactly one of"),
])
def test_malformed_bundles(artifact, keys, kit, mutate, detail):
    ms.sign(artifact, key=keys.private)
    bundle = _bundle(kit.sig_of(artifact))
    mutate(bundle)
    _write_bundle(kit.sig_of(artifact), bundle)
    with pytest.raises(ms.InvalidSignatureError, match=detail) as info:
        _load(artifact, keys)
    assert info.value.reason == "malformed"


def test_keyless_sigstore_bundle_is_refused_as_unsupported(artifact, keys, kit):
    ms.sign(artifact, key=keys.private)
    bundle = _bundle(kit.sig_of(artifact))
    bundle["verificationMaterial"] = {"certificate": {"rawBytes": "AAAA"}, "tlogEntries": [{"logIndex": "1"}]}
    _write_bundle(kit.sig_of(artifact), bundle)
    with pytest.raises(ms.InvalidSignatureError, match="Sigstore keyless signature") as info:
        _load(artifact, keys)
    assert info.value.reason == "unsupported"


def test_oversized_signature_file_is_refused_unread(artifact, keys, kit):
    from modelsafe.signing.location import MAX_BUNDLE_BYTES

    with open(kit.sig_of(artifact), "wb") as f:
        f.truncate(MAX_BUNDLE_BYTES + 10)
    with pytest.raises(ms.InvalidSignatureError, match="more than the"):
        _load(artifact, keys)
