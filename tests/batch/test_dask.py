"""modelsafe.dask.predict on a real LocalCluster (2 worker processes) and the threaded scheduler."""

from __future__ import annotations

import logging
import os
import shutil
import signal

import dask.dataframe as dd
import numpy as np
import pytest

import modelsafe as ms
import modelsafe.dask
from modelsafe.batch import cache


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None,
                           silence_logs=logging.ERROR)
    with Client(cluster) as c:
        yield c
    cluster.close()


@pytest.fixture
def fresh_workers(client):
    client.run(cache.clear)
    return client


def _loads(client):
    return {worker: info["loads"] for worker, info in client.run(cache.cache_info).items()}


def test_meta_comes_from_the_recorded_outputs_without_computing_a_partition(classifier, rows, features, fresh_workers):
    artifact, _ = classifier
    scores = modelsafe.dask.predict(artifact, dd.from_pandas(rows(1_000)[features], npartitions=4))
    assert scores.name == "prediction" and str(scores.dtype) == str(scores._meta.dtype)
    assert set(_loads(fresh_workers).values()) == {0}  # nothing ran anywhere yet


def test_results_equal_local_prediction_with_one_load_per_worker(classifier, rows, features, fresh_workers):
    artifact, model = classifier
    frame = rows(40_000)[features]
    ddf = dd.from_pandas(frame, npartitions=16)
    scores = modelsafe.dask.predict(artifact, ddf).compute()
    np.testing.assert_array_equal(scores.to_numpy(), model.predict(frame))
    assert (scores.index == frame.index).all()
    proba = modelsafe.dask.predict(artifact, ddf, method="predict_proba").compute()
    assert list(proba.columns) == list(model.classes_)
    np.testing.assert_allclose(proba.to_numpy(), model.predict_proba(frame))
    assert list(_loads(fresh_workers).values()) == [1, 1]  # 32 partitions, two workers, one load each


def test_the_threaded_scheduler_loads_once_in_this_process(classifier, rows, features):
    artifact, model = classifier
    cache.clear()
    frame = rows(8_000)[features]
    scores = modelsafe.dask.predict(artifact, dd.from_pandas(frame, npartitions=8)).compute(scheduler="threads")
    np.testing.assert_array_equal(scores.to_numpy(), model.predict(frame))
    assert cache.cache_info()["loads"] == 1 and cache.cache_info()["hits"] == 7


def test_a_worker_killed_mid_job_is_restarted_and_the_job_completes(classifier, rows, features, fresh_workers):
    from distributed import as_completed

    artifact, model = classifier
    frame = rows(60_000)[features]
    slow = dd.from_pandas(frame, npartitions=30).map_partitions(_slowly, meta=frame.iloc[:0])
    futures = fresh_workers.compute(modelsafe.dask.predict(artifact, slow).to_delayed())
    done = as_completed(futures)
    next(done)  # one partition scored: the job is under way
    victim = next(iter(fresh_workers.run(os.getpid).items()))
    os.kill(victim[1], signal.SIGKILL)
    results = fresh_workers.gather(futures)
    np.testing.assert_array_equal(np.concatenate([r.to_numpy() for r in results]), model.predict(frame))
    pids = fresh_workers.run(os.getpid)
    assert victim[1] not in pids.values()  # the nanny started a new process
    assert set(_loads(fresh_workers).values()) <= {0, 1}  # never more than one load in any process


def _slowly(part):
    import time

    time.sleep(0.2)
    return part


def test_a_partition_missing_a_column_raises_the_guards_schema_error_on_the_client(classifier, rows, features,
                                                                                   client):
    artifact, _ = classifier
    frame = rows(3_000)[features]
    parts = [frame.iloc[:1_000], frame.iloc[1_000:2_000].drop(columns="f2"), frame.iloc[2_000:]]
    ddf = dd.from_delayed([_delayed(p) for p in parts], meta=frame.iloc[:0], verify_meta=False)
    with pytest.raises(ms.SchemaError) as info:
        modelsafe.dask.predict(artifact, ddf).compute()
    assert info.value.column == "f2" and info.value.partition == 1
    assert str(info.value).startswith("Partition 1 (1,000 rows): Input is missing column(s) ['f2']")


def _delayed(part):
    import dask

    return dask.delayed(lambda: part)()


def test_an_artifact_the_workers_cannot_read_says_so_and_suggests_a_shared_path(classifier, rows, features,
                                                                             client, tmp_path):
    artifact, _ = classifier
    copy = tmp_path / "client-only.msafe"
    shutil.copy(artifact, copy)
    scores = modelsafe.dask.predict(copy, dd.from_pandas(rows(100)[features], npartitions=2))
    copy.unlink()  # the path existed where the job was built, and does not where it runs
    with pytest.raises(ms.BatchError) as info:
        scores.compute()
    assert info.value.artifact == str(copy)
    assert "cannot read the artifact" in str(info.value) and "remote store (s3://" in str(info.value)


def test_load_keywords_are_checked_on_the_client(classifier, rows, features):
    artifact, _ = classifier
    with pytest.raises(ms.UnknownKeywordError) as info:
        modelsafe.dask.predict(artifact, dd.from_pandas(rows(10)[features], npartitions=1), trust_cod=True)
    assert info.value.suggestions == {"trust_cod": "trust_code"}


def test_the_signature_is_checked_on_the_client_and_by_every_worker(classifier, rows, features, fresh_workers,
                                                                    tmp_path):
    from modelsafe.signing import keygen

    artifact, model = classifier
    copy = tmp_path / "signed.msafe"
    copy.write_bytes(artifact.read_bytes())
    private, public, fingerprint = keygen(tmp_path / "keys")
    frame = dd.from_pandas(rows(400)[features], npartitions=4)
    with pytest.raises(ms.UnsignedArtifactError):  # before any task is submitted
        modelsafe.dask.predict(copy, frame, signature="require", trusted_keys=[str(public)])
    ms.sign(copy, key=private)
    scores = modelsafe.dask.predict(copy, frame, signature="require", trusted_keys=[str(public)])
    assert (scores.compute().to_numpy() == model.predict(rows(400)[features])).all()
    assert sum(_loads(fresh_workers).values()) >= 1
    _, other, _ = keygen(tmp_path / "other-keys")
    with pytest.raises(ms.UntrustedSignerError) as info:
        modelsafe.dask.predict(copy, frame, signature="require", trusted_keys=[str(other)])
    assert info.value.fingerprint == fingerprint
    # A signature replaced after the job was built is refused by the workers' own loads.
    scores = modelsafe.dask.predict(copy, frame, signature="require", trusted_keys=[str(public)])
    ms.sign(copy, key=keygen(tmp_path / "third-keys")[0])
    fresh_workers.run(cache.clear)
    with pytest.raises(ms.UntrustedSignerError):
        scores.compute()
