"""The command line: human and JSON output, exit codes, no tracebacks without -v."""

from __future__ import annotations

import json

import pytest

import modelsafe as ms


@pytest.fixture
def artifact(tmp_path, classification_data):
    from sklearn.tree import DecisionTreeClassifier

    X, y = classification_data
    path = tmp_path / "tree.msafe"
    ms.save(DecisionTreeClassifier(random_state=0).fit(X, y), path, sample=X[:8])
    return path


def test_inspect_human_and_json(cli, artifact):
    proc = cli("inspect", str(artifact))
    assert proc.returncode == 0, proc.stderr
    assert "DecisionTreeClassifier" in proc.stdout and "SHA-256" in proc.stdout
    proc = cli("--json", "inspect", str(artifact))
    data = json.loads(proc.stdout)
    assert data["components"]["model"]["flavor"] == "sklearn" and data["ok"] is True
    assert json.loads(cli("inspect", "--json", str(artifact)).stdout)["format"] == "modelsafe"


def test_verify_ok_and_json(cli, artifact):
    proc = cli("verify", str(artifact))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "passed" in proc.stdout
    data = json.loads(cli("verify", "--json", str(artifact)).stdout)
    assert data["ok"] is True and data["checks"]


def test_env(cli, artifact):
    proc = cli("env", str(artifact))
    assert proc.returncode == 0 and "scikit-learn" in proc.stdout
    assert cli("env", "--strict", str(artifact)).returncode == 0


def test_corrupted_artifact_exits_1_without_traceback(cli, artifact):
    raw = bytearray(artifact.read_bytes())
    raw[200] ^= 0xFF  # inside the first member's data
    artifact.write_bytes(bytes(raw))
    proc = cli("verify", str(artifact))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "IntegrityError" in proc.stdout and "Traceback" not in proc.stdout + proc.stderr
    proc = cli("-v", "verify", str(artifact))
    assert "Traceback" in proc.stderr


def test_unreadable_input_exits_2(cli, tmp_path):
    proc = cli("inspect", str(tmp_path / "missing.msafe"))
    assert proc.returncode == 2 and "does not exist" in proc.stdout
    (tmp_path / "x.txt").write_text("not a model")
    assert cli("verify", str(tmp_path / "x.txt")).returncode == 2


def test_usage_error_exits_2(cli):
    assert cli("inspect").returncode == 2
    assert cli("frobnicate").returncode == 2


def test_python_dash_m_and_help(cli):
    proc = cli("--help")
    assert proc.returncode == 0 and "inspect" in proc.stdout and "verify" in proc.stdout
    assert ms.__version__ in cli("--version").stdout
