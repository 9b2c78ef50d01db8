"""The portable member in real environments where the native model cannot load.

* ``.venv-portable`` (``make portable-venv``, part of ``make test``): modelsafe's core, numpy and
  onnxruntime only; no scikit-learn, XGBoost, LightGBM, torch or pandas is installed.
* ``.venv-old`` (the compatibility suite's environment): numpy 1.26 and scikit-learn 1.4, where an
  artifact saved here with numpy 2 is refused natively.

Artifacts are saved in this (the main) environment and loaded there, in fresh interpreters.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest

import modelsafe as ms

REPO = Path(__file__).resolve().parents[2]
PORTABLE_PYTHON = REPO / ".venv-portable" / "bin" / "python"
OLD_PYTHON = REPO / ".venv-old" / "bin" / "python"


def _python(path: Path, target: str) -> Path:
    if not path.is_file():
        pytest.fail(f"{path} is missing: build it with `make {target}` (`make test` does it first).")
    return path


def _run(python: Path, code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([str(python), "-c", textwrap.dedent(code)], cwd=str(cwd), env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"{python} failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, numbers, frame):
    """In the main environment: a numpy pipeline, a ColumnTransformer pipeline, a forest and a torch MLP with
    portable members, one artifact without; their rows and native outputs beside them."""
    import torch
    from sklearn.compose import make_column_transformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    folder = tmp_path_factory.mktemp("portable-environments")
    X, y = numbers
    df, ydf = frame
    scaled = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    ms.save(scaled, folder / "pipeline.msafe", sample=X[:40], portable="onnx")
    ms.save(scaled, folder / "native-only.msafe", sample=X[:40])
    mixed = make_pipeline(make_column_transformer((OneHotEncoder(handle_unknown="ignore"), ["city"]),
                                                  (StandardScaler(), ["income", "age"])), LogisticRegression())
    ms.save(mixed.fit(df, ydf), folder / "frame.msafe", sample=df.iloc[:40], portable="onnx")
    df.iloc[100:160].to_csv(folder / "frame-rows.csv", index=False)
    forest = RandomForestClassifier(30, max_depth=5, random_state=0).fit(X, y)
    ms.save(forest, folder / "forest.msafe", sample=X[:40], portable="onnx")
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).eval()
    ms.save(mlp, folder / "mlp.msafe", sample=X[:40].astype(np.float32), portable="onnx")
    rows = X[100:160]
    np.save(folder / "rows.npy", rows)
    with torch.no_grad():
        mlp_out = mlp(torch.from_numpy(rows.astype(np.float32))).numpy()
    np.savez(folder / "expected.npz", pipeline=scaled.predict_proba(rows), forest=forest.predict_proba(rows),
             mlp=mlp_out, frame=mixed.predict_proba(df.iloc[100:160]))
    return folder


def test_without_any_framework_the_member_loads_verifies_and_predicts(artifacts):
    proc = _run(_python(PORTABLE_PYTHON, "portable-venv"), """
        import importlib.util, json, sys, warnings
        import numpy as np
        import modelsafe as ms
        from modelsafe.portable import RuntimeFallbackWarning

        absent = [m for m in ("sklearn", "xgboost", "lightgbm", "torch", "pandas", "scipy") if importlib.util.find_spec(m)]
        assert not absent, absent  # the environment really has none of them
        rows, expected = np.load("rows.npy"), np.load("expected.npz")
        for name in ("pipeline", "forest", "mlp"):
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                bundle = ms.load(f"{name}.msafe", runtime="auto")
            assert [w.category for w in seen] == [RuntimeFallbackWarning], [str(w.message) for w in seen]
            message = str(seen[0].message)
            assert "FlavorNotInstalledError" in message and "not installed here" in message, message
            assert bundle.runtime == "onnx" and bundle.verify().ok
            got = bundle.predict(rows) if name == "mlp" else bundle.predict_proba(rows)
            assert np.allclose(got, expected[name], rtol=1.3e-4, atol=1.3e-4), name
        try:
            ms.load("pipeline.msafe")
        except ms.FlavorNotInstalledError as exc:
            print("native refused:", exc.name)
        try:
            ms.load("native-only.msafe", runtime="auto")
        except ms.FlavorNotInstalledError as exc:  # no member: the native refusal itself, no fallback
            print("no member:", type(exc).__name__)
        print(json.dumps(sorted(m for m in ("sklearn", "torch", "xgboost", "pandas") if m in sys.modules)))
    """, artifacts)
    lines = proc.stdout.strip().splitlines()
    assert "native refused: sklearn" in lines and "no member: FlavorNotInstalledError" in lines, proc.stdout
    assert json.loads(lines[-1]) == []


def test_the_command_line_verifies_through_the_member_without_frameworks(artifacts):
    proc = subprocess.run([str(_python(PORTABLE_PYTHON, "portable-venv")), "-m", "modelsafe", "doctor",
                           "pipeline.msafe"], cwd=artifacts, capture_output=True, text=True, timeout=600, check=False)
    assert "portable ONNX member" in proc.stdout and "runtime='onnx'" in proc.stdout, proc.stdout + proc.stderr


def test_saved_with_numpy_2_runs_in_numpy_1_through_the_member(artifacts):
    proc = _run(_python(OLD_PYTHON, "old-venv"), """
        import json, warnings
        import numpy as np, pandas as pd
        import modelsafe as ms
        from modelsafe.portable import RuntimeFallbackWarning

        assert np.__version__.startswith("1."), np.__version__
        expected = np.load("expected.npz")
        for name in ("pipeline", "frame", "forest"):
            try:
                ms.load(f"{name}.msafe")
                raise SystemExit(f"{name} loaded natively under numpy 1")
            except ms.EnvironmentMismatchError as exc:
                assert "numpy" in exc.packages, exc.packages
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                bundle = ms.load(f"{name}.msafe", runtime="auto")
            assert [w.category for w in seen] == [RuntimeFallbackWarning], [str(w.message) for w in seen]
            assert "EnvironmentMismatchError" in str(seen[0].message) and "numpy 2" in str(seen[0].message)
            report = bundle.verify()
            assert bundle.runtime == "onnx" and report.ok, str(report)
            rows = pd.read_csv("frame-rows.csv") if name == "frame" else np.load("rows.npy")
            assert np.allclose(bundle.predict_proba(rows), expected[name], rtol=1.3e-4, atol=1.3e-4), name
            print("ok", name)
    """, artifacts)
    assert proc.stdout.split() == ["ok", "pipeline", "ok", "frame", "ok", "forest"], proc.stdout + proc.stderr
