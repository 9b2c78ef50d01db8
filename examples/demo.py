"""End-to-end demo: train, save, load in a fresh process, verify, refuse a malicious file.

Run with ``make demo``. Everything happens in a temporary folder; nothing is downloaded.
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
    print(f"\nall demo files are in {work}")
    return 0 if not canary.exists() else 1


if __name__ == "__main__":
    sys.exit(main())
