"""Scoring Dask DataFrames with an artifact, loaded once per worker (extra ``modelsafe[dask]``).

See :func:`modelsafe.batch.dask.predict`. Importing this module imports no framework and not
dask either: that happens on the first call.
"""

from __future__ import annotations

from modelsafe.batch.dask import predict

__all__ = ["predict"]
