"""Batch and distributed scoring against hand-written peers: same model, same data, one run.

Model: StandardScaler + RandomForest(100, max_depth=10, n_jobs=1) on 20 features, saved with
``ms.save`` and pickled plainly for the peers. Data: ``ROWS`` rows (1 M), written once as one
Parquet file (row groups of 100,000) and as 16 Parquet files of equal size (the 16 partitions
of every Dask and Spark job).

* ``predict_file`` on the Parquet file vs a hand-written loop (pyarrow batches of 65,536 rows ->
  ``model.predict`` of the unpickled model -> ParquetWriter), both timed from the load to the
  closed output; peak RSS of ``predict_file`` for ``ROWS`` and 4 x ``ROWS`` rows and of the hand
  loop for ``ROWS``, each in a fresh process (peak reset after the imports and the load).
* Dask: ``modelsafe.dask.predict`` and ``ddf.map_partitions`` of a function calling
  ``model.predict`` with the model pickled into the graph (returning the same Series), each on
  a 1-worker and a 2-worker ``LocalCluster(processes=True, threads_per_worker=1)`` (the nanny
  sets OMP/MKL/OpenBLAS threads to 1; printed). The partitions are read by the workers
  (``dd.read_parquet`` of the 16 files), as in a real job; nothing is shipped from the client.
  Both clusters stay up for the whole section; each cluster first runs each job once (the
  warm-up: imports, modelsafe's one load + verification per worker), then the four jobs run
  in interleaved rounds, the order rotating. Besides the wall time, the CPU seconds each
  worker process spent on the job (the busiest worker: the job's critical path on an idle
  machine) are reported, steadier than wall times on a shared machine. The first job on a
  new 2-worker cluster (everything cold) is measured once per peer, on a cluster of its own.
* Spark (``local[2]``, the 16 files cached in 8 partitions, Arrow batches of 10,000 rows):
  ``modelsafe.spark.udf`` vs ``mlflow.pyfunc.spark_udf(env_manager="local")`` on the same
  model saved by ``mlflow.sklearn.save_model`` with a signature (so MLflow enforces its schema
  as modelsafe runs its guard), both returning a long; one warm-up job each, then interleaved
  rounds. Needs MLflow and pyspark (``.venv-bench`` has both: ``make bench``).

Every figure is the median over ``ROUNDS`` rounds (5), with the spread of the per-round ratios;
the load average is printed with each section. The predictions of modelsafe and of each peer
are checked to be equal. ``ROWS=200000 ROUNDS=3 python bench/bench_batch.py`` for a quicker run;
``SECTIONS=dask,spark`` runs only those sections (of ``files``, ``peaks``, ``dask``, ``spark``).
"""

from __future__ import annotations

import inspect
import logging
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROWS = int(os.environ.get("ROWS", "1000000"))
ROUNDS = int(os.environ.get("ROUNDS", "5"))
SECTIONS = os.environ.get("SECTIONS", "files,peaks,dask,spark").split(",")
FEATURES = [f"x{j}" for j in range(20)]
BATCH, PARTITIONS = 65_536, 16
PEAK = """
import sys, warnings, pickle
warnings.simplefilter("ignore")
import modelsafe as ms
sys.path.insert(0, sys.argv[4])
from bench_batch import hand_loop
if sys.argv[5] == "modelsafe":
    ms.load(sys.argv[1]).close()
else:
    pickle.loads(open(sys.argv[1], "rb").read())
open("/proc/self/clear_refs", "w").write("5")
(ms.predict_file if sys.argv[5] == "modelsafe" else hand_loop)(sys.argv[1], sys.argv[2], sys.argv[3])
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
    model = make_pipeline(StandardScaler(), RandomForestClassifier(100, max_depth=10, random_state=0, n_jobs=1))
    model.fit(X, y)
    ms.save(model, folder / "forest.msafe", sample=X.iloc[:64])
    (folder / "forest.pkl").write_bytes(pickle.dumps(model))
    return model


def _load() -> str:
    return "load average " + " / ".join(f"{x:.1f}" for x in os.getloadavg()) + f" on {os.cpu_count()} cores"


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _spread(a: list[float], b: list[float]) -> str:
    """The range of the per-round ratios a/b."""
    ratios = [x / y for x, y in zip(a, b)]
    return f"{min(ratios):.2f}-{max(ratios):.2f}"


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def _rounds(jobs: dict[str, Callable[[], dict[str, float]]], rounds: int) -> dict[str, dict[str, list[float]]]:
    """Each job once per round, the first job of each round rotating; every measure of every job, per round."""
    names = list(jobs)
    found: dict[str, dict[str, list[float]]] = {name: {} for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            for measure, value in jobs[name]().items():
                found[name].setdefault(measure, []).append(value)
    return found


def hand_loop(pickled: Any, source: Any, destination: Any) -> None:
    """The peer of predict_file: pyarrow batches -> model.predict -> ParquetWriter."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    model = pickle.loads(Path(pickled).read_bytes())
    writer = None
    for batch in pq.ParquetFile(source).iter_batches(batch_size=BATCH):
        table = pa.table({"prediction": model.predict(batch.to_pandas())})
        writer = writer or pq.ParquetWriter(destination, table.schema)
        writer.write_table(table)
    writer.close()


def _timed(call: Callable[[], Any]) -> dict[str, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    call()
    return {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}


def _files(folder: Path, source: Path) -> list[str]:
    import pyarrow.parquet as pq

    import modelsafe as ms

    jobs = {
        "hand": lambda: _timed(lambda: hand_loop(folder / "forest.pkl", source, folder / "hand.parquet")),
        "modelsafe": lambda: _timed(lambda: ms.predict_file(folder / "forest.msafe", source,
                                                            folder / "scores.parquet", batch_size=BATCH)),
    }
    for job in jobs.values():  # warm-up: imports, the page cache
        job()
    ours, peer = (pq.read_table(folder / f)["prediction"].to_numpy() for f in ("scores.parquet", "hand.parquet"))
    _check_equal("predict_file", ours, peer)
    found = _rounds(jobs, ROUNDS)
    hand, mine = found["hand"], found["modelsafe"]
    ratio, cpu = _median(mine["wall"]) / _median(hand["wall"]), _median(mine["cpu"]) / _median(hand["cpu"])
    return [f"| hand-written pyarrow + model.predict (pickle) | {_median(hand['wall']):.2f} | "
            f"{_median(hand['cpu']):.2f} | 1.00 | | |",
            f"| ms.predict_file | {_median(mine['wall']):.2f} | {_median(mine['cpu']):.2f} | {ratio:.2f} x "
            f"({_spread(mine['wall'], hand['wall'])}); CPU {cpu:.2f} x | <= 1.2 x | {_verdict(ratio <= 1.2)} |"]


def _peak(argument: Path, source: Path, destination: Path, who: str) -> int:
    out = subprocess.run([sys.executable, "-c", PEAK, str(argument), str(source), str(destination),
                          str(Path(__file__).resolve().parent), who], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


def _peaks(folder: Path, frame: Any, source: Path) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    large = folder / "rows4.parquet"
    table = pa.Table.from_pandas(frame, preserve_index=False)
    with pq.ParquetWriter(large, table.schema) as writer:
        for _ in range(4):
            writer.write_table(table, row_group_size=100_000)
    small = _peak(folder / "forest.msafe", source, folder / "peak.parquet", "modelsafe")
    big = _peak(folder / "forest.msafe", large, folder / "peak.parquet", "modelsafe")
    hand = _peak(folder / "forest.pkl", source, folder / "peak.parquet", "hand")
    return [f"| peak RSS, hand loop, {ROWS:,} rows | {hand / 2**20:.0f} MiB | | | | |",
            f"| peak RSS, ms.predict_file, {ROWS:,} rows | {small / 2**20:.0f} MiB | | | | |",
            f"| peak RSS, ms.predict_file, {4 * ROWS:,} rows | {big / 2**20:.0f} MiB | | {big / small:.2f} x the "
            f"{ROWS:,}-row peak (+{(big - small) / 2**20:.0f} MiB) | independent of file size | "
            f"{_verdict(big - small < 64 * 2**20)} |"]


def pickled_predict(part: Any, model: Any) -> Any:
    """The Dask peer's partition function: the model comes pickled in the graph."""
    import pandas as pd

    return pd.Series(model.predict(part), index=part.index, name="prediction")


def _worker_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _dask_job(client: Any, build: Callable[[], Any]) -> Callable[[], dict[str, float]]:
    def run() -> dict[str, float]:
        before = client.run(_worker_cpu)
        wall = time.perf_counter()
        client.compute(build(), sync=True)
        wall = time.perf_counter() - wall
        spent = [cpu - before[worker] for worker, cpu in client.run(_worker_cpu).items()]
        return {"wall": wall, "cpu_max": max(spent), "cpu_sum": sum(spent)}
    return run


def _dask(folder: Path, model: Any, parts: Path) -> list[str]:
    import dask.dataframe as dd
    from distributed import Client, LocalCluster

    import modelsafe.dask

    ddf = dd.read_parquet(str(parts))
    assert ddf.npartitions == PARTITIONS, ddf.npartitions
    settings = dict(threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None, memory_limit="4GiB",
                    silence_logs=logging.ERROR)
    builds = {"modelsafe": lambda: modelsafe.dask.predict(folder / "forest.msafe", ddf),
              "pickled": lambda: ddf.map_partitions(pickled_predict, model, meta=("prediction", "int64"))}
    lines = [f"| (dask: {_load()} at the start) | | | | | |"]
    cold = {}
    for name, build in builds.items():  # everything cold: a new cluster for one job
        with LocalCluster(n_workers=2, **settings) as cluster, Client(cluster, set_as_default=False) as client:
            client.wait_for_workers(2)
            cold[name] = _dask_job(client, build)()
    clusters = {n: LocalCluster(n_workers=n, **settings) for n in (1, 2)}
    clients = {n: Client(c, set_as_default=False) for n, c in clusters.items()}
    try:
        threads = next(iter(clients[2].run(lambda: os.environ.get("OMP_NUM_THREADS")).values()))
        jobs = {f"{name} {n}": _dask_job(clients[n], build) for n in (1, 2) for name, build in builds.items()}
        for n, client in clients.items():  # warm-up; the predictions checked equal
            ours, peer = (client.compute(build(), sync=True).to_numpy() for build in builds.values())
            _check_equal(f"dask, {n} worker(s)", ours, peer)
        found = _rounds(jobs, ROUNDS)
    finally:
        for client in clients.values():
            client.close()
        for cluster in clusters.values():
            cluster.close()
    med = {job: {m: _median(v) for m, v in measures.items()} for job, measures in found.items()}

    def row(job: str, label: str, note: str = "", target: str = "", verdict: str = "") -> str:
        return (f"| dask: {label} | {med[job]['wall']:.2f} | {med[job]['cpu_max']:.2f} (sum "
                f"{med[job]['cpu_sum']:.2f}) | {note} | {target} | {verdict} |")

    speed = med["modelsafe 1"]["wall"] / med["modelsafe 2"]["wall"]
    speed_cpu = med["modelsafe 1"]["cpu_max"] / med["modelsafe 2"]["cpu_max"]
    peer_speed = med["pickled 1"]["wall"] / med["pickled 2"]["wall"]
    versus = med["modelsafe 2"]["wall"] / med["pickled 2"]["wall"]
    versus_cpu = med["modelsafe 2"]["cpu_max"] / med["pickled 2"]["cpu_max"]
    return lines + [
        f"| dask: first job on a new 2-worker cluster, modelsafe (imports, one load + verify per worker) | "
        f"{cold['modelsafe']['wall']:.2f} | {cold['modelsafe']['cpu_max']:.2f} | "
        f"{cold['modelsafe']['wall'] / cold['pickled']['wall']:.2f} x the peer's (one run each) | | |",
        f"| dask: first job on a new 2-worker cluster, pickled model | {cold['pickled']['wall']:.2f} | "
        f"{cold['pickled']['cpu_max']:.2f} | | | |",
        row("pickled 1", "map_partitions, model pickled in the graph, 1 worker"),
        row("pickled 2", "map_partitions, model pickled in the graph, 2 workers",
            f"speed-up {peer_speed:.2f} x ({_spread(found['pickled 1']['wall'], found['pickled 2']['wall'])}): "
            "what this machine allows"),
        row("modelsafe 1", "modelsafe.dask.predict, 1 worker (OMP threads: " + str(threads) + ")"),
        row("modelsafe 2", "modelsafe.dask.predict, 2 workers",
            f"speed-up {speed:.2f} x ({_spread(found['modelsafe 1']['wall'], found['modelsafe 2']['wall'])}); "
            f"CPU critical path {speed_cpu:.2f} x", ">= 1.7 x",
            f"wall {_verdict(speed >= 1.7)}, CPU {_verdict(speed_cpu >= 1.7)}"),
        f"| dask: modelsafe / pickled peer, 2 workers | | | {versus:.2f} x "
        f"({_spread(found['modelsafe 2']['wall'], found['pickled 2']['wall'])}); CPU critical path "
        f"{versus_cpu:.2f} x | <= 1.1 x | wall {_verdict(versus <= 1.1)}, CPU {_verdict(versus_cpu <= 1.1)} |",
        f"| (dask: {_load()} at the end) | | | | | |"]


def _spark(folder: Path, model: Any, parts: Path) -> list[str]:
    try:
        import mlflow.pyfunc
        import mlflow.sklearn
        from mlflow.models import infer_signature
        from pyspark.sql import SparkSession
        from pyspark.sql import functions as F
    except ImportError as exc:
        return [f"| spark: not measured, {exc.name} is not installed in {sys.prefix} | | | | | |"]
    import modelsafe.spark

    lines = [f"| (spark: {_load()} at the start) | | | | | |"]
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"  # loopback only: Spark otherwise binds the host's own address
    spark = (SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
             .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
             .config("spark.sql.execution.arrow.maxRecordsPerBatch", "10000").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    try:
        df = spark.read.parquet(str(parts)).repartition(8).cache()
        df.count()
        sample = _frame(64, seed=1)
        options = {}  # MLflow's default format (skops since 3.x) needs the trees' type trusted
        if "skops_trusted_types" in inspect.signature(mlflow.sklearn.save_model).parameters:
            options["skops_trusted_types"] = ["sklearn.tree._tree.Tree"]
        mlflow.sklearn.save_model(model, str(folder / "mlflow-model"),
                                  signature=infer_signature(sample, model.predict(sample)), **options)
        udfs = {"modelsafe": modelsafe.spark.udf(spark, folder / "forest.msafe"),
                "mlflow": mlflow.pyfunc.spark_udf(spark, str(folder / "mlflow-model"), result_type="long",
                                                  env_manager="local")}
        sums: dict[str, int] = {}

        def job(name: str) -> Callable[[], dict[str, float]]:
            def run() -> dict[str, float]:
                start = time.perf_counter()
                sums[name] = df.select(udfs[name](*FEATURES).alias("p")).agg(F.sum("p")).collect()[0][0]
                return {"wall": time.perf_counter() - start}
            return run

        jobs = {name: job(name) for name in udfs}
        for run in jobs.values():  # warm-up: the Python workers start and load each model once
            run()
        _check_equal("spark (sum of the predictions)", np.array([sums["modelsafe"]]), np.array([sums["mlflow"]]))
        found = _rounds(jobs, ROUNDS)
    finally:
        spark.stop()
    ours, peer = found["modelsafe"]["wall"], found["mlflow"]["wall"]
    return lines + [f"| spark: mlflow.pyfunc.spark_udf | {_median(peer):.2f} | | 1.00 | | |",
                    f"| spark: modelsafe.spark.udf | {_median(ours):.2f} | | {_median(ours) / _median(peer):.2f} x "
                    f"({_spread(ours, peer)}) | (none set) | |", f"| (spark: {_load()} at the end) | | | | | |"]


def _check_equal(where: str, ours: Any, peer: Any) -> None:
    if not np.array_equal(np.asarray(ours), np.asarray(peer)):
        raise SystemExit(f"{where}: modelsafe and the peer predict differently; the timings would compare "
                         "different work.")


def main() -> None:
    warnings.simplefilter("ignore")
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    model = _model(folder)
    frame = _frame(ROWS)
    source, parts = folder / "rows.parquet", folder / "parts"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), source, row_group_size=100_000)
    parts.mkdir()
    for i, part in enumerate(np.array_split(np.arange(ROWS), PARTITIONS)):
        pq.write_table(pa.Table.from_pandas(frame.iloc[part], preserve_index=False), parts / f"part-{i:02d}.parquet")
    print(f"{ROWS:,} rows, RF(100) pipeline, 20 features, medians of {ROUNDS} interleaved rounds; {_load()}\n")
    print("| what | seconds (median) | CPU s (workers: busiest, sum) | ratio (range over rounds) | target | |")
    print("|---|---|---|---|---|---|", flush=True)
    sections = {"files": lambda: _files(folder, source), "peaks": lambda: _peaks(folder, frame, source),
                "dask": lambda: _dask(folder, model, parts), "spark": lambda: _spark(folder, model, parts)}
    unknown = sorted(set(SECTIONS) - set(sections))
    if unknown:
        raise SystemExit(f"SECTIONS names {unknown}: the sections are {', '.join(sections)}.")
    for name, section in sections.items():
        if name in SECTIONS:
            print("\n".join(section()), flush=True)


if __name__ == "__main__":
    main()
