"""``modelsafe serve --signature require --trusted-key PUB.pem``: a server that cannot prove where a model
came from does not start (one process, several workers, or --isolate), and one that can serves it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys

import httpx
import pytest

import modelsafe as ms

ROW = {"income": 50.0, "age": 30, "score": 0.5}


@pytest.fixture
def copy(artifacts, tmp_path):
    """``copy(name)``: the served pipe.msafe copied to tmp_path/name (its signature is the test's business)."""
    def make(name: str):
        target = tmp_path / name
        shutil.copy(artifacts / "pipe.msafe", target)
        return target
    return make


@pytest.fixture
def pair(tmp_path):
    from modelsafe.signing import keygen

    def make(name: str):
        return keygen(tmp_path / name)  # (private, public, fingerprint)
    return make


def _refused(args, cwd):
    """Run ``modelsafe serve`` on a free port, expecting it to refuse; return (process, port). Environments
    ``--isolate`` would build go to cwd/envs, which must stay absent: the signature is checked first."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MODELSAFE_TRUSTED_KEYS")}
    env["MODELSAFE_ENVS_DIR"] = str(cwd / "envs")
    proc = subprocess.run([sys.executable, "-m", "modelsafe", "serve", *map(str, args), "--port", str(port)],
                          cwd=str(cwd), capture_output=True, text=True, env=env, timeout=300)
    return proc, port


def _nothing_listens(port):
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.parametrize("extra", [[], ["--workers", "2"], ["--isolate"]], ids=["one-process", "workers", "isolate"])
def test_an_unsigned_artifact_under_require_stops_the_server(copy, pair, tmp_path, extra):
    artifact = copy("unsigned.msafe")
    _, public, _ = pair("mine")
    proc, port = _refused([artifact.name, "--signature", "require", "--trusted-key", public, *extra], tmp_path)
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("unsigned.msafe: UnsignedArtifactError: ") and "unsigned.msafe.sig' beside it" in last
    assert "modelsafe sign ARTIFACT --key private.pem" in last  # how to fix it
    assert "Traceback" not in proc.stderr and "Uvicorn running" not in proc.stderr
    assert _nothing_listens(port) and not (tmp_path / "envs").exists()  # no environment built for --isolate


@pytest.mark.parametrize("extra", [[], ["--isolate"]], ids=["one-process", "isolate"])
def test_a_signer_not_trusted_stops_the_server(copy, pair, tmp_path, extra):
    artifact = copy("theirs.msafe")
    theirs, _, their_fingerprint = pair("theirs")
    _, mine, _ = pair("mine")
    ms.sign(artifact, key=theirs)
    # --trusted-key alone means require
    proc, port = _refused([artifact.name, "--trusted-key", mine, *extra], tmp_path)
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("theirs.msafe: UntrustedSignerError: ") and their_fingerprint in last
    assert "--trusted-key PUB.pem" in last and "Traceback" not in proc.stderr
    assert "Uvicorn running" not in proc.stderr and _nothing_listens(port) and not (tmp_path / "envs").exists()


def test_a_manifest_edited_after_signing_stops_the_server(copy, pair, tmp_path):
    import zipfile

    artifact = copy("edited.msafe")
    private, public, fingerprint = pair("mine")
    ms.sign(artifact, key=private)
    edited = tmp_path / "edited-copy.msafe"
    with zipfile.ZipFile(artifact) as source, zipfile.ZipFile(edited, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == "modelsafe.json":
                data = data.replace(b'"team": "risk & pricing"', b'"team": "someone else"')
                assert b"someone else" in data
            target.writestr(info, data)
    edited.replace(artifact)
    proc, port = _refused([artifact.name, "--signature", "require", "--trusted-key", public], tmp_path)
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("edited.msafe: SignatureMismatchError: ") and fingerprint in last
    assert "the manifest (modelsafe.json) is not the one that was signed" in last and _nothing_listens(port)


def test_a_signed_artifact_from_a_trusted_key_is_served(copy, pair, start_server, bundles):
    artifact = copy("signed.msafe")
    private, public, _ = pair("mine")
    ms.sign(artifact, key=private)
    server = start_server([f"churn={artifact}", "--signature", "require", "--trusted-key", str(public)]).wait_ready()
    response = httpx.post(server.url + "/invocations", json={"dataframe_records": [ROW]}, timeout=30)
    assert response.status_code == 200, response.text
    import pandas as pd

    assert response.json()["predictions"] == bundles["pipe"].predict(pd.DataFrame([ROW])).tolist()
    assert httpx.get(server.url + "/v1/models/churn", timeout=30).json()["verification"]["ok"]
    assert "model churn loaded from" in server.stderr()
    assert server.terminate() == 0
