"""The command line: human and JSON output, exit codes, no tracebacks without -v."""

from __future__ import annotations

import json

import numpy as np
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


def test_verbose_only_adds_tracebacks(cli, artifact, tmp_path):
    (tmp_path / "bad.msafe").write_text("not an artifact")
    bad, good = str(tmp_path / "bad.msafe"), str(artifact)
    plain = cli("--json", "verify", bad, good)
    for args in (("-v", "--json", "verify", bad, good), ("--json", "verify", "-v", bad, good),
                 ("verify", "--verbose", "--json", bad, good)):
        proc = cli(*args)
        assert proc.returncode == plain.returncode == 2, proc.stdout + proc.stderr  # the bad one is unreadable input
        results = json.loads(proc.stdout)  # every path processed, JSON still printed, on stdout only
        assert [r["path"] for r in results] == [bad, good] and [r["ok"] for r in results] == [False, True]
        assert [(r["path"], r["ok"], r.get("error")) for r in results] == [
            (r["path"], r["ok"], r.get("error")) for r in json.loads(plain.stdout)]
        assert "Traceback" in proc.stderr and "FormatError" in proc.stderr
    assert "Traceback" not in plain.stdout + plain.stderr
    text = cli("verify", "-v", bad, good)
    assert text.returncode == 2 and "passed" in text.stdout and f"{bad}: FormatError" in text.stdout


#: A class defined in a script's __main__ (each script below defines it there).
THRESHOLD = """
class Threshold:
    def __init__(self, t=0.5):
        self.t = t

    def predict(self, X):
        return [x > self.t for x in X]
"""


def test_convert_of_a_main_class_pickle_says_what_doctor_says(cli, fresh, tmp_path):
    fresh.script("train.py", THRESHOLD + "\nimport pickle\nwith open('main.pkl', 'wb') as f:\n"
                                        "    pickle.dump(Threshold(), f)\n")
    doctor = cli("doctor", "--json", str(tmp_path / "main.pkl"))
    problem = next(p for p in json.loads(doctor.stdout)["problems"] if p["subject"] == "__main__.Threshold"
                   and "__main__ script" in p["what"])
    for extra in ((), ("--trusted", "__main__.Threshold")):  # trusting it cannot help: it does not exist here
        proc = cli("convert", str(tmp_path / "main.pkl"), str(tmp_path / "out.msafe"), *extra)
        assert proc.returncode == 2 and "Traceback" not in proc.stdout + proc.stderr
        assert f"  - {problem['what']}: {problem['why']}" in proc.stdout and f"Fix: {problem['fix']}." in proc.stdout
        assert "incompatible" not in proc.stdout and "modelsafe env" not in proc.stdout
    assert not (tmp_path / "out.msafe").exists()
    # in a script that defines the class in its own __main__, convert reads it once trusted
    fresh.script("convert.py", THRESHOLD + "\nimport modelsafe as ms\nms.convert('main.pkl', 'out.msafe', "
                                          "trusted=['__main__.Threshold'], sample=[0.2, 0.9], trust_code=True)\n")
    assert ms.inspect(tmp_path / "out.msafe").code[0]["symbols"] == ["Threshold"]


@pytest.fixture
def whole_modules(tmp_path, fresh):
    """Two whole-module torch.save files: torch.nn classes only, and one of a class from a local module."""
    (tmp_path / "nets.py").write_text("import torch\n\nclass Net(torch.nn.Module):\n    def __init__(self):\n"
                                      "        super().__init__()\n        self.fc = torch.nn.Linear(4, 2)\n\n"
                                      "    def forward(self, x):\n        return self.fc(x)\n")
    fresh("""
        import torch, nets
        torch.save(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU()), "plain.pt")
        torch.save(nets.Net(), "custom.pt")
    """)
    return tmp_path


@pytest.mark.parametrize("name", ["plain.pt", "custom.pt"])
def test_scan_doctor_and_convert_agree_on_a_whole_module_torch_file(cli, whole_modules, name):
    path = str(whole_modules / name)
    scan = json.loads(cli("scan", "--json", path).stdout)
    assert "<name>" not in cli("scan", path).stdout + json.dumps(scan)  # the placeholder is filled in
    needs = sorted({f["subject"] for f in scan["findings"] if f["kind"].endswith("-global")})
    doctor = json.loads(cli("doctor", "--json", path).stdout)
    advice = " ".join(p["fix"] for p in doctor["problems"])
    out = str(whole_modules / f"{name}.msafe")
    proc = cli("convert", path, out)
    if scan["ok"]:  # nothing to trust: convert reads it as it is, and doctor says so
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "needs no trusted=" in advice and "trusted=[" not in advice
    else:  # convert refuses, naming exactly what the scan flags, and doctor tells the same names
        assert proc.returncode == 1 and needs and all(n in proc.stdout for n in needs), proc.stdout
        assert f"trusted={needs!r}" in advice
        again = cli("convert", path, out, *[a for n in needs for a in ("--trusted", n)], cwd=whole_modules)
        assert again.returncode == 0, again.stdout + again.stderr


def test_convert_sample_file_and_no_sample(cli, tmp_path):
    import pickle

    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    X = np.random.default_rng(0).normal(size=(40, 3))
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    with open(tmp_path / "lr.pkl", "wb") as f:
        pickle.dump(LogisticRegression().fit(frame, X[:, 0] > 0), f)
    np.save(tmp_path / "rows.npy", X[:6])
    frame[:5].to_csv(tmp_path / "rows.csv", index=False)
    frame[:7].to_parquet(tmp_path / "rows.parquet")
    for sample, rows, kind in (("rows.npy", 6, "ndarray"), ("rows.csv", 5, "dataframe"),
                               ("rows.parquet", 7, "dataframe")):
        dst = str(tmp_path / f"{sample}.msafe")
        proc = cli("convert", str(tmp_path / "lr.pkl"), dst, "--sample", str(tmp_path / sample))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"verification: passed on {rows} sample row(s) from {tmp_path / sample}" in proc.stdout
        manifest = ms.inspect(dst)
        assert manifest.verification["rows"] == rows and manifest.schema["kind"] == kind
    proc = cli("convert", str(tmp_path / "lr.pkl"), str(tmp_path / "bare.msafe"))
    assert proc.returncode == 0 and "verification: not possible (no sample)\nnote: nothing checks" in proc.stdout
    assert json.loads(cli("convert", "--json", str(tmp_path / "lr.pkl"), str(tmp_path / "bare2.msafe")).stdout)[
        "verified"] == "not possible (no sample)"
    verify = cli("verify", str(tmp_path / "bare.msafe"))
    assert verify.returncode == 0 and "not possible (no sample)" in verify.stdout and "  note  " in verify.stdout
    bad = cli("convert", str(tmp_path / "lr.pkl"), str(tmp_path / "x.msafe"), "--sample", str(tmp_path / "lr.pkl"))
    assert bad.returncode == 2 and "is not a sample file modelsafe reads" in bad.stderr
    assert not (tmp_path / "x.msafe").exists()
