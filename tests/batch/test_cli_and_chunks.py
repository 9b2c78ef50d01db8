"""modelsafe predict on the command line, and chunking properties (any batch size: same rows, same order)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

import modelsafe as ms
from modelsafe.batch.readers import rebatch


def test_predict_command_writes_the_output_and_prints_the_report_as_json(classifier, rows, features, tmp_path, cli):
    artifact, model = classifier
    frame = rows(2_000)
    frame.to_csv(tmp_path / "rows.csv", index=False)
    proc = cli("predict", str(artifact), str(tmp_path / "rows.csv"), "-o", str(tmp_path / "p.parquet"),
               "--method", "predict_proba", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert (report["rows_in"], report["rows_out"], report["rejected"], report["ok"]) == (2_000, 2_000, 0, True)
    out = pd.read_parquet(tmp_path / "p.parquet")
    np.testing.assert_allclose(out[list(model.classes_)].to_numpy(), model.predict_proba(frame[features]))


def test_predict_command_exit_codes(classifier, logistic, rows, tmp_path, cli):
    artifact, _ = classifier
    proc = cli("predict", str(artifact), str(tmp_path / "none.csv"), "-o", str(tmp_path / "o.csv"))
    assert proc.returncode == 2 and "BatchError: No input at" in proc.stderr and "Traceback" not in proc.stderr
    lr, _ = logistic
    frame = pd.DataFrame({"x": [0.1, np.nan, 0.3], "y": [1.0, 2.0, 3.0], "count": [1, 2, 3]})
    frame.to_parquet(tmp_path / "rows.parquet")
    proc = cli("predict", str(lr), str(tmp_path / "rows.parquet"), "-o", str(tmp_path / "o.csv"), "--on-error", "skip")
    assert proc.returncode == 1 and "rejected 1" in proc.stdout  # rows rejected: a check failed
    assert pd.read_csv(tmp_path / "o.rejects.csv")["row"].tolist() == [1]


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(0, 40), min_size=0, max_size=12), size=st.integers(1, 50))
def test_rebatch_keeps_every_row_in_order_in_chunks_of_the_size(sizes, size):
    import pyarrow as pa

    start, batches = 0, []
    for n in sizes:
        batches.append(pa.record_batch({"i": pa.array(range(start, start + n), pa.int64())}))
        start += n
    out = list(rebatch(iter(batches), size))
    assert [v for b in out for v in b.column(0).to_pylist()] == list(range(start))
    assert all(b.num_rows == size for b in out[:-1]) and all(0 < b.num_rows <= size for b in out)


@settings(max_examples=8, deadline=None)
@given(batch_size=st.integers(1, 700), keep=st.booleans())
def test_any_batch_size_gives_the_same_predictions(classifier, rows, features, tmp_path_factory, batch_size, keep):
    artifact, model = classifier
    folder = tmp_path_factory.mktemp("sizes")
    frame = rows(1_500, seed=7)
    frame.to_parquet(folder / "rows.parquet")
    ms.predict_file(artifact, folder / "rows.parquet", folder / "o.parquet", batch_size=batch_size, keep_columns=keep)
    out = pd.read_parquet(folder / "o.parquet")
    np.testing.assert_array_equal(out["prediction"].to_numpy(), model.predict(frame[features]))
    assert list(out.columns) == ([*frame.columns, "prediction"] if keep else ["prediction"])
