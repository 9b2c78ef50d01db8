"""``modelsafe.dask.predict``: score a Dask DataFrame, loading the artifact once per worker process.

Each partition is a pandas frame scored through the input guard, exactly like
``Bundle.predict``. The tasks carry an :class:`~modelsafe.batch.cache.ArtifactRef` (the
artifact's path or URL and its manifest digest), never the model: every worker process
loads and verifies the artifact on its first partition and reuses it for the others
(:mod:`modelsafe.batch.cache`). The result's ``meta`` comes from the outputs recorded at
save, so no partition is computed to infer it. Works on the threaded scheduler and on a
``distributed`` cluster (``LocalCluster(processes=True)`` or remote workers, which need
the artifact at a path they can read: a shared file system or a remote store).
"""

from __future__ import annotations

from typing import Any

from modelsafe.batch.cache import ArtifactRef
from modelsafe.batch.extras import require
from modelsafe.batch.outputs import PER_CLASS, OutputSpec, class_labels, recorded_width
from modelsafe.batch.scoring import ChunkScorer, chunk_error

__all__ = ["predict"]



def predict(artifact: Any, ddf: Any, *, method: str = "predict", meta: Any = None, **load_kwargs: Any) -> Any:
    """Score every partition of ``ddf`` with the artifact; a lazy Dask DataFrame (or Series) of predictions.

    Parameters
    ----------
    artifact
        Path or URL of the artifact, readable by every worker (a shared file system or a remote
        store); a relative local path is made absolute on the client.
    ddf
        A Dask DataFrame with the columns the model was saved with (matched by name).
    method
        ``"predict"`` (a Series named ``prediction``), ``"predict_proba"`` or ``"decision_function"``
        (one column per class, named by the class labels), or ``"transform"``.
    meta
        The output's ``meta``, for an artifact saved without a sample (else taken from the
        recorded outputs).
    **load_kwargs
        Passed to :func:`modelsafe.load` on each worker (``env=``, ``trust_code=``, ``storage_options=``,
        ``signature=``, ``trusted_keys=``...).

    For per-class columns the client loads the artifact once too, to read the class labels.

    Examples
    --------
    >>> import dask.dataframe as dd, pandas as pd
    >>> import modelsafe as ms, modelsafe.dask
    >>> rows = pd.DataFrame(ms.load("/tmp/doc-model.msafe").sample_inputs(), columns=["a", "b", "c"])
    >>> scores = modelsafe.dask.predict("/tmp/doc-model.msafe", dd.from_pandas(rows, npartitions=2))
    >>> len(scores.compute(scheduler="threads"))
    5
    """
    require("dask", ("dask", "pyarrow", "pandas"))
    ref = ArtifactRef.prepare(artifact, "modelsafe.dask.predict", load_kwargs)
    if meta is None:
        labels = None
        if method in PER_CLASS and recorded_width(ref.manifest, method) > 1:
            labels = class_labels(ref.bundle().model)
        meta = OutputSpec.recorded(ref.manifest, method, labels).empty(index=ddf._meta.index)
    return ddf.map_partitions(_score_partition, ref, method, meta=meta, align_dataframes=False)


def _score_partition(frame: Any, ref: ArtifactRef, method: str, partition_info: Any = None) -> Any:
    """One partition through the worker's bundle; a failure said of this partition."""
    scorer = ChunkScorer(ref.bundle(), method)
    if len(frame) == 0:
        return scorer.empty().set_axis(frame.index)
    number = (partition_info or {}).get("number")
    try:
        return scorer.score(frame)
    except Exception as exc:
        where = f"Partition {number} ({len(frame):,} rows)" if number is not None else f"A partition ({len(frame):,} rows)"
        raise chunk_error(exc, where, {"partition": number}) from exc
