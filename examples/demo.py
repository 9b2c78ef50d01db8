"""End-to-end demo: train, save, load in a fresh process, verify, refuse a malicious file;
then take the model where predictions are made: sign it, store it in a bucket, serve it over
HTTP, score a file in chunks, and run its portable ONNX member.

Run with ``make demo``. Everything happens in a temporary folder and on 127.0.0.1; nothing
is downloaded.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import modelsafe as ms


class ClipOutliers(BaseEstimator, TransformerMixin):
    """A custom step defined in this script: modelsafe bundles its source with the model."""

    def __init__(self, limit: float = 3.0) -> None:
        self.limit = limit

    def fit(self, X, y=None):  # noqa: ANN001 - scikit-learn's signature
        return self

    def transform(self, X):  # noqa: ANN001
        return np.clip(X, -self.limit, self.limit)


def banner(title: str) -> None:
    print(f"\n=== {title} " + "=" * max(0, 70 - len(title)))


def fresh_python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True)


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "modelsafe", *args], cwd=cwd, capture_output=True, text=True)


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="modelsafe-demo-"))
    banner("1. train a scikit-learn pipeline")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2_000, 8))
    y = (X[:, 0] + X[:, 1] ** 2 > 1).astype(int)
    model = make_pipeline(StandardScaler(), RandomForestClassifier(50, random_state=0)).fit(X, y)
    print(f"trained {model}")

    banner("2. save it with a verification sample")
    manifest = ms.save(model, work / "model.msafe", sample=X[:32], metadata={"demo": True})
    print(f"saved {work / 'model.msafe'}: flavor {manifest.flavor}, {len(manifest.members)} members, "
          f"each with SHA-256")
    print(cli("inspect", "model.msafe", cwd=work).stdout)

    banner("3. load it in a fresh process and predict")
    np.save(work / "new_rows.npy", X[:5])
    proc = fresh_python("""
        import numpy as np, modelsafe as ms
        bundle = ms.load("model.msafe")          # integrity, audit, environment, verification
        print("predictions:", bundle.predict(np.load("new_rows.npy")))
    """, work)
    print(proc.stdout or proc.stderr)
    if proc.returncode != 0:
        return 1

    banner("4. verify and compare environments (the CLI)")
    for command in (("verify", "model.msafe"), ("env", "model.msafe")):
        proc = cli(*command, cwd=work)
        print(f"$ modelsafe {' '.join(command)}   (exit {proc.returncode})\n{proc.stdout}")

    banner("5. a custom transformer from this script travels with the model")
    custom = make_pipeline(ClipOutliers(3.0), StandardScaler(), RandomForestClassifier(20, random_state=0)).fit(X, y)
    ms.save(custom, work / "custom.msafe", sample=X[:32])
    print(f"bundled code: {[(r['module'], r['symbols']) for r in ms.inspect(work / 'custom.msafe').code]}")
    proc = fresh_python("""
        import modelsafe as ms
        try:
            ms.load("custom.msafe")
        except ms.UntrustedContentError as exc:
            print("without trust_code:", type(exc).__name__, "-", str(exc).splitlines()[0])
        print("with trust_code:", ms.load("custom.msafe", trust_code=True).verify())
    """, work)
    print(proc.stdout or proc.stderr)
    if proc.returncode != 0:
        return 1

    banner("6. refuse a malicious file")
    canary = work / "PWNED"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {canary}",))

    (work / "evil.pkl").write_bytes(pickle.dumps(Exploit()))
    try:
        ms.convert(work / "evil.pkl", work / "evil.msafe")
        print("ERROR: the malicious file was accepted")
        return 1
    except ms.SecurityError as exc:
        print(f"refused by ms.convert: {type(exc).__name__}: {exc}")
    proc = cli("scan", "evil.pkl", cwd=work)
    print(f"$ modelsafe scan evil.pkl   (exit {proc.returncode})\n{proc.stdout}")
    print(f"payload ran: {canary.exists()}")

    proc = cli("doctor", "evil.pkl", cwd=work)
    print(f"$ modelsafe doctor evil.pkl   (exit {proc.returncode})\n{proc.stdout}")

    banner("7. a tampered artifact is caught before anything is loaded")
    raw = bytearray((work / "model.msafe").read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # a byte in the middle of the weights
    (work / "tampered.msafe").write_bytes(bytes(raw))
    proc = cli("verify", "tampered.msafe", cwd=work)
    print(f"$ modelsafe verify tampered.msafe   (exit {proc.returncode})\n{proc.stdout}")
    if canary.exists() or taking_it_where_predictions_are_made(work, model, X) != 0:
        return 1
    print(f"\nall demo files are in {work}")
    return 0


def taking_it_where_predictions_are_made(work: Path, model: object, X: np.ndarray) -> int:
    """The second wave: signatures, remote storage, serving, batch scoring, the portable member."""
    banner("8. sign it, and refuse what the key did not sign")
    print(cli("keygen", "keys", cwd=work).stdout)
    print(cli("sign", "model.msafe", "--key", "keys/private.pem", cwd=work).stdout)
    proc = cli("verify", "model.msafe", "--trusted-key", "keys/public.pem", cwd=work)
    print(f"$ modelsafe verify model.msafe --trusted-key keys/public.pem   (exit {proc.returncode})\n{proc.stdout}")
    ms.save(model, work / "unsigned.msafe", sample=X[:32])
    try:
        ms.load(work / "unsigned.msafe", signature="require", trusted_keys=[work / "keys" / "public.pem"])
        print("ERROR: an unsigned artifact was accepted")
        return 1
    except ms.SecurityError as exc:
        print(f"signature='require' refused unsigned.msafe: {type(exc).__name__}: {str(exc).splitlines()[0]}")

    banner("9. a bucket is a path too (fsspec; memory:// here, s3:// the same)")
    ms.save(model, "memory://models/model.msafe", sample=X[:32])
    remote = ms.load("memory://models/model.msafe")
    print(f"loaded from memory://models/model.msafe, verified: {remote.verify().ok}")

    banner("10. serve it: MLflow's scoring protocol and Open Inference v2, on 127.0.0.1")
    if serve_and_query(work, X) != 0:
        return 1

    banner("11. score a large file in chunks (Parquet in, Parquet out)")
    import pandas as pd

    frame = pd.DataFrame(np.random.default_rng(1).normal(size=(200_000, 8)))
    frame.columns = [str(c) for c in frame.columns]
    frame.to_parquet(work / "rows.parquet")
    ms.save(make_pipeline(StandardScaler(), RandomForestClassifier(20, random_state=0)).fit(frame, (frame["0"] > 0)),
            work / "named.msafe", sample=frame.iloc[:32])
    proc = cli("predict", "named.msafe", "rows.parquet", "-o", "scores.parquet", cwd=work)
    print(f"$ modelsafe predict named.msafe rows.parquet -o scores.parquet   (exit {proc.returncode})\n{proc.stdout}")
    if proc.returncode != 0:
        print(proc.stderr)
        return 1

    banner("12. a portable ONNX member: predicts where scikit-learn is not installed")
    ms.save(model, work / "portable.msafe", sample=X[:32], portable="onnx")
    proc = fresh_python("""
        import sys, numpy as np, modelsafe as ms
        bundle = ms.load("portable.msafe", runtime="onnx")
        print("runtime:", bundle.runtime, "| predictions:", bundle.predict(np.load("new_rows.npy")),
              "| scikit-learn imported:", "sklearn" in sys.modules)
    """, work)
    print(proc.stdout or proc.stderr)
    return proc.returncode


def serve_and_query(work: Path, X: np.ndarray) -> int:
    """Start ``modelsafe serve`` on a free loopback port, query both protocols, stop it."""
    import json
    import socket
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "modelsafe", "serve", "model.msafe", "--port", str(port)],
                              cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"

    def call(path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    try:
        for _ in range(600):
            try:
                call("/v2/health/ready")
                break
            except OSError:
                if server.poll() is not None:
                    print(server.stderr.read() if server.stderr else "the server exited")
                    return 1
                time.sleep(0.1)
        rows = X[:3].tolist()
        print("POST /invocations {'inputs': ...} ->", call("/invocations", {"inputs": rows}))
        infer = call("/v2/models/model/infer",
                     {"inputs": [{"name": "input-0", "shape": [3, 8], "datatype": "FP64", "data": rows}]})
        print("POST /v2/models/model/infer ->", [o["data"] for o in infer["outputs"]])
        print(f"model card page: GET {base}/ (flavor, environment, verification, schema, a form)")
    finally:
        server.terminate()
        server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
