"""``modelsafe keygen``, ``sign``, ``verify --trusted-key`` and the signature lines of ``inspect``."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys


def _run(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "modelsafe", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd, timeout=300)


def test_keygen_then_sign_then_verify(tmp_path, kit):
    artifact = kit.save(tmp_path / "model.msafe")
    made = _run("--json", "keygen", tmp_path / "keys")
    assert made.returncode == 0, made.stderr
    facts = json.loads(made.stdout)
    assert facts["curve"] == "P-256" and not facts["encrypted"]
    assert stat.S_IMODE(os.stat(facts["private_key"]).st_mode) == 0o600
    again = _run("keygen", tmp_path / "keys")
    assert again.returncode == 2 and "already exists: keygen never replaces a key" in again.stdout
    signed = _run("sign", artifact, "--key", facts["private_key"])
    assert signed.returncode == 0 and f"signed {artifact} -> {artifact}.sig" in signed.stdout
    verified = _run("verify", artifact, "--trusted-key", facts["public_key"])
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.startswith(f"signature: valid, signed by key {facts['fingerprint']}")
    assert "verification of" in verified.stdout and "passed" in verified.stdout
    as_json = json.loads(_run("--json", "verify", artifact, "--trusted-key", facts["public_key"]).stdout)
    assert as_json["ok"] and as_json["signature"]["verified"] and as_json["signature"]["signer"] == facts["fingerprint"]


def test_verify_refusals_exit_1_and_name_the_error(tmp_path, kit):
    artifact = kit.save(tmp_path / "model")
    mine, theirs = kit.make_keys(tmp_path / "mine"), kit.make_keys(tmp_path / "theirs")
    unsigned = _run("verify", artifact, "--trusted-key", mine.public)
    assert unsigned.returncode == 1 and "UnsignedArtifactError" in unsigned.stdout
    assert _run("sign", artifact, "--key", theirs.private).returncode == 0
    untrusted = _run("--json", "verify", artifact, "--trusted-key", mine.public)
    assert untrusted.returncode == 1 and json.loads(untrusted.stdout)["error"] == "UntrustedSignerError"
    assert theirs.fingerprint in json.loads(untrusted.stdout)["message"]
    assert _run("verify", artifact, "--trusted-key", mine.public, "--signature", "ignore").returncode == 0
    from_env = _run("verify", artifact, env={"MODELSAFE_TRUSTED_KEYS": str(theirs.public)})
    assert from_env.returncode == 0 and "signature: valid" in from_env.stdout
    assert "Traceback" not in untrusted.stderr + unsigned.stderr


def test_encrypted_key_password_from_a_file_or_the_environment(tmp_path, kit):
    artifact = kit.save(tmp_path / "model.msafe")
    (tmp_path / "pw").write_text("long passphrase\n")
    made = _run("--json", "keygen", tmp_path / "keys", "--password-file", tmp_path / "pw")
    facts = json.loads(made.stdout)
    assert facts["encrypted"]
    missing = _run("sign", artifact, "--key", facts["private_key"])  # no terminal here: no prompt
    assert missing.returncode == 2 and "is encrypted and no password was given" in missing.stdout
    assert "long passphrase" not in missing.stdout + missing.stderr
    assert _run("sign", artifact, "--key", facts["private_key"], "--password-file", tmp_path / "pw").returncode == 0
    by_env = _run("sign", artifact, "--key", facts["private_key"], env={"MODELSAFE_KEY_PASSWORD": "long passphrase"})
    assert by_env.returncode == 0, by_env.stdout
    wrong = _run("sign", artifact, "--key", facts["private_key"], env={"MODELSAFE_KEY_PASSWORD": "nope"})
    assert wrong.returncode == 2 and "the password is wrong" in wrong.stdout


def test_inspect_shows_the_signer_and_whether_it_is_trusted_here(tmp_path, kit, keys, monkeypatch):
    monkeypatch.delenv("MODELSAFE_TRUSTED_KEYS", raising=False)
    artifact = kit.save(tmp_path / "model.msafe", provenance={"owner": "risk-team"})
    assert "signature: none" in _run("inspect", artifact).stdout
    (tmp_path / "prov.json").write_text(json.dumps({"datasets": ["s3://data/train.parquet"], "ticket": "ML-42"}))
    assert _run("sign", artifact, "--key", keys.private, "--provenance", tmp_path / "prov.json").returncode == 0
    plain = _run("inspect", artifact)
    assert plain.returncode == 0
    assert "provenance (recorded at save): {'owner': 'risk-team'}" in plain.stdout
    assert f"signed by key {keys.fingerprint} (as the signature file claims)" in plain.stdout
    assert "provenance (unverified):" in plain.stdout and "ticket: ML-42" in plain.stdout
    trusted = _run("--json", "inspect", artifact, "--trusted-key", keys.public)
    signature = json.loads(trusted.stdout)["signature"]
    assert signature["verified"] and signature["trusted_by"] == str(keys.public)
    assert signature["provenance"]["datasets"] == [{"uri": "s3://data/train.parquet"}]
    assert signature["provenance"]["owner"] == "risk-team"  # the save's provenance is signed too


def test_sign_records_the_git_commit_of_the_working_directory(tmp_path, kit, keys):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    (repo / "train.py").write_text("print('train')\n")
    for args in (["init", "-q", "-b", "main"], ["add", "train.py"], ["commit", "-q", "-m", "train"]):
        subprocess.run([*git, *args], cwd=repo, check=True, capture_output=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    artifact = kit.save(tmp_path / "model")
    assert _run("sign", artifact, "--key", keys.private, "--git", cwd=repo).returncode == 0
    report = json.loads(_run("--json", "inspect", artifact, "--trusted-key", keys.public).stdout)["signature"]
    assert report["provenance"]["git"] == {"commit": commit, "dirty": False, "branch": "main"}
    (repo / "train.py").write_text("print('changed')\n")
    assert _run("sign", artifact, "--key", keys.private, "--git", cwd=repo).returncode == 0
    report = json.loads(_run("--json", "inspect", artifact, "--trusted-key", keys.public).stdout)["signature"]
    assert report["provenance"]["git"]["dirty"] is True
