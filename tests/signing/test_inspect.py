"""``ms.inspect`` reports who signed an artifact and whether that key is trusted here, as ``modelsafe inspect``
prints it: both come from ``manifest.signature`` (the SignatureReport ``ms.inspect`` makes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import modelsafe as ms


@pytest.fixture(autouse=True)
def _no_trusted_keys_from_the_environment(monkeypatch):
    monkeypatch.delenv("MODELSAFE_TRUSTED_KEYS", raising=False)


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "modelsafe", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def test_an_unsigned_artifact_says_so(artifact):
    manifest = ms.inspect(artifact)
    assert not manifest.signature.signed and not manifest.signature.ok
    assert str(manifest).splitlines()[-1] == f"  signature: none ({artifact}.sig does not exist)"
    record = manifest.to_dict()["signature"]
    assert (record["signed"], record["verified"], record["signer"], record["error"]) == (
        False, False, None, "UnsignedArtifactError")


def test_the_signer_is_shown_and_not_trusted_without_trusted_keys(artifact, keys):
    ms.sign(artifact, key=keys.private)
    manifest = ms.inspect(artifact)
    text = str(manifest)
    assert "  signature: NOT verified: untrusted: " in text
    assert f"    signed by key {keys.fingerprint} (as the signature file claims)" in text
    record = manifest.to_dict()["signature"]
    assert record["signer"] == keys.fingerprint and not record["verified"] and record["trusted_by"] is None
    assert record["error"] == "UntrustedSignerError" and record["signature"] == f"{artifact}.sig"


def test_trusted_keys_make_it_trusted_here(artifact, keys, other_keys):
    ms.sign(artifact, key=keys.private, provenance={"ticket": "ML-7"})
    manifest = ms.inspect(artifact, trusted_keys=[keys.public])
    assert (f"  signature: valid, signed by key {keys.fingerprint}, trusted here through {keys.public}"
            in str(manifest))
    assert "      ticket: ML-7" in str(manifest)
    record = manifest.to_dict()["signature"]
    assert record["verified"] and record["ok"] and record["trusted_by"] == str(keys.public)
    assert record["signer"] == keys.fingerprint and record["provenance"]["ticket"] == "ML-7"
    assert record["files"] == len(manifest.members) + 1 and record["error"] is None
    # another key trusted instead: the signer is named, and it is not trusted
    other = ms.inspect(artifact, trusted_keys=[other_keys.public]).signature
    assert not other.verified and other.signer == keys.fingerprint and other.problem.startswith("untrusted")
    assert other.error.fingerprint == keys.fingerprint and other_keys.fingerprint[:16] in str(other.error)


def test_trusted_keys_default_to_the_environment_variable(artifact, keys, other_keys, monkeypatch):
    ms.sign(artifact, key=keys.private)
    monkeypatch.setenv("MODELSAFE_TRUSTED_KEYS", str(keys.public))
    assert ms.inspect(artifact).signature.trusted_by == str(keys.public)
    assert ms.inspect(artifact, trusted_keys=[]).signature.verified  # empty: the variable
    with pytest.raises(ms.SigningError, match="Cannot read the trusted key"):  # a key that cannot be read is no finding
        ms.inspect(artifact, trusted_keys=[keys.private.parent / "missing.pem"])
    with pytest.raises(ms.UntrustedSignerError):  # the report's error, for a caller that wants to refuse
        ms.inspect(artifact, trusted_keys=[other_keys.public]).signature.raise_if_failed()  # given: not the variable


def test_a_manifest_edited_after_signing_is_reported_not_raised(tmp_path, kit, keys):
    folder = kit.save(tmp_path / "model")
    ms.sign(folder, key=keys.private)
    manifest = json.loads((folder / "modelsafe.json").read_text())
    manifest["metadata"] = {"owner": "someone else"}
    (folder / "modelsafe.json").write_text(json.dumps(manifest))
    inspected = ms.inspect(folder, trusted_keys=[keys.public])
    assert inspected.metadata == {"owner": "someone else"}  # the manifest as it is, and the finding beside it
    report = inspected.signature
    assert not report.ok and report.signer == keys.fingerprint and report.problem.startswith("manifest changed")
    assert inspected.to_dict()["signature"]["error"] == "SignatureMismatchError"
    assert "signature: NOT verified: manifest changed" in str(inspected)


def test_the_signature_is_not_part_of_the_manifest(artifact, keys):
    ms.sign(artifact, key=keys.private)
    inspected = ms.inspect(artifact, trusted_keys=[keys.public])
    bundle = ms.load(artifact)
    try:
        assert bundle.manifest.signature is None and inspected == bundle.manifest
    finally:
        bundle.close()
    assert b'"signature"' not in inspected.to_json()
    assert ms.Manifest.from_json(inspected.to_json()) == inspected
    assert set(inspected.to_dict()) - set(bundle.manifest.to_dict()) == {"signature"}
    assert "signature" not in repr(inspected)


def test_modelsafe_inspect_prints_what_ms_inspect_reports(artifact, keys):
    ms.sign(artifact, key=keys.private)
    for extra in ([], ["--trusted-key", keys.public]):
        expected = ms.inspect(artifact, trusted_keys=[str(k) for k in extra[1:]])
        proc = _cli("--json", "inspect", artifact, *extra)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["signature"] == expected.to_dict()["signature"]
        text = _cli("inspect", artifact, *extra).stdout
        assert expected.signature.section() in text
        assert text.rstrip("\n").endswith(expected.signature.section().splitlines()[-1])


def test_without_cryptography_a_signature_is_reported_unchecked(artifact, keys, fresh):
    ms.sign(artifact, key=keys.private)
    proc = fresh(f"""
        import sys
        sys.modules["cryptography"] = None  # as if modelsafe[signing] were not installed
        import json, modelsafe as ms
        manifest = ms.inspect({str(artifact)!r}, trusted_keys=[{str(keys.public)!r}])
        print(str(manifest).splitlines()[-1])
        print(json.dumps(manifest.to_dict()["signature"]))
    """)
    line, record = proc.stdout.rstrip("\n").splitlines()
    assert line == ("  signature: present, not checked here: the package 'cryptography' is not installed "
                    "(pip install 'modelsafe[signing]')")
    record = json.loads(record)
    assert record["signed"] and not record["verified"] and record["error"] == "FlavorNotInstalledError"
