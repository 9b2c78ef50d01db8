"""Benchmark: logging and loading the RF(200) pipeline through MLflow, modelsafe-backed vs ``mlflow.sklearn``.

Workload: the scikit-learn pipeline of ``bench_sklearn.py`` (StandardScaler + RandomForestClassifier(200),
about 25 MB), logged to an MLflow tracking store (SQLite, local artifact folder) and loaded back with
``mlflow.pyfunc.load_model(model_uri)``, in one process and one run:

* modelsafe-backed: ``ms.save`` (32-row verification sample) then ``modelsafe.mlflow.log_model``; the
  load runs every check of ``ms.load`` (integrity, audit, environment, verification replay);
* ``mlflow.sklearn.log_model`` in its default serialization (skops; ``sklearn.tree._tree.Tree``
  trusted, as MLflow requires for forests), the same with ``pip_requirements`` given (MLflow then
  skips inferring the requirements, which loads the model in a subprocess; modelsafe reads them
  from the artifact), and with ``serialization_format="cloudpickle"``.

Every peer logs with the same 32-row ``input_example`` (MLflow then validates the serving example by
loading the model once, for every flavor alike). Peers run in interleaved rounds (``BENCH_REPEATS``,
default 5) and each cell is the median. The model's own time to predict the 32 rows (which
modelsafe's load replays for verification) is timed in the same run and printed beside.

Run: ``.venv/bin/python bench/bench_mlflow.py`` (needs ``modelsafe[mlflow]``, scikit-learn, skops).
"""

from __future__ import annotations

import functools
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from bench_sklearn import build_model  # noqa: E402 - the same fitted pipeline as the save/load benchmark

REPEATS = int(os.environ.get("BENCH_REPEATS", "5"))


def _time(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> int:
    import logging

    import mlflow
    import mlflow.pyfunc
    import mlflow.sklearn

    import modelsafe as ms
    import modelsafe.mlflow

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    model, X = build_model()
    sample = X[:32]
    with tempfile.TemporaryDirectory(prefix="bench-mlflow-") as tmp_name:
        tmp = Path(tmp_name)
        mlflow.set_tracking_uri(f"sqlite:///{tmp / 'mlflow.db'}")
        mlflow.set_experiment(experiment_id=mlflow.create_experiment("bench", artifact_location=str(tmp / "store")))

        def modelsafe_log(round_: int) -> Any:
            path = tmp / f"rf-{round_}.msafe"
            ms.save(model, path, sample=sample)
            return modelsafe.mlflow.log_model(path, "rf")

        def sklearn_log(fmt: str, pinned: bool = False) -> Callable[[int], Any]:
            def log(round_: int) -> Any:
                extra: dict[str, Any] = {"skops_trusted_types": ["sklearn.tree._tree.Tree"]} if fmt == "skops" else {}
                if pinned:  # no requirements inference (MLflow loads the model in a subprocess to find them)
                    extra["pip_requirements"] = mlflow.sklearn.get_default_pip_requirements()
                return mlflow.sklearn.log_model(model, name="rf", input_example=sample, serialization_format=fmt,
                                                **extra)
            return log

        peers = {"modelsafe-backed": modelsafe_log, "mlflow.sklearn (skops, default)": sklearn_log("skops"),
                 "mlflow.sklearn (skops, pip_requirements given)": sklearn_log("skops", pinned=True),
                 "mlflow.sklearn (cloudpickle)": sklearn_log("cloudpickle")}
        times: dict[str, dict[str, list[float]]] = {name: {"log": [], "load": []} for name in peers}
        predict: list[float] = []
        for round_ in range(REPEATS):
            for name, log in peers.items():
                with mlflow.start_run():
                    seconds, info = _time(functools.partial(log, round_))
                times[name]["log"].append(seconds)
                seconds, loaded = _time(functools.partial(mlflow.pyfunc.load_model, info.model_uri))
                times[name]["load"].append(seconds)
                assert (loaded.predict(X[:100]) == model.predict(X[:100])).all()
            predict.append(_time(lambda: (model.predict(sample), model.predict_proba(sample)))[0])
    _print(times, statistics.median(predict))
    return 0


def _print(times: dict[str, dict[str, list[float]]], predict: float) -> None:
    ours = times["modelsafe-backed"]
    print(f"\nRF(200) pipeline through MLflow, median of {REPEATS} interleaved rounds (seconds)\n")
    print("| peer | log_model | load_model | log + load | log / modelsafe | load / modelsafe |")
    print("|---|---|---|---|---|---|")
    base_log, base_load = statistics.median(ours["log"]), statistics.median(ours["load"])
    for name, cell in times.items():
        log, load = statistics.median(cell["log"]), statistics.median(cell["load"])
        print(f"| {name} | {log:.3f} ({min(cell['log']):.3f}-{max(cell['log']):.3f}) | {load:.3f} "
              f"({min(cell['load']):.3f}-{max(cell['load']):.3f}) | {log + load:.3f} | {log / base_log:.2f}x | "
              f"{load / base_load:.2f}x |")
    print(f"\nmodelsafe-backed log_model includes ms.save; its load includes integrity, audit, environment check and "
          f"the verification replay. The model's own predict + predict_proba of the 32-row sample: {predict:.4f} s.")


if __name__ == "__main__":
    raise SystemExit(main())
