"""Keys: keygen's files and modes, passwords, unusable keys, and a private key never leaking anywhere."""

from __future__ import annotations

import logging
import os
import stat
import zipfile

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

import modelsafe as ms
from modelsafe.signing import keygen
from modelsafe.signing.keys import fingerprint


def test_keygen_writes_a_p256_pair_with_a_private_key_only_its_owner_reads(tmp_path):
    private, public, fp = keygen(tmp_path / "keys")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600 and stat.S_IMODE(public.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    key = serialization.load_pem_private_key(private.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    import hashlib

    assert fp == fingerprint(key.public_key()) == hashlib.sha256(public.read_bytes()).hexdigest()  # sha256sum


def test_keygen_ignores_a_permissive_umask(tmp_path):
    old = os.umask(0)
    try:
        private, _, _ = keygen(tmp_path / "keys")
    finally:
        os.umask(old)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600


def test_keygen_refuses_to_overwrite(tmp_path):
    private, public, _ = keygen(tmp_path)
    before = private.read_bytes()
    with pytest.raises(ms.SigningError, match="already exists: keygen never replaces a key") as info:
        keygen(tmp_path)
    assert info.value.reason == "exists" and info.value.path == str(private)
    assert private.read_bytes() == before
    public.unlink()
    with pytest.raises(ms.SigningError):  # the private key alone is enough to refuse
        keygen(tmp_path)


def test_encrypted_key_needs_its_password(tmp_path, kit):
    private, public, _ = keygen(tmp_path / "keys", password="correct horse")
    assert b"ENCRYPTED PRIVATE KEY" in private.read_bytes()
    artifact = kit.save(tmp_path / "model.msafe")
    with pytest.raises(ms.SigningError, match="is encrypted and no password was given") as info:
        ms.sign(artifact, key=private)
    assert info.value.reason == "password required" and info.value.path == str(private)
    with pytest.raises(ms.SigningError, match="the password is wrong") as info:
        ms.sign(artifact, key=private, password="wrong")
    assert info.value.reason == "wrong password"
    assert not kit.sig_of(artifact).exists()
    assert ms.sign(artifact, key=private, password="correct horse").ok
    ms.load(artifact, signature="require", trusted_keys=[public]).close()


@pytest.mark.parametrize("curve", ["P-384", "P-521"])
def test_other_oms_curves_sign_and_verify(tmp_path, kit, curve):
    private, public, fp = keygen(tmp_path / "keys", curve=curve)
    artifact = kit.save(tmp_path / "model")
    assert ms.sign(artifact, key=private).signer == fp
    assert ms.verify_signature(artifact, trusted_keys=[public]).ok


def test_keys_oms_cannot_use_are_refused(tmp_path, kit):
    artifact = kit.save(tmp_path / "model.msafe")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    with pytest.raises(ms.SigningError, match="is a RSA key, and OpenSSF Model Signing signs only with ECDSA"):
        ms.sign(artifact, key=pem)
    k1 = ec.generate_private_key(ec.SECP256K1())
    with pytest.raises(ms.SigningError, match="secp256k1"):
        ms.sign(artifact, key=k1)
    with pytest.raises(ms.SigningError, match="Unknown curve 'P-224'"):
        keygen(tmp_path / "k", curve="P-224")
    (tmp_path / "garbage.pem").write_text("not a key")
    with pytest.raises(ms.SigningError, match="cannot be read as a PEM private key") as info:
        ms.sign(artifact, key=tmp_path / "garbage.pem")
    assert info.value.reason == "not a private key"
    with pytest.raises(ms.SigningError, match="Cannot read the key file"):
        ms.sign(artifact, key=tmp_path / "missing.pem")


def test_trusted_keys_that_are_not_public_keys_are_refused(tmp_path, kit, keys):
    artifact = kit.save(tmp_path / "model.msafe")
    ms.sign(artifact, key=keys.private)
    with pytest.raises(ms.SigningError, match="is a private key. Trust is given with the public key") as info:
        ms.verify_signature(artifact, trusted_keys=[keys.private])
    assert keys.private.read_text() not in str(info.value)
    (tmp_path / "junk.pem").write_text("junk")
    with pytest.raises(ms.SigningError, match="is not a PEM public key or certificate"):
        ms.load(artifact, signature="require", trusted_keys=[tmp_path / "junk.pem"])


def test_trusted_keys_as_key_objects_and_pem_bytes(tmp_path, kit, keys):
    artifact = kit.save(tmp_path / "model")
    ms.sign(artifact, key=serialization.load_pem_private_key(keys.private.read_bytes(), password=None))
    public = serialization.load_pem_public_key(keys.public.read_bytes())
    assert ms.verify_signature(artifact, trusted_keys=[public]).ok
    assert ms.verify_signature(artifact, trusted_keys=keys.public.read_bytes()).ok  # one key, not a list
    assert ms.verify_signature(artifact, trusted_keys=str(keys.public)).ok


def test_a_private_key_never_enters_the_artifact_the_signature_a_message_or_a_log(tmp_path, kit, caplog):
    private, public, _ = keygen(tmp_path / "keys", password="s3cret-pass")
    secret_pem = private.read_bytes()
    clear = serialization.load_pem_private_key(secret_pem, password=b"s3cret-pass")
    raw = clear.private_numbers().private_value.to_bytes(32, "big")
    clear_pem = clear.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    secrets = [secret_pem, clear_pem, raw, raw.hex().encode(), b"s3cret-pass",
               clear_pem.split(b"\n")[1]]  # a line of the key's base64
    messages = []
    caplog.set_level(logging.DEBUG)
    for artifact in (kit.save(tmp_path / "model.msafe"), kit.save(tmp_path / "model")):
        for attempt in ({}, {"password": "wrong"}):
            with pytest.raises(ms.SigningError) as info:
                ms.sign(artifact, key=private, **attempt)
            messages.append(str(info.value) + repr(info.value.__dict__))
        report = ms.sign(artifact, key=private, password="s3cret-pass")
        messages += [str(report), report.to_json(), repr(report)]
        files = [artifact.read_bytes()] if artifact.is_file() else [p.read_bytes() for p in artifact.rglob("*")
                                                                    if p.is_file()]
        if artifact.is_file():
            with zipfile.ZipFile(artifact) as zf:
                files += [zf.read(n) for n in zf.namelist()]
        files.append(kit.sig_of(artifact).read_bytes())
        for blob in [*files, *(m.encode() for m in messages), *(r.getMessage().encode() for r in caplog.records)]:
            assert not any(secret in blob for secret in secrets)


def test_signing_refuses_an_artifact_holding_files_its_manifest_does_not_list(tmp_path, kit, keys):
    """A private key dropped into the artifact folder is never signed into it (nor any other stray file)."""
    artifact = kit.save(tmp_path / "model")
    (artifact / "private.pem").write_bytes(keys.private.read_bytes())
    with pytest.raises(ms.SigningError, match=r"holds files its manifest does not list \(private.pem\)") as info:
        ms.sign(artifact, key=keys.private)
    assert info.value.unlisted == ["private.pem"] and not kit.sig_of(artifact).exists()
