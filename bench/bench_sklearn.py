"""Benchmark: modelsafe vs pickle, joblib, skops.io and MLflow on a scikit-learn pipeline.

Workload: StandardScaler + RandomForestClassifier(200 trees) on 20,000 x 20 (about 25 MB).
All tools run on the same fitted model in the same process, each timed as the median
of several repetitions. modelsafe's save records a 32-row verification sample and its
load checks integrity, audits, compares environments and replays the sample: the time
the model itself spends predicting that sample is measured separately and reported
beside the totals, and the ratios count modelsafe's own work (total minus that time).
Loads are timed twice: hashing every member, and for an unchanged file the
verified-hash cache knows (see modelsafe._integrity).

Run: ``make bench`` (creates .venv-bench with the peers), or
``.venv-bench/bin/python bench/bench_sklearn.py``. Prints a markdown table.
"""

from __future__ import annotations

import os
import pickle
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPEATS = int(os.environ.get("BENCH_REPEATS", "5"))


def timed(fn: Callable[[], Any], repeats: int = REPEATS, setup: Callable[[], None] | None = None) -> float:
    times = []
    for _ in range(repeats):
        if setup is not None:
            setup()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def import_time(module: str, repeats: int = 15) -> float:
    """Median wall time of `python -c "import module"` (a fresh interpreter each time)."""
    code = f"import {module}" if module else "pass"
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def build_model():
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    X = rng.normal(size=(20_000, 20))
    y = (X[:, :3].sum(axis=1) + rng.normal(scale=2.0, size=len(X)) > 0).astype(int)
    model = make_pipeline(StandardScaler(),
                          RandomForestClassifier(200, max_depth=12, random_state=0, n_jobs=2)).fit(X, y)
    model[-1].set_params(n_jobs=1)
    return model, X


def main() -> None:
    import modelsafe as ms

    model, X = build_model()
    sample = X[:32]
    tmp = Path(tempfile.mkdtemp(prefix="modelsafe-bench-"))
    size_mb = len(pickle.dumps(model)) / 1e6
    rows: list[tuple[str, str, float]] = []

    # The model's own prediction time on the sample (counted separately, not against modelsafe).
    predict_time = timed(lambda: (model.predict(sample), model.predict_proba(sample)), repeats=9)

    pkl = tmp / "m.pkl"

    def pickle_dump() -> None:
        with open(pkl, "wb") as f:
            pickle.dump(model, f)

    def pickle_load() -> None:
        with open(pkl, "rb") as f:
            pickle.load(f)

    rows.append(("pickle", "save", timed(pickle_dump)))
    rows.append(("pickle", "load", timed(pickle_load)))

    try:
        import joblib

        jl = tmp / "m.joblib"
        rows.append(("joblib", "save", timed(lambda: joblib.dump(model, jl))))
        rows.append(("joblib", "load", timed(lambda: joblib.load(jl))))
    except ImportError:
        pass

    try:
        import skops.io as sio

        sk = tmp / "m.skops"
        rows.append(("skops.io", "save", timed(lambda: sio.dump(model, sk))))
        untrusted = sio.get_untrusted_types(file=sk)
        rows.append(("skops.io", "load", timed(lambda: sio.load(sk, trusted=untrusted))))
    except ImportError:
        pass

    try:
        import mlflow.pyfunc
        import mlflow.sklearn

        ml = tmp / "mlflow"
        import inspect as _inspect

        kwargs = {}
        if "skops_trusted_types" in _inspect.signature(mlflow.sklearn.save_model).parameters:
            kwargs["skops_trusted_types"] = ["sklearn.tree._tree.Tree"]  # MLflow's default format is skops
        rows.append(("mlflow", "save", timed(lambda: mlflow.sklearn.save_model(model, ml, **kwargs), repeats=3,
                                             setup=lambda: shutil.rmtree(ml, ignore_errors=True))))
        rows.append(("mlflow", "load", timed(lambda: mlflow.pyfunc.load_model(str(ml)), repeats=3)))
    except ImportError:
        pass

    art = tmp / "m.msafe"
    os.environ["MODELSAFE_CACHE_DIR"] = str(tmp / "cache")
    rows.append(("modelsafe", "save", timed(lambda: ms.save(model, art, sample=sample, overwrite=True))))
    # A load re-hashes every member unless the verified-hash cache knows the unchanged file.
    # The cache records a file only once it is RACY_NS old (its timestamps could hide a write
    # made in the same clock tick), as for a model saved earlier and loaded later.
    os.environ["MODELSAFE_HASH_CACHE"] = "0"
    rows.append(("modelsafe (every member hashed)", "load", timed(lambda: ms.load(art, env="warn").close())))
    os.environ["MODELSAFE_HASH_CACHE"] = "1"
    time.sleep(1.1)
    ms.load(art, env="warn").close()  # verified once, and recorded
    rows.append(("modelsafe (unchanged file, hashes cached)", "load",
                 timed(lambda: ms.load(art, env="warn").close())))

    base = {op: t for tool, op, t in rows if tool == "pickle"}
    print(f"\nscikit-learn pipeline: StandardScaler + RandomForest(200), pickle size {size_mb:.1f} MB, "
          f"median of {REPEATS}; model predict time on the 32-row sample: {predict_time * 1000:.1f} ms\n")
    print("| tool | op | total (ms) | own work (ms) | own / pickle |")
    print("|---|---|---:|---:|---:|")
    for tool, op, t in rows:
        own = t - predict_time if tool.startswith("modelsafe") else t
        print(f"| {tool} | {op} | {t * 1000:.1f} | {own * 1000:.1f} | {own / base[op]:.2f}x |")

    bare = import_time("")
    rows_import = [("bare python", bare), ("modelsafe", import_time("modelsafe"))]
    for peer in ("skops.io", "mlflow"):
        try:
            rows_import.append((peer, import_time(peer, repeats=5)))
        except subprocess.CalledProcessError:
            pass
    print("\n| import | median (s) | over bare Python (s) |")
    print("|---|---:|---:|")
    for name, t in rows_import:
        print(f"| {name} | {t:.3f} | {t - bare:+.3f} |")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
