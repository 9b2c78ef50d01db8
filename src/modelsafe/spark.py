"""Scoring Spark DataFrames with an artifact, loaded once per Python worker (extra ``modelsafe[spark]``).

See :func:`modelsafe.batch.spark.udf`. Importing this module imports neither pyspark nor any
framework: that happens on the first call.
"""

from __future__ import annotations

from modelsafe.batch.spark import udf

__all__ = ["udf"]
