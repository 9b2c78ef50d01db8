"""Batch and distributed scoring against hand-written peers, same model, same data, one run.

Model: StandardScaler + RandomForest(100) on 20 features. Prints a markdown table:

* ``predict_file`` on 1 M rows of Parquet vs a hand-written loop (pyarrow batches ->
  ``model.predict`` of the plainly pickled model -> ParquetWriter); peak RSS for 1 M and 4 M rows
  (measured in fresh processes, the peak reset after the imports and the load).
* ``modelsafe.dask.predict`` on 2 workers vs 1, and vs ``ddf.map_partitions(model.predict)``
  with the model pickled into the graph.
* ``modelsafe.spark.udf`` vs ``mlflow.pyfunc.spark_udf``, when MLflow and pyspark are installed.

``ROWS=200000 python bench/bench_batch.py`` for a quicker run.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROWS = int(os.environ.get("ROWS", "1000000"))
FEATURES = [f"x{j}" for j in range(20)]
BATCH = 65_536
PEAK = """
import sys, warnings
warnings.simplefilter("ignore")
import modelsafe as ms
ms.load(sys.argv[1]).close()
open("/proc/self/clear_refs", "w").write("5")
ms.predict_file(sys.argv[1], sys.argv[2], sys.argv[3])
print(next(int(l.split()[1]) << 10 for l in open("/proc/self/status") if l.startswith("VmHWM")))
"""


def _frame(rows: int, seed: int = 0):
    import pandas as pd

    return pd.DataFrame(np.random.default_rng(seed).normal(size=(rows, len(FEATURES))), columns=FEATURES)


def _model(folder: Path):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import modelsafe as ms

    X = _frame(5_000, seed=1)
    y = (X["x0"] + X["x1"] > 0).astype(int)
    model = make_pipeline(StandardScaler(), RandomForestClassifier(100, max_depth=10, random_state=0, n_jobs=1)).fit(X, y)
    ms.save(model, folder / "forest.msafe", sample=X.iloc[:64])
    (folder / "forest.pkl").write_bytes(pickle.dumps(model))
    return model


def _hand_loop(pickled: Path, source: Path, destination: Path) -> float:
    import pyarrow as pa
    import pyarrow.parquet as pq

    start = time.perf_counter()
    model = pickle.loads(pickled.read_bytes())
    writer = None
    for batch in pq.ParquetFile(source).iter_batches(batch_size=BATCH):
        table = pa.table({"prediction": model.predict(batch.to_pandas())})
        writer = writer or pq.ParquetWriter(destination, table.schema)
        writer.write_table(table)
    writer.close()
    return time.perf_counter() - start


def _predict_file(folder: Path, source: Path) -> float:
    import modelsafe as ms

    start = time.perf_counter()
    ms.predict_file(folder / "forest.msafe", source, folder / "scores.parquet", batch_size=BATCH)
    return time.perf_counter() - start


def _peak(folder: Path, source: Path) -> int:
    out = subprocess.run([sys.executable, "-c", PEAK, str(folder / "forest.msafe"), str(source),
                          str(folder / "peak.parquet")], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


def _dask(folder: Path, model, frame) -> dict[str, float]:
    import dask.dataframe as dd
    from distributed import Client, LocalCluster

    import modelsafe.dask

    times = {}
    ddf = dd.from_pandas(frame, npartitions=16)
    for workers in (1, 2):
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
                Client(cluster):
            start = time.perf_counter()
            modelsafe.dask.predict(folder / "forest.msafe", ddf).compute()
            times[f"modelsafe, {workers} worker(s)"] = time.perf_counter() - start
            if workers == 2:
                start = time.perf_counter()
                ddf.map_partitions(model.predict, meta=("prediction", "int64")).compute()
                times["map_partitions(model.predict), pickled model, 2 workers"] = time.perf_counter() - start
    return times


def _spark(folder: Path, model, frame) -> dict[str, float]:
    try:
        import mlflow.pyfunc
        import mlflow.sklearn
        from pyspark.sql import SparkSession
    except ImportError as exc:
        return {f"skipped: {exc.name} is not installed here": float("nan")}
    import modelsafe.spark

    os.environ["PYSPARK_PYTHON"] = sys.executable
    spark = SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false").getOrCreate()
    df = spark.createDataFrame(frame).repartition(8).cache()
    df.count()
    mlflow.sklearn.save_model(model, str(folder / "mlflow-model"))
    times = {}
    for name, udf in (("modelsafe.spark.udf", modelsafe.spark.udf(spark, folder / "forest.msafe")),
                      ("mlflow.pyfunc.spark_udf", mlflow.pyfunc.spark_udf(spark, str(folder / "mlflow-model")))):
        start = time.perf_counter()
        df.select(udf(*FEATURES).alias("p")).agg({"p": "sum"}).collect()
        times[name] = time.perf_counter() - start
    spark.stop()
    return times


def main() -> None:
    warnings.simplefilter("ignore")
    folder = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    model = _model(folder)
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = _frame(ROWS)
    source = folder / "rows.parquet"
    pq.write_table(pa.Table.from_pandas(frame), source, row_group_size=100_000)
    print(f"| what ({ROWS:,} rows, RF(100), 20 features) | seconds | ratio |\n|---|---|---|")
    hand = _hand_loop(folder / "forest.pkl", source, folder / "hand.parquet")
    ours = _predict_file(folder, source)
    print(f"| hand-written pyarrow + model.predict (pickle) | {hand:.2f} | 1.00 |")
    print(f"| ms.predict_file | {ours:.2f} | {ours / hand:.2f} x (target <= 1.2) |")
    large = folder / "rows4.parquet"
    with pq.ParquetWriter(large, pa.Table.from_pandas(frame).schema) as writer:
        for _ in range(4):
            writer.write_table(pa.Table.from_pandas(frame), row_group_size=100_000)
    small_peak, large_peak = _peak(folder, source), _peak(folder, large)
    print(f"| peak RSS of the scoring, {ROWS:,} rows | {small_peak / 2**20:.0f} MiB | |")
    print(f"| peak RSS of the scoring, {4 * ROWS:,} rows | {large_peak / 2**20:.0f} MiB | "
          f"{large_peak / small_peak:.2f} x |")
    dask_times = _dask(folder, model, frame)
    one, two = dask_times["modelsafe, 1 worker(s)"], dask_times["modelsafe, 2 worker(s)"]
    peer = dask_times["map_partitions(model.predict), pickled model, 2 workers"]
    print(f"| dask: modelsafe, 1 worker | {one:.2f} | |")
    print(f"| dask: modelsafe, 2 workers | {two:.2f} | speed-up {one / two:.2f} x (target >= 1.7) |")
    print(f"| dask: map_partitions(model.predict), model in the graph, 2 workers | {peer:.2f} | "
          f"modelsafe {two / peer:.2f} x (target <= 1.1) |")
    for name, seconds in _spark(folder, model, frame).items():
        print(f"| spark: {name} | {seconds:.2f} | |")


if __name__ == "__main__":
    main()
