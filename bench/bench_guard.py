"""Benchmark: the input guard's overhead in ``Bundle.predict`` on a 1,000 x 20 DataFrame.

For each model, in one run: the model called directly (``bundle.model.predict(df)``),
``bundle.predict(df, check=False)`` and ``bundle.predict(df)`` (the guard: column
names, dtypes and value ranges checked on every call). Each is the median of many
interleaved calls. Prints a markdown table with the guard's overhead in percent, and the
guard's own CPU time (``Guard.check`` alone, interleaved with the rest) as a share of the
model's: on a busy machine the difference of two noisy wall-clock medians says less than
that share (a model that predicts on several threads has its CPU time summed over them).

Besides the numeric frames: a frame whose first two columns are categorical (a
HistGradientBoosting model with ``categorical_features="from_dtype"``: the first wave's
guard raised IndexError on it), and the numeric frames as polars DataFrames (read
through Arrow).

Run: ``.venv/bin/python bench/bench_guard.py``.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

import modelsafe as ms
from modelsafe.checks.schema import Guard

ROWS, COLUMNS, ROUNDS = 1_000, 20, 400


def _models() -> dict[str, Any]:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return {
        "LogisticRegression": LogisticRegression(max_iter=500),
        "StandardScaler + LogisticRegression": make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)),
        "RandomForest(100)": RandomForestClassifier(100, max_depth=8, random_state=0),
    }


def _interleaved(calls: dict[str, Callable[[], Any]], rounds: int) -> dict[str, float]:
    """Median wall time of each call, measured round-robin so drift hits all of them alike; and,
    as ``"<name> cpu"``, its median CPU time (what the process spent, whoever else runs)."""
    times: dict[str, list[float]] = {key: [] for name in calls for key in (name, f"{name} cpu")}
    for _ in range(rounds):
        for name, call in calls.items():
            cpu, start = time.process_time(), time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
            times[f"{name} cpu"].append(time.process_time() - cpu)
    return {name: statistics.median(t) for name, t in times.items()}


def _frames() -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(0)
    floats = pd.DataFrame(rng.normal(size=(ROWS, COLUMNS)), columns=[f"f{i}" for i in range(COLUMNS)])
    # Half the columns integer: the guard must read every dtype. Built from a dict, as
    # read_csv does, pandas keeps one block per dtype; assigning columns one at a time
    # leaves one block per column, the slowest case for DataFrame.to_numpy.
    columns = {c: (floats[c] * 10).round().astype(np.int64) if i % 2 == 0 else floats[c]
               for i, c in enumerate(floats.columns)}
    fragmented = floats.copy()
    for c in list(columns)[::2]:
        fragmented[c] = columns[c]
    return {"float": floats, "mixed int/float": pd.DataFrame(columns),
            "mixed, one block per column": fragmented}


def _cases() -> list[tuple[str, str, Any, Any]]:
    """(frame kind, model name, model, frame) for every row of the table."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    cases = [(kind, name, model, df) for kind, df in _frames().items() for name, model in _models().items()]
    floats = _frames()["float"]
    categorical = floats.assign(f18=pd.Categorical(np.where(floats["f18"] > 0, "up", "down")),
                                f19=pd.Categorical((floats["f19"] * 3).round().clip(-3, 3).astype(str)))
    categorical = categorical[["f18", "f19", *[f"f{i}" for i in range(18)]]]  # categories first
    cases.append(("2 category + 18 float", "HistGradientBoosting(from_dtype)",
                  HistGradientBoostingClassifier(categorical_features="from_dtype", max_iter=20), categorical))
    try:
        import polars as pl
    except ImportError:
        return cases
    for kind, df in list(_frames().items())[:2]:
        cases.append((f"polars, {kind}", "LogisticRegression", _models()["LogisticRegression"], pl.from_pandas(df)))
    return cases


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="modelsafe-bench-guard-"))
    print(f"\nInput guard overhead, {ROWS} x {COLUMNS} DataFrame, median of {ROUNDS} interleaved calls\n")
    print("| columns | model | model.predict (µs) | predict(check=False) (µs) | predict (guarded) (µs) "
          "| guard overhead | guard alone, CPU (µs) | guard / model.predict, CPU |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for kind, name, model, df in _cases():
        y = (df["f0"] + df["f1"] > 0).to_numpy().astype(int)
        model.fit(df, y)
        path = folder / f"{len(list(folder.iterdir()))}.msafe"
        ms.save(model, path, sample=df[:32], training_data=df)
        bundle = ms.load(path)
        guard = Guard(bundle.manifest.schema)
        times = _interleaved({
            "direct": lambda: bundle.model.predict(df),
            "unchecked": lambda: bundle.predict(df, check=False),
            "guarded": lambda: bundle.predict(df),
            "guard": lambda: guard.check(df),
        }, ROUNDS if "Forest" not in name and "Gradient" not in name else ROUNDS // 4)
        overhead = times["guarded"] / times["direct"] - 1
        print(f"| {kind} | {name} | {times['direct'] * 1e6:.0f} | {times['unchecked'] * 1e6:.0f} | "
              f"{times['guarded'] * 1e6:.0f} | {overhead * 100:+.1f} % | {times['guard cpu'] * 1e6:.0f} | "
              f"{times['guard cpu'] / times['direct cpu'] * 100:.1f} % |")
        bundle.close()


if __name__ == "__main__":
    main()
