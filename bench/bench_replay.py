"""Benchmark: loading a multi-threaded model, where replaying the verification sample costs most.

Workload: StandardScaler + RandomForestClassifier(200 trees, max_depth=12, ``n_jobs=2``, kept as
fitted) on 20,000 x 20, saved with a 32-row sample. ``pickle.load`` is the peer. modelsafe's
load replays the sample through ``predict`` and ``predict_proba``; with ``n_jobs=2`` each call
starts joblib's worker threads, which costs more than the prediction of 32 rows itself.
``BENCH_MODEL=lightgbm`` or ``xgboost`` puts an LGBMClassifier / XGBClassifier (200 trees,
``n_jobs=2``) in the Pipeline instead: an embedded component, which the Pipeline calls itself.

Rows, in interleaved rounds (``BENCH_ROUNDS``, default 15) in one process:

* ``pickle.load``;
* ``ms.load``: integrity (every member hashed: ``MODELSAFE_HASH_CACHE=0``), audit, environment,
  verification replay; "own work" is the total minus the model's own prediction of the
  sample as the replay runs it (``predict`` + ``predict_proba`` on joblib's sequential
  backend), as bench_sklearn.py counts it;
* ``ms.load`` as it was before issue 20 §8 (the replay inside no ``replay_context``, so each call
  starts the model's worker pools), its own work being the total minus the prediction with
  ``n_jobs=2``;
* the replay alone: ``Bundle.verify()`` on a loaded bundle, and the model's own prediction.

Run: ``.venv/bin/python bench/bench_replay.py``. Prints a markdown table.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "15"))
MODEL = os.environ.get("BENCH_MODEL", "rf")


def build() -> tuple[Any, np.ndarray]:
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    X = rng.normal(size=(20_000, 20))
    y = (X[:, :3].sum(axis=1) + rng.normal(scale=2.0, size=len(X)) > 0).astype(int)
    if MODEL == "lightgbm":
        import lightgbm

        estimator: Any = lightgbm.LGBMClassifier(n_estimators=200, n_jobs=2, random_state=0, verbose=-1)
    elif MODEL == "xgboost":
        import xgboost

        estimator = xgboost.XGBClassifier(n_estimators=200, n_jobs=2, random_state=0)
    else:
        from sklearn.ensemble import RandomForestClassifier

        estimator = RandomForestClassifier(200, max_depth=12, random_state=0, n_jobs=2)
    return make_pipeline(StandardScaler(), estimator).fit(X, y), X


def seconds(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    import modelsafe as ms

    os.environ["MODELSAFE_HASH_CACHE"] = "0"
    model, X = build()
    sample = X[:32]
    tmp = Path(tempfile.mkdtemp(prefix="modelsafe-bench-replay-"))
    pkl, art = tmp / "m.pkl", tmp / "m.msafe"
    with open(pkl, "wb") as f:
        pickle.dump(model, f)
    ms.save(model, art, sample=sample)
    bundle = ms.load(art)

    def pickle_load() -> None:
        with open(pkl, "rb") as f:
            pickle.load(f)

    def load_with_pools() -> None:
        """ms.load with every flavor's replay context switched off: the replay as it ran before issue 20 §8."""
        from modelsafe.flavors._base import Flavor

        def every(cls: type) -> list[type]:
            return [cls] + [c for sub in cls.__subclasses__() for c in every(sub)]

        saved = [(cls, cls.__dict__["replay_context"]) for cls in every(Flavor) if "replay_context" in cls.__dict__]
        for cls, _ in saved:
            cls.replay_context = lambda self, obj: contextlib.nullcontext()  # type: ignore[attr-defined]
        try:
            ms.load(art).close()
        finally:
            for cls, method in saved:
                cls.replay_context = method  # type: ignore[attr-defined]

    def sequential_predict() -> None:
        import joblib

        with joblib.parallel_config(backend="sequential"):
            model.predict(sample), model.predict_proba(sample)

    ops: dict[str, Callable[[], Any]] = {
        "pickle.load": pickle_load,
        "ms.load": lambda: ms.load(art).close(),
        "ms.load before §8 (replay starts worker pools)": load_with_pools,
        "model's own predict + predict_proba (n_jobs=2)": lambda: (model.predict(sample), model.predict_proba(sample)),
        "the same on joblib's sequential backend (as the replay runs now)": sequential_predict,
        "Bundle.verify() (the replay alone)": bundle.verify,
    }
    for fn in ops.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in ops}
    for _ in range(ROUNDS):
        for name, fn in ops.items():
            times[name].append(seconds(fn))
    predict = times["model's own predict + predict_proba (n_jobs=2)"]
    sequential = times["the same on joblib's sequential backend (as the replay runs now)"]
    own = [t - p for t, p in zip(times["ms.load"], sequential)]
    own_before = [t - p for t, p in zip(times["ms.load before §8 (replay starts worker pools)"], predict)]
    name = {"rf": "RF", "lightgbm": "LGBMClassifier", "xgboost": "XGBClassifier"}[MODEL]
    print(f"\n{name}(200, n_jobs=2) pipeline, 32-row sample; {ROUNDS} interleaved rounds, median (min-max) ms\n")
    print("| what | ms |")
    print("|---|---:|")
    for name, ts in times.items():
        print(f"| {name} | {statistics.median(ts) * 1e3:.1f} ({min(ts) * 1e3:.1f}-{max(ts) * 1e3:.1f}) |")
    print(f"| ms.load, own work (total - the model's own prediction as the replay runs it: sequential) | "
          f"{statistics.median(own) * 1e3:.1f} |")
    print(f"| ms.load before §8, own work (total - the prediction with n_jobs=2) | "
          f"{statistics.median(own_before) * 1e3:.1f} |")
    ratio = [t / p for t, p in zip(times["ms.load"], times["pickle.load"])]
    print(f"\nms.load / pickle.load: {statistics.median(ratio):.2f}x (total), "
          f"{statistics.median([o / p for o, p in zip(own, times['pickle.load'])]):.2f}x (own work)")


if __name__ == "__main__":
    main()
