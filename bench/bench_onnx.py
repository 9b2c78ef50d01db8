"""Benchmark: the portable ONNX member (onnxruntime) against the native model, for predict and for load.

Models (fit here, saved with ``portable="onnx"``):

* ``pipeline``: ColumnTransformer(OneHotEncoder on a text column, StandardScaler on two numbers) +
  LogisticRegression, fed a pandas DataFrame;
* ``forest``: RandomForestClassifier(100 trees, max_depth=10) on 20 features;
* ``xgboost``: XGBClassifier(100 trees, max_depth=6) on 20 features;
* ``mlp``: a torch MLP 20 -> 64 -> 64 -> 2.

Each measurement runs in a fresh worker process per runtime, so the ONNX worker shows what a
serving host without the framework sees: it imports modelsafe, numpy, onnxruntime (and pandas
for the DataFrame model) and never scikit-learn, XGBoost or torch (the worker checks
``sys.modules`` and fails otherwise). Per model and runtime:

* ``import + load``: ``import modelsafe`` and ``ms.load`` (every check: integrity, audit, environment,
  verification of the stored sample), timed inside the worker from its start;
* ``predict, 1 row`` and ``predict, 10,000 rows``: ``bundle.predict`` with the input guard (median of
  repeated calls after a warm-up);
* the peers in the same worker: the bare framework (``model.predict`` on the native model, no guard)
  and bare onnxruntime (``session.run`` on ready feeds), so modelsafe's own cost shows beside them.

``BENCH_ROUNDS`` (default 3) worker pairs per model; the table shows medians. Run:
``.venv/bin/python bench/bench_onnx.py``. Prints a markdown table.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
ROWS = 10_000

WORKER = """
import time
start = time.perf_counter()
import json, statistics, sys
import modelsafe as ms
runtime, name, folder = sys.argv[1], sys.argv[2], sys.argv[3]
bundle = ms.load(f"{folder}/{name}.msafe", runtime=runtime)
loaded = time.perf_counter() - start
import numpy as np
if name == "pipeline":
    import pandas as pd
    rows = pd.read_parquet(f"{folder}/rows.parquet")
else:
    rows = np.load(f"{folder}/rows.npy").astype(np.float32 if name == "mlp" else np.float64)
one = rows.iloc[:1] if hasattr(rows, "iloc") else rows[:1]

def median(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)

result = {"load": loaded, "one": median(lambda: bundle.predict(one), 300), "many": median(lambda: bundle.predict(rows), 7)}
if runtime == "native":
    model = bundle.model
    if name == "mlp":
        import torch
        def bare(x):
            with torch.no_grad():
                return model(torch.from_numpy(x))
    else:
        bare = model.predict
    result["bare_one"] = median(lambda: bare(one), 300)
    result["bare_many"] = median(lambda: bare(rows), 7)
else:
    from modelsafe.portable.feeds import feed
    session, inputs = bundle.model.session, bundle.model.inputs
    feeds_one, feeds_many = feed(inputs, one), feed(inputs, rows)
    result["bare_one"] = median(lambda: session.run(None, feeds_one), 300)
    result["bare_many"] = median(lambda: session.run(None, feeds_many), 7)
    frameworks = [m for m in ("sklearn", "xgboost", "lightgbm", "torch", "scipy") if m in sys.modules]
    assert not frameworks, frameworks
print(json.dumps(result))
"""


def build(folder: Path) -> None:
    import pandas as pd
    import torch
    import xgboost as xgb
    from sklearn.compose import make_column_transformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    import modelsafe as ms

    rng = np.random.default_rng(0)
    n = 20_000
    frame = pd.DataFrame({"income": rng.normal(50, 10, n), "age": rng.integers(18, 80, n),
                          "city": rng.choice(["paris", "lyon", "nice", "lille"], n)})
    labels = ((frame["income"] > 50) & (frame["city"] != "nice")).astype(int)
    pipeline = make_pipeline(make_column_transformer((OneHotEncoder(handle_unknown="ignore"), ["city"]),
                                                     (StandardScaler(), ["income", "age"])), LogisticRegression())
    ms.save(pipeline.fit(frame, labels), folder / "pipeline.msafe", sample=frame.iloc[:64], portable="onnx")
    frame.iloc[:ROWS].to_parquet(folder / "rows.parquet")
    X = rng.normal(size=(n, 20))
    y = (X[:, :3].sum(axis=1) + rng.normal(scale=1.0, size=n) > 0).astype(int)
    forest = RandomForestClassifier(100, max_depth=10, random_state=0).fit(X, y)
    ms.save(forest, folder / "forest.msafe", sample=X[:64], portable="onnx")
    booster = xgb.XGBClassifier(n_estimators=100, max_depth=6).fit(X, y)
    ms.save(booster, folder / "xgboost.msafe", sample=X[:64], portable="onnx")
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(),
                              torch.nn.Linear(64, 2)).eval()
    ms.save(mlp, folder / "mlp.msafe", sample=X[:64].astype(np.float32), portable="onnx")
    np.save(folder / "rows.npy", X[:ROWS])


def run_worker(runtime: str, name: str, folder: Path) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(WORKER), runtime, name, str(folder)],
                          capture_output=True, text=True, env=env, timeout=900, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{runtime} worker for {name} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="modelsafe-bench-onnx-"))
    build(folder)
    names = ("pipeline", "forest", "xgboost", "mlp")
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    for _ in range(ROUNDS):
        for name in names:
            for runtime in ("native", "onnx"):
                results.setdefault((name, runtime), []).append(run_worker(runtime, name, folder))

    def med(name: str, runtime: str, key: str) -> float:
        return statistics.median(r[key] for r in results[(name, runtime)])

    print(f"portable ONNX member vs native, {ROUNDS} round(s), medians; every worker a fresh process; the ONNX "
          "worker never imports scikit-learn, XGBoost or torch\n")
    print("| model | measure | native (modelsafe) | bare framework | ONNX (modelsafe) | bare onnxruntime "
          "| native / ONNX |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name in names:
        for key, label, unit in (("one", "predict, 1 row", 1e6), ("many", f"predict, {ROWS:,} rows", 1e3)):
            native, onnx = med(name, "native", key), med(name, "onnx", key)
            suffix = "µs" if unit == 1e6 else "ms"
            print(f"| {name} | {label} | {native * unit:,.0f} {suffix} | {med(name, 'native', 'bare_' + key) * unit:,.0f}"
                  f" {suffix} | {onnx * unit:,.0f} {suffix} | {med(name, 'onnx', 'bare_' + key) * unit:,.0f} {suffix} "
                  f"| {native / onnx:.1f}x |")
        native, onnx = med(name, "native", "load"), med(name, "onnx", "load")
        print(f"| {name} | import + load (verified) | {native:.2f} s | | {onnx:.2f} s | | {native / onnx:.1f}x |")
    target = med("pipeline", "native", "one") / med("pipeline", "onnx", "one")
    print(f"\ntarget: one-row predict of the scikit-learn pipeline through ONNX >= 5x faster than native: "
          f"{target:.1f}x ({'met' if target >= 5 else 'NOT met'})")


if __name__ == "__main__":
    main()
