"""Batch and distributed scoring: files in chunks, Dask and Spark partitions with one load per worker.

* :func:`modelsafe.predict_file` (``modelsafe predict``): CSV, Parquet and JSON lines files,
  local or remote, streamed through pyarrow in chunks (extra ``modelsafe[batch]``).
* :func:`modelsafe.dask.predict` (extra ``modelsafe[dask]``) and :func:`modelsafe.spark.udf`
  (extra ``modelsafe[spark]``): each worker process loads and verifies the artifact once
  (:mod:`modelsafe.batch.cache`); the model is never pickled into a task.

Every chunk goes through the input guard, as ``Bundle.predict`` does. Importing this package
imports neither pyarrow nor pandas.
"""

from __future__ import annotations

from modelsafe.batch.files import predict_file
from modelsafe.batch.report import BatchReport

__all__ = ["BatchReport", "predict_file"]
