"""Fixtures of the recreated-environment tests: real environments from the real index, built once per run.

The cache of recreated environments (``MODELSAFE_ENVS_DIR``) is one folder for the whole test
run, shared by pytest-xdist's workers (their builds of one environment meet at its lock, and
one builds it); uv's and pip's own package caches are the user's, so packages downloaded once
are reused by every later run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
OLD_PYTHON = REPO / ".venv-old" / "bin" / "python"
OLD_VERSIONS = {"numpy": "1.26.4", "pandas": "2.1.4", "scikit-learn": "1.4.2"}
ROWS = 100_000

SAVE_IN_OLD = f"""
    import json, warnings
    import numpy as np, pandas as pd, sklearn
    import modelsafe as ms
    from sklearn.compose import make_column_transformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    warnings.simplefilter("ignore")
    rng = np.random.default_rng(0)
    n = {ROWS}
    columns = {{"income": rng.normal(50, 10, n), "age": rng.integers(18, 80, n),
               "city": rng.choice(np.array(["paris", "lyon", "nice"]), n)}}
    for name, values in columns.items():
        np.save(f"rows_{{name}}.npy", values)
    df = pd.DataFrame(columns)
    y = ((df["income"] > 50) & (df["city"] != "nice")).astype(int)
    encode = lambda: make_column_transformer((OneHotEncoder(), ["city"]), (StandardScaler(), ["income", "age"]))
    pipe = make_pipeline(encode(), LogisticRegression()).fit(df.iloc[:2000], y.iloc[:2000])
    ms.save(pipe, "pipeline.msafe", sample=df.iloc[:40], training_data=df.iloc[:2000])
    np.save("pipeline_predict.npy", pipe.predict(df))
    np.save("pipeline_proba.npy", pipe.predict_proba(df))
    forest = make_pipeline(encode(), RandomForestClassifier(10, max_depth=4, random_state=0)).fit(df.iloc[:2000],
                                                                                                   y.iloc[:2000])
    ms.save(forest, "forest.msafe", sample=df.iloc[:40])
    np.save("forest_proba.npy", forest.predict_proba(df.iloc[:5000]))
    json.dump({{"scikit-learn": sklearn.__version__, "numpy": np.__version__, "pandas": pd.__version__}},
              open("versions.json", "w"))
"""

SAVE_IN_MAIN = """
    import numpy as np, pandas as pd
    import modelsafe as ms
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(1)
    df = pd.DataFrame({"income": rng.normal(50, 10, 500), "city": rng.choice(["paris", "lyon"], 500)})
    y = (df["income"] > 50).astype(int)
    pipe = make_pipeline(make_column_transformer((OneHotEncoder(), ["city"]), (StandardScaler(), ["income"])),
                         LogisticRegression()).fit(df, y)
    ms.save(pipe, "pipeline.msafe", sample=df.iloc[:20])
    df.to_parquet("rows.parquet")
    np.save("proba.npy", pipe.predict_proba(df))
"""

#: A model whose predict sleeps for x[0, 0] seconds, or exits the worker when it is negative: a worker
#: that is busy, or that dies, exactly when a test wants it to.
SAVE_SLEEPER = """
    import numpy as np
    import modelsafe as ms


    class Sleeper:
        def predict(self, x):
            import os, time

            if x[0, 0] < 0:
                os._exit(int(-x[0, 0]))
            time.sleep(float(x[0, 0]))
            return x[:, 0] * 2


    ms.save(Sleeper(), "sleeper.msafe", sample=np.zeros((3, 2)))
"""


def run(python: Path | str, code: str, cwd: Path, *, env: dict[str, str] | None = None,
        check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run ``code`` with ``python`` in ``cwd`` (without PYTHONPATH), as a user's script would run."""
    full = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    full.update(env or {})
    proc = subprocess.run([str(python), "-c", textwrap.dedent(code)], check=False, cwd=str(cwd), env=full,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{python} failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def _shared_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "modelsafe-envs"
    root.mkdir(parents=True, exist_ok=True)
    return root


@pytest.fixture(scope="session", autouse=True)
def envs_root(tmp_path_factory: pytest.TempPathFactory):
    """Every recreated environment of this run goes to one folder of the run, never the user's cache."""
    root = _shared_root(tmp_path_factory)
    before = os.environ.get("MODELSAFE_ENVS_DIR")
    os.environ["MODELSAFE_ENVS_DIR"] = str(root)
    yield root
    if before is None:
        os.environ.pop("MODELSAFE_ENVS_DIR", None)
    else:
        os.environ["MODELSAFE_ENVS_DIR"] = before


@pytest.fixture(scope="session")
def old_python() -> Path:
    if not OLD_PYTHON.is_file():
        pytest.fail(f"{OLD_PYTHON} is missing: these tests need the old environment. Build it with `make old-venv` "
                    "(`make test` does it first).")
    return OLD_PYTHON


@pytest.fixture(scope="session")
def saved_in_old(tmp_path_factory: pytest.TempPathFactory, old_python: Path) -> Path:
    """Artifacts saved in .venv-old (scikit-learn 1.4.2, numpy 1.26.4, pandas 2.1.4), the rows and what it predicted."""
    folder = tmp_path_factory.mktemp("saved-in-old")
    run(old_python, SAVE_IN_OLD, folder)
    return folder


@pytest.fixture(scope="session")
def old_rows(saved_in_old: Path) -> pd.DataFrame:
    return pd.DataFrame({name: np.load(saved_in_old / f"rows_{name}.npy") for name in ("income", "age", "city")})


@pytest.fixture(scope="session")
def old_env(saved_in_old: Path):
    """The recreated environment of the artifact saved in .venv-old (built once, with uv)."""
    import modelsafe as ms

    return ms.recreate_env(saved_in_old / "pipeline.msafe")


@pytest.fixture(scope="session")
def saved_in_main(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An artifact saved in this environment (current releases), its rows and its probabilities."""
    folder = tmp_path_factory.mktemp("saved-in-main")
    run(sys.executable, SAVE_IN_MAIN, folder)
    return folder


@pytest.fixture(scope="session")
def main_env(saved_in_main: Path):
    """The recreated environment of the artifact saved here, built with venv + pip (the fallback installer)."""
    import modelsafe as ms

    return ms.recreate_env(saved_in_main / "pipeline.msafe", installer="pip")


@pytest.fixture(scope="session")
def sleeper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Sleeper model (bundled __main__ code: load it with trust_code=True)."""
    folder = tmp_path_factory.mktemp("sleeper")
    script = folder / "train.py"
    script.write_text(textwrap.dedent(SAVE_SLEEPER))
    subprocess.run([sys.executable, str(script)], cwd=folder, check=True, capture_output=True, timeout=300)
    return folder / "sleeper.msafe"


def edited_copy(artifact: Path, folder: Path, **changes: object) -> Path:
    """A folder copy of ``artifact`` whose recorded environment has ``changes`` (python=..., packages=...).

    The manifest is not among the hashed members, so this is what an artifact saved elsewhere
    records: another Python, other versions.
    """
    import json

    import modelsafe as ms

    target = folder / (artifact.stem + "-edited")
    reader_manifest = ms.inspect(artifact)
    from modelsafe.artifact.reader import open_artifact

    reader = open_artifact(artifact)
    try:
        for name in reader_manifest.members:
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            (target / name).write_bytes(reader.read(name))
        document = json.loads(reader.read("modelsafe.json"))
    finally:
        reader.close()
    environment = document["environment"]
    if "python" in changes:
        environment["python"]["version"] = changes["python"]
    if "packages" in changes:
        environment["packages"] = {name: {"version": version, "modules": []}
                                   for name, version in dict(changes["packages"]).items()}  # type: ignore[call-overload]
        environment["requirements"] = [f"{n}=={v}" for n, v in dict(changes["packages"]).items()]  # type: ignore[call-overload]
    (target / "modelsafe.json").write_text(json.dumps(document))
    return target


def copy_wheels(root: Path, fresh_root: Path) -> None:
    """Give a fresh cache the modelsafe wheels already built this run (a test about environments, not wheels)."""
    if (root / "wheels").is_dir():
        shutil.copytree(root / "wheels", fresh_root / "wheels", dirs_exist_ok=True)
