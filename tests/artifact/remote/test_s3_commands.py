"""The commands that take an artifact path, with an s3:// URL and ``--storage-option`` (moto's server on
loopback): export, sign then verify --trusted-key, serve (a real server process, ready only once the
artifact from the bucket is loaded and verified) and predict."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

import modelsafe as ms

def _sklearn(s3, name: str, **save_kwargs) -> tuple[str, np.ndarray]:
    from sklearn.linear_model import LogisticRegression

    X = np.random.default_rng(0).normal(size=(60, 3)).astype("float32")
    model = LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))
    url = f"s3://{s3['bucket']}/{name}"
    ms.save(model, url, sample=X[:8], storage_options=s3["options"], **save_kwargs)
    return url, X


def _option(s3) -> list[str]:
    return ["--storage-option", f"endpoint_url={s3['options']['endpoint_url']}"]


def test_export_reads_the_artifact_from_the_bucket(s3, cli, tmp_path):
    pytest.importorskip("onnxruntime")
    url, X = _sklearn(s3, "portable.msafe", portable="onnx")
    result = cli("export", url, str(tmp_path / "model.onnx"), "--to", "onnx", *_option(s3), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    record = json.loads(result.stdout)
    assert record["destination"] == str(tmp_path / "model.onnx") and record["inputs"]
    import onnxruntime

    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"))
    assert session.run(None, {session.get_inputs()[0].name: X[:4]})[0].shape[0] == 4


def test_sign_then_verify_with_a_trusted_key(s3, cli, tmp_path):
    pytest.importorskip("cryptography")
    url, _ = _sklearn(s3, "signed.msafe")
    keys = json.loads(cli("keygen", str(tmp_path / "keys"), "--json").stdout)
    signed = cli("sign", url, "--key", keys["private_key"], *_option(s3), "--json")
    assert signed.returncode == 0, signed.stdout + signed.stderr
    assert s3["fs"].exists(f"{s3['bucket']}/signed.msafe.sig")
    verified = cli("verify", url, "--trusted-key", keys["public_key"], *_option(s3), "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert json.loads(verified.stdout)["signature"]["verified"] is True


def test_serve_loads_the_artifact_from_the_bucket(s3, tmp_path):
    pytest.importorskip("uvicorn")
    url, X = _sklearn(s3, "served.msafe")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "modelsafe", "serve", url, "--port", str(port), *_option(s3)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        while True:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert time.time() < deadline, "the server never became ready"
            time.sleep(0.5)
        body = json.dumps({"inputs": X[:3].tolist()}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            predictions = json.loads(answer.read())["predictions"]
    finally:
        proc.terminate()
        proc.communicate(timeout=60)
    assert predictions == ms.load(url, storage_options=s3["options"]).predict(X[:3]).tolist()


def test_predict_reads_the_artifact_and_the_input_from_the_bucket(s3, cli, tmp_path):
    pytest.importorskip("pyarrow")
    url, X = _sklearn(s3, "batch.msafe")
    rows = "\n".join(",".join(str(v) for v in row) for row in X[:20])
    s3["fs"].pipe_file(f"{s3['bucket']}/input.csv", f"x0,x1,x2\n{rows}\n".encode())
    result = cli("predict", url, f"s3://{s3['bucket']}/input.csv", "-o", str(tmp_path / "out.csv"), *_option(s3))
    assert result.returncode == 0, result.stdout + result.stderr
    assert len((tmp_path / "out.csv").read_text().splitlines()) == 21
