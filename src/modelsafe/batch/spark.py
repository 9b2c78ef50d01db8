"""``modelsafe.spark.udf``: a pandas UDF (Arrow batches) that loads the artifact once per Python worker.

The UDF is an iterator-of-batches pandas UDF: Spark hands each Python worker a stream of
Arrow batches, and the worker loads and verifies the artifact before its first batch
(:mod:`modelsafe.batch.cache`; Spark reuses Python workers, so a worker loads it once for
all the tasks it runs). The closure Spark pickles carries the artifact's path and manifest
digest, never the model. Each batch goes through the input guard, as ``Bundle.predict``
does. The Spark return type is inferred from the outputs recorded at save: the atomic type
of a 1-D output, or a struct with one field per class (named by the class labels) for
``predict_proba``.

Call the UDF with the input columns (``udf("a", "b")``, or Column objects), or with none to
use the columns the model was saved with; they reach the model as a DataFrame with those names.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from modelsafe.batch.cache import ArtifactRef
from modelsafe.batch.extras import require
from modelsafe.batch.outputs import PER_CLASS, OutputSpec, class_labels, recorded_width
from modelsafe.batch.scoring import ChunkScorer, chunk_error
from modelsafe.errors import BatchError

__all__ = ["ModelUDF", "spark_type", "udf"]

#: numpy dtype kind and size -> Spark SQL type name.
_TYPES = {"f8": "double", "f4": "float", "f2": "float", "i8": "bigint", "i4": "int", "i2": "smallint",
          "i1": "tinyint", "u4": "bigint", "u2": "int", "u1": "smallint", "b1": "boolean"}


def udf(spark: Any, artifact: Any, *, method: str = "predict", result_type: Any = None, **load_kwargs: Any) -> ModelUDF:
    """A Spark pandas UDF scoring rows with the artifact (loaded once per Python worker).

    Parameters
    ----------
    spark
        The SparkSession the UDF runs in.
    artifact
        Path or URL of the artifact, readable by every executor (a shared file system or a
        remote store); a relative local path is made absolute on the driver.
    method
        ``"predict"``, ``"predict_proba"`` (a struct, one field per class), ``"decision_function"``
        or ``"transform"``.
    result_type
        The Spark return type (a DataType or a DDL string); inferred from the recorded outputs when None.
    **load_kwargs
        Passed to :func:`modelsafe.load` in each Python worker.

    Examples
    --------
    >>> import modelsafe.spark
    >>> score = modelsafe.spark.udf(spark, "/tmp/doc-model.msafe")      # doctest: +SKIP
    >>> df.withColumn("prediction", score("a", "b", "c"))                 # doctest: +SKIP
    """
    require("spark", ("pyspark", "pyarrow", "pandas"))
    ref = ArtifactRef.prepare(artifact, "modelsafe.spark.udf", load_kwargs)
    labels = None
    if method in PER_CLASS and recorded_width(ref.manifest, method) > 1:
        labels = class_labels(ref.bundle().model)  # the driver loads it too, for the class labels
    if result_type is None:
        result_type = spark_type(OutputSpec.recorded(ref.manifest, method, labels))
    _warn_local_path(spark, ref.location)
    return ModelUDF(ref, method, result_type, _saved_columns(ref.manifest))


class ModelUDF:
    """The pandas UDF, called with the input columns (or none: the saved columns)."""

    def __init__(self, ref: ArtifactRef, method: str, result_type: Any, columns: list[str]) -> None:
        from pyspark.sql.functions import pandas_udf
        from pyspark.sql.types import StructType

        self.ref, self.method, self.columns = ref, method, columns
        self.result_type = result_type
        struct = isinstance(result_type, StructType) or (isinstance(result_type, str)
                                                         and result_type.strip().lower().startswith("struct"))

        def score(batches: Iterator[Any]) -> Iterator[Any]:
            return _score_batches(ref, method, struct, batches)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PandasUDFType's deprecation: the explicit type is what is meant
            from pyspark.sql.functions import PandasUDFType

            self.function = pandas_udf(score, result_type, PandasUDFType.SCALAR_ITER)

    def __call__(self, *columns: Any) -> Any:
        from pyspark.sql import functions as F

        given = list(columns) or list(self.columns)
        if not given:
            raise BatchError("The artifact records no input column names, so the UDF cannot pick its columns: "
                             "call it with them (score('a', 'b')).", artifact=self.ref.location)
        return self.function(F.struct(*[F.col(c) if isinstance(c, str) else c for c in given]))


def _score_batches(ref: ArtifactRef, method: str, struct: bool, batches: Iterator[Any]) -> Iterator[Any]:
    scorer = ChunkScorer(ref.bundle(), method)
    first = 0
    for frame in batches:
        try:
            out = scorer.score(frame)
        except Exception as exc:
            where = f"Rows {first:,}-{first + len(frame) - 1:,} of a Spark partition (pid {os.getpid()})"
            raise chunk_error(exc, where, {"rows": (first, first + len(frame) - 1)}) from exc
        first += len(frame)
        if struct and out.ndim == 1:
            out = out.to_frame()
        yield out.reset_index(drop=True)


def spark_type(spec: OutputSpec) -> Any:
    """The Spark SQL type of ``spec``'s output: atomic for a Series, a struct of fields for columns."""
    from pyspark.sql.types import StructField, StructType, _parse_datatype_string

    dtype = np.dtype(spec.dtype)
    name = "string" if dtype.kind in "OUS" else _TYPES.get(f"{dtype.kind}{dtype.itemsize}")
    if name is None:
        raise BatchError(f"The recorded {spec.method} output has dtype {dtype}, which has no Spark SQL type here. "
                         "Pass result_type= (e.g. 'double').", dtype=str(dtype))
    atomic = _parse_datatype_string(name)
    if spec.series:
        return atomic
    return StructType([StructField(n, atomic, True) for n in spec.names])


def _saved_columns(manifest: Any) -> list[str]:
    schema = manifest.schema or {}
    if schema.get("kind") != "dataframe":
        return []
    return [c["name"] for c in schema.get("columns") or () if isinstance(c.get("name"), str)]


def _warn_local_path(spark: Any, location: str) -> None:
    from modelsafe.artifact.location import is_url

    master = str(spark.sparkContext.master)
    if not is_url(location) and not master.startswith("local"):
        warnings.warn(f"The artifact {location!r} is a local path and Spark runs on {master}: every executor must "
                      "read it at that path (a shared file system). Otherwise put it on a remote store "
                      "(s3://...) and pass that URL.", UserWarning, stacklevel=3)
