"""Benchmark: recreated environments (ms.recreate_env) and isolated predictions (load(isolate=True)).

Workload: a scikit-learn pipeline (OneHotEncoder + StandardScaler in a ColumnTransformer, then
LogisticRegression) on a 3-column DataFrame, and a LogisticRegression on an 8-column float
array, both saved in this environment, so that the recreated environment holds the same
versions as this one and in-process and isolated predictions run the same code.

Recreate rows (each with a new, empty environment cache; the wall time to a checked environment):

* cold: the installer's package cache empty too (``UV_CACHE_DIR`` / ``PIP_CACHE_DIR`` set to a new
  folder), so packages come from the index, and modelsafe's wheel is built;
* warm package cache: packages from the installer's cache, modelsafe's wheel already built;
* warm environment cache: the environment exists; what is left is the lookup and the self-check
  (a worker starts, loads and verifies the artifact): "recreate to ready";
* the peers, by hand, with the same pins and a warm package cache: ``uv venv`` + ``uv pip install``,
  ``python -m venv`` + ``pip install`` (no self-check).

Predict rows: ``bundle.predict`` in this process vs an isolated bundle (guard here, ``.npy`` over
a pipe, preprocess + model in the worker), for 1 and 10,000 rows; interleaved rounds
(``BENCH_ROUNDS``, default 15), medians. This machine's pip configuration (find-links folders, a
local index) applies to the pip rows, as it applies to any pip here.

Run: ``.venv/bin/python bench/bench_envs.py``. Prints markdown tables.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "15"))


def save_models(folder: Path) -> dict[str, tuple[Path, Any]]:
    import pandas as pd
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    import modelsafe as ms

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"income": rng.normal(50, 10, 20_000), "age": rng.integers(18, 80, 20_000),
                          "city": rng.choice(["paris", "lyon", "nice"], 20_000)})
    pipe = make_pipeline(make_column_transformer((OneHotEncoder(), ["city"]), (StandardScaler(), ["income", "age"])),
                         LogisticRegression()).fit(frame, (frame["income"] > 50).astype(int))
    ms.save(pipe, folder / "pipeline.msafe", sample=frame.iloc[:32])
    X = rng.normal(size=(20_000, 8))
    ms.save(LogisticRegression().fit(X, (X[:, 0] > 0).astype(int)), folder / "linear.msafe", sample=X[:32])
    return {"pipeline (DataFrame)": (folder / "pipeline.msafe", frame), "linear (array)": (folder / "linear.msafe", X)}


def timed(work: Callable[[], Any]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def recreate_rows(artifact: Path, scratch: Path) -> list[tuple[str, float]]:
    import modelsafe as ms

    rows: list[tuple[str, float]] = []
    saved = {k: os.environ.get(k) for k in ("MODELSAFE_ENVS_DIR", "UV_CACHE_DIR", "PIP_CACHE_DIR")}
    wheels = scratch / "wheels-cache"
    try:
        for installer in ("uv", "pip"):
            os.environ["MODELSAFE_ENVS_DIR"] = str(scratch / f"cold-{installer}")
            os.environ["UV_CACHE_DIR" if installer == "uv" else "PIP_CACHE_DIR"] = str(scratch / f"pkgs-{installer}")
            rows.append((f"recreate, {installer}, cold (empty package cache, modelsafe's wheel built)",
                         timed(lambda i=installer: ms.recreate_env(artifact, installer=i))))
            if installer == "uv":
                shutil.copytree(scratch / "cold-uv" / "wheels", wheels)
            for key in ("UV_CACHE_DIR", "PIP_CACHE_DIR"):
                _setenv(key, saved[key])
            os.environ["MODELSAFE_ENVS_DIR"] = str(scratch / f"warm-{installer}")
            shutil.copytree(wheels, scratch / f"warm-{installer}" / "wheels")
            rows.append((f"recreate, {installer}, warm package cache", timed(lambda i=installer: ms.recreate_env(
                artifact, installer=i))))
            ready = [timed(lambda i=installer: ms.recreate_env(artifact, installer=i)) for _ in range(3)]
            rows.append((f"recreate, {installer}, warm environment cache: to ready (median of 3)",
                         statistics.median(ready)))
    finally:
        for key, value in saved.items():
            _setenv(key, value)
    return rows


def _setenv(key: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = value


def peer_rows(artifact: Path, scratch: Path) -> list[tuple[str, float]]:
    import modelsafe as ms
    from modelsafe.envs.pythons import uv_binary

    pins = [f"{d.package}=={d.saved}" for d in ms.check_env(artifact).differences if d.package != "python"]
    (scratch / "requirements.txt").write_text("\n".join(pins) + "\n")
    uv = str(uv_binary())

    def by_uv() -> None:
        subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(scratch / "peer-uv")], check=True)
        subprocess.run([uv, "pip", "install", "-q", "--python", str(scratch / "peer-uv" / "bin" / "python"),
                        "--compile-bytecode", "-r", str(scratch / "requirements.txt")], check=True)

    def by_pip() -> None:
        subprocess.run([sys.executable, "-m", "venv", str(scratch / "peer-pip")], check=True)
        subprocess.run([str(scratch / "peer-pip" / "bin" / "python"), "-m", "pip", "install", "-q",
                        "--disable-pip-version-check", "-r", str(scratch / "requirements.txt")], check=True)

    return [("peer: uv venv + uv pip install, warm package cache", timed(by_uv)),
            ("peer: python -m venv + pip install, warm package cache", timed(by_pip))]


def predict_rows(models: dict[str, tuple[Path, Any]]) -> list[tuple[str, float, float]]:
    import modelsafe as ms

    found: list[tuple[str, float, float]] = []
    for name, (artifact, data) in models.items():
        here, isolated = ms.load(artifact), ms.load(artifact, isolate=True)
        try:
            for rows in (1, 10_000):
                x = data[:rows] if isinstance(data, np.ndarray) else data.iloc[:rows]
                calls = 200 if rows == 1 else 5
                np.testing.assert_array_equal(here.predict(x), isolated.predict(x))
                times: dict[str, list[float]] = {"here": [], "isolated": []}
                for _ in range(ROUNDS):
                    for key, bundle in (("here", here), ("isolated", isolated)):
                        started = time.perf_counter()
                        for _ in range(calls):
                            bundle.predict(x)
                        times[key].append((time.perf_counter() - started) / calls)
                found.append((f"{name}, {rows:,} row{'s' if rows > 1 else ''}", statistics.median(times["here"]),
                              statistics.median(times["isolated"])))
        finally:
            here.close()
            isolated.close()
    return found


def main() -> None:
    scratch = Path(tempfile.mkdtemp(prefix="modelsafe-bench-envs-"))
    try:
        models = save_models(scratch)
        artifact = models["pipeline (DataFrame)"][0]
        recreate = recreate_rows(artifact, scratch)
        peers = peer_rows(artifact, scratch)
        os.environ["MODELSAFE_ENVS_DIR"] = str(scratch / "warm-uv")
        predict = predict_rows(models)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    load = os.getloadavg()[0]
    print(f"\nRecreating the environment of a scikit-learn pipeline artifact (numpy, pandas, scikit-learn pinned); "
          f"load average {load:.1f} on {os.cpu_count()} CPUs\n")
    print("| what | seconds |")
    print("|---|---:|")
    for label, seconds in [*recreate, *peers]:
        print(f"| {label} | {seconds:.1f} |")
    warm = {label.split(",")[1].strip(): s for label, s in recreate if "warm package cache" in label}
    peer = {"uv": peers[0][1], "pip": peers[1][1]}
    print("\nmodelsafe (warm package cache, with its self-check) / the peer by hand: "
          + ", ".join(f"{k} {warm[k] / peer[k]:.2f}x" for k in ("uv", "pip")))
    print(f"\nPredict, in this process vs isolated; {ROUNDS} interleaved rounds, median ms per call\n")
    print("| model, input | in process | isolated | added by isolation | isolated / in process |")
    print("|---|---:|---:|---:|---:|")
    for label, here, isolated in predict:
        print(f"| {label} | {here * 1e3:.3f} | {isolated * 1e3:.3f} | {(isolated - here) * 1e3:+.3f} | "
              f"{isolated / here:.2f}x |")


if __name__ == "__main__":
    main()
