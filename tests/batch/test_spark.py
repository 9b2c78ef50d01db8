"""modelsafe.spark.udf on a real local SparkSession (Java 17): equal to local prediction, one load per Python worker."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import modelsafe as ms
import modelsafe.spark


def _java() -> None:
    """Debian's Java 17 when there is no java (as `make test` does)."""
    if shutil.which("java") is None:
        subprocess.run("apt-get update && apt-get install -y openjdk-17-jre-headless", shell=True, check=True,
                       capture_output=True, timeout=900)


@pytest.fixture(scope="module")
def spark():
    _java()
    os.environ["PYSPARK_PYTHON"] = sys.executable  # the Python workers run this interpreter, with modelsafe
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"  # loopback only: Spark otherwise binds the host's own address
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[2]").appName("modelsafe-tests")
               .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
               .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "4")
               .config("spark.sql.execution.arrow.maxRecordsPerBatch", "1000").getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def _with_worker_loads(predictions):
    """Each prediction with the pid of the Python worker that made it and that worker's loads so far.

    Applied to the model UDF's output (``report(score())``), so Spark chains both UDFs in one Python worker.
    """
    from modelsafe.batch.cache import cache_info

    for part in predictions:
        yield pd.DataFrame({"prediction": part, "pid": os.getpid(), "loads": cache_info()["loads"]})


def test_udf_equals_local_prediction_with_one_load_per_python_worker(spark, classifier, rows, features):
    from pyspark.sql.functions import PandasUDFType, pandas_udf

    artifact, model = classifier
    frame = rows(20_000)[features]
    df = spark.createDataFrame(frame.assign(key=np.arange(len(frame)))).repartition(8)
    score = modelsafe.spark.udf(spark, artifact)
    report = pandas_udf(_with_worker_loads, "prediction string, pid long, loads long", PandasUDFType.SCALAR_ITER)
    out = df.select("key", report(score()).alias("s")).select("key", "s.*").toPandas().sort_values("key")
    np.testing.assert_array_equal(out["prediction"].to_numpy(), model.predict(frame))
    per_worker = out.groupby("pid")["loads"].max()
    assert (per_worker == 1).all(), per_worker  # 8 partitions of 1,000-row batches; each worker loaded once
    assert out.groupby("pid").size().sum() == len(frame)


def test_predict_proba_is_a_struct_named_by_the_class_labels(spark, classifier, rows, features):
    artifact, model = classifier
    frame = rows(3_000, seed=2)[features]
    df = spark.createDataFrame(frame.assign(key=np.arange(len(frame))))
    score = modelsafe.spark.udf(spark, artifact, method="predict_proba")
    assert [f.name for f in score.result_type.fields] == list(model.classes_)
    out = df.select("key", score(*features).alias("p")).select("key", "p.*").toPandas().sort_values("key")
    np.testing.assert_allclose(out[list(model.classes_)].to_numpy(), model.predict_proba(frame))


def test_a_missing_column_surfaces_the_guards_message(spark, classifier, rows, features):
    from pyspark.errors import PythonException

    artifact, _ = classifier
    df = spark.createDataFrame(rows(100)[features])
    score = modelsafe.spark.udf(spark, artifact)
    with pytest.raises(PythonException, match=r"SchemaError: Rows 0-\d+ of a Spark partition .*missing column"):
        df.select(score("f0", "f1", "f3", "f4")).collect()


def test_a_signature_the_udf_requires_is_checked_before_the_job(spark, classifier, rows, features, tmp_path):
    from modelsafe.signing import keygen

    artifact, model = classifier
    copy = tmp_path / "signed.msafe"
    copy.write_bytes(artifact.read_bytes())
    private, public, _ = keygen(tmp_path / "keys")
    with pytest.raises(ms.UnsignedArtifactError):
        modelsafe.spark.udf(spark, copy, signature="require", trusted_keys=[str(public)])
    ms.sign(copy, key=private)
    score = modelsafe.spark.udf(spark, copy, signature="require", trusted_keys=[str(public)])
    frame = rows(200)[features]
    got = spark.createDataFrame(frame).select(score(*features).alias("p")).toPandas()["p"]
    assert got.tolist() == model.predict(frame).tolist()
