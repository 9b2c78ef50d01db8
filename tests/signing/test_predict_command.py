"""``modelsafe predict --signature require --trusted-key``: the same options as ``verify`` and ``serve``,
checked before a row is read or an output written."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import modelsafe as ms


@pytest.fixture
def scored(tmp_path):
    """A DataFrame classifier saved as an artifact, and a CSV of rows to score."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    model = LogisticRegression().fit(frame, (frame["a"] > frame["b"]).astype(int))
    artifact = tmp_path / "model.msafe"
    ms.save(model, artifact, sample=frame.iloc[:10])
    frame.to_csv(tmp_path / "rows.csv", index=False)
    return artifact, tmp_path / "rows.csv", model.predict(frame)


def _predict(artifact, rows, output, *args, env=None):
    environment = {k: v for k, v in os.environ.items() if k != "MODELSAFE_TRUSTED_KEYS"}
    return subprocess.run([sys.executable, "-m", "modelsafe", "predict", str(artifact), str(rows), "-o", str(output),
                           *map(str, args)], capture_output=True, text=True, env={**environment, **(env or {})},
                          timeout=300)


def test_predict_refuses_an_unsigned_artifact_under_require(scored, keys, tmp_path):
    artifact, rows, _ = scored
    output = tmp_path / "out.parquet"
    proc = _predict(artifact, rows, output, "--signature", "require", "--trusted-key", keys.public)
    assert proc.returncode == 1, proc.stderr
    assert "UnsignedArtifactError" in proc.stderr and f"{artifact}.sig" in proc.stderr
    assert "modelsafe sign ARTIFACT --key" in proc.stderr and "Traceback" not in proc.stderr
    assert not output.exists()
    as_json = _predict(artifact, rows, output, "--json", "--trusted-key", keys.public)  # --trusted-key: require
    assert as_json.returncode == 1 and json.loads(as_json.stdout)["error"] == "UnsignedArtifactError"
    assert _predict(artifact, rows, output, "--signature", "auto").returncode == 0  # auto, no keys: not checked


def test_predict_refuses_a_signer_not_trusted(scored, keys, other_keys, tmp_path):
    artifact, rows, _ = scored
    ms.sign(artifact, key=other_keys.private)
    output = tmp_path / "out.csv"
    proc = _predict(artifact, rows, output, "--signature", "require", "--trusted-key", keys.public)
    assert proc.returncode == 1 and "UntrustedSignerError" in proc.stderr
    assert other_keys.fingerprint in proc.stderr and not output.exists()
    # auto with trusted keys from the environment: a signature there is checked, and refused the same way
    by_env = _predict(artifact, rows, output, env={"MODELSAFE_TRUSTED_KEYS": str(keys.public)})
    assert by_env.returncode == 1 and "UntrustedSignerError" in by_env.stderr and not output.exists()
    assert _predict(artifact, rows, output, "--trusted-key", keys.public, "--signature", "ignore").returncode == 0


def test_predict_scores_a_signed_artifact_from_a_trusted_key(scored, keys, tmp_path):
    artifact, rows, expected = scored
    ms.sign(artifact, key=keys.private)
    output = tmp_path / "out.parquet"
    proc = _predict(artifact, rows, output, "--signature", "require", "--trusted-key", keys.public, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["rows_out"] == 200
    assert pd.read_parquet(output)["prediction"].tolist() == expected.tolist()
