"""ms.predict_file on real files: equal row for row to in-process predict, in every format, in order."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import modelsafe as ms
from modelsafe.checks.ranges import InputWarning


@pytest.fixture(scope="module")
def million(tmp_path_factory, rows, parquet):
    """A 1 M-row Parquet file (20 row groups) and its frame."""
    frame = rows(1_000_000)
    return parquet(frame, tmp_path_factory.mktemp("million") / "rows.parquet"), frame


def test_a_million_rows_of_parquet_equal_in_process_predict_row_for_row(classifier, million, tmp_path, features):
    artifact, model = classifier
    source, frame = million
    expected = ms.load(artifact).predict(frame[features])
    with pytest.warns(InputWarning):
        report = ms.predict_file(artifact, source, tmp_path / "scores.parquet", batch_size=100_000)
    out = pd.read_parquet(tmp_path / "scores.parquet")
    assert list(out.columns) == ["prediction"]
    np.testing.assert_array_equal(out["prediction"].to_numpy(), expected)
    np.testing.assert_array_equal(expected, model.predict(frame[features]))
    assert (report.rows_in, report.rows_out, report.rejected, report.ok) == (1_000_000, 1_000_000, 0, True)
    assert report.seconds > 0 and report.throughput == pytest.approx(report.rows_in / report.seconds)
    assert "Input has column(s) ['id', 'tag'] the model was not saved with; they are ignored." in report.warnings
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.parquet"]  # no temporary file left


def test_csv_input_and_output_equal_in_process_predict(classifier, tmp_path, rows, features):
    artifact, model = classifier
    frame = rows(300_000, seed=5)
    frame.to_csv(tmp_path / "rows.csv", index=False)
    report = ms.predict_file(artifact, tmp_path / "rows.csv", tmp_path / "scores.csv", keep_columns=True)
    out = pd.read_csv(tmp_path / "scores.csv")
    assert list(out.columns) == [*frame.columns, "prediction"]
    np.testing.assert_array_equal(out["prediction"].to_numpy(), model.predict(frame[features]))
    np.testing.assert_array_equal(out["id"].to_numpy(), frame["id"].to_numpy())  # row order kept
    assert report.rows_out == 300_000


def test_parquet_output_keeps_the_input_dtypes_and_proba_columns_are_the_class_labels(classifier, tmp_path, rows, parquet, features):
    import pyarrow.parquet as pq

    artifact, model = classifier
    frame = rows(5_000)
    source = parquet(frame, tmp_path / "rows.parquet", row_group=700)
    ms.predict_file(artifact, source, tmp_path / "proba.parquet", method="predict_proba", keep_columns=True,
                    batch_size=1_000)
    schema = pq.read_schema(tmp_path / "proba.parquet")
    assert schema.names == [*frame.columns, "high", "low", "mid"] == [*frame.columns, *model.classes_]
    assert str(schema.field("id").type) == "int32" and str(schema.field("tag").type) in ("string", "large_string")
    out = pd.read_parquet(tmp_path / "proba.parquet")
    np.testing.assert_allclose(out[list(model.classes_)].to_numpy(), model.predict_proba(frame[features]))


def test_json_lines_and_a_folder_or_glob_of_parquet_keep_row_order(classifier, tmp_path, rows, parquet, features):
    artifact, model = classifier
    frame = rows(9_000, seed=9)
    folder = tmp_path / "parts"
    folder.mkdir()
    for i, start in enumerate(range(0, 9_000, 3_000)):  # part-0..2, in name order
        parquet(frame.iloc[start:start + 3_000], folder / f"part-{i}.parquet", row_group=1_000)
    expected = model.predict(frame[features])
    for source in (folder, str(folder / "part-*.parquet")):
        ms.predict_file(artifact, source, tmp_path / "scores.jsonl", keep_columns=True, batch_size=2_500)
        out = pd.read_json(tmp_path / "scores.jsonl", lines=True)
        np.testing.assert_array_equal(out["id"].to_numpy(), np.arange(9_000))
        np.testing.assert_array_equal(out["prediction"].to_numpy(), expected)
    frame.to_json(tmp_path / "rows.ndjson", orient="records", lines=True)
    ms.predict_file(artifact, tmp_path / "rows.ndjson", tmp_path / "from-json.parquet")
    np.testing.assert_array_equal(pd.read_parquet(tmp_path / "from-json.parquet")["prediction"], expected)


def test_remote_urls_through_fsspec(classifier, tmp_path, rows, features):
    import fsspec

    artifact, model = classifier
    frame = rows(4_000)
    fs = fsspec.filesystem("memory")
    with fs.open("/batch-test/rows.parquet", "wb") as f:
        frame.to_parquet(f)
    report = ms.predict_file(artifact, "memory://batch-test/rows.parquet", "memory://batch-test/out/scores.csv")
    with fs.open("/batch-test/out/scores.csv", "rb") as f:
        out = pd.read_csv(f)
    np.testing.assert_array_equal(out["prediction"].to_numpy(), model.predict(frame[features]))
    assert report.destination == "memory://batch-test/out/scores.csv"
    assert fs.ls("/batch-test/out", detail=False) == ["/batch-test/out/scores.csv"]  # nothing staged is left


def test_a_failing_chunk_stops_the_run_with_its_row_numbers_and_leaves_no_output(classifier, tmp_path, rows):
    artifact, _ = classifier
    good = rows(3_000)
    (tmp_path / "old.csv").write_text("an older output, kept as it was\n")
    good.drop(columns="f3").to_parquet(tmp_path / "missing.parquet")
    with pytest.raises(ms.SchemaError) as info:
        ms.predict_file(artifact, tmp_path / "missing.parquet", tmp_path / "old.csv", on_error="skip")
    assert info.value.column == "f3" and info.value.rows == (0, 2_999)
    assert str(info.value).startswith("Rows 0-2,999 (0-based) of ")
    assert "Input is missing column(s) ['f3']" in str(info.value)  # the guard's own message
    assert (tmp_path / "old.csv").read_text() == "an older output, kept as it was\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["missing.parquet", "old.csv"]


def test_on_error_skip_writes_the_failing_rows_with_a_reason_and_counts_them(logistic, tmp_path):
    artifact, model = logistic
    rng = np.random.default_rng(4)
    frame = pd.DataFrame({"x": rng.normal(size=10_000), "y": rng.normal(size=10_000),
                          "count": pd.array(rng.integers(0, 10, 10_000), dtype="Int64")})
    frame.loc[[17, 4_096, 9_999], "x"] = np.nan  # the model refuses NaN
    frame.loc[[5_000, 5_001], "count"] = pd.NA  # the guard refuses missing values in an integer column
    frame.to_parquet(tmp_path / "rows.parquet")
    with pytest.raises(ms.BatchError) as info:
        ms.predict_file(artifact, tmp_path / "rows.parquet", tmp_path / "scores.parquet", batch_size=3_000)
    assert info.value.rows == (0, 2_999) and "ValueError" in str(info.value)
    assert not (tmp_path / "scores.parquet").exists()

    report = ms.predict_file(artifact, tmp_path / "rows.parquet", tmp_path / "scores.parquet", batch_size=3_000,
                             on_error="skip", keep_columns=True)
    bad = [17, 4_096, 5_000, 5_001, 9_999]
    assert (report.rows_in, report.rows_out, report.rejected, report.ok) == (10_000, 9_995, 5, False)
    assert report.rejects == str(tmp_path / "scores.rejects.parquet")
    rejects = pd.read_parquet(tmp_path / "scores.rejects.parquet")
    assert rejects["row"].tolist() == bad and list(rejects.columns) == ["x", "y", "count", "row", "reason"]
    assert "NaN" in rejects["reason"][0] and "missing value" in rejects["reason"][2]
    out = pd.read_parquet(tmp_path / "scores.parquet")
    kept = frame.drop(index=bad)
    np.testing.assert_array_equal(out["prediction"].to_numpy(), model.predict(kept.astype({"count": "int64"})))
    np.testing.assert_allclose(out["x"].to_numpy(), kept["x"].to_numpy())
    with pytest.raises(ms.BatchError):
        report.raise_if_failed()

    frame.dropna().to_parquet(tmp_path / "clean.parquet")  # a clean run removes the stale rejects file
    assert ms.predict_file(artifact, tmp_path / "clean.parquet", tmp_path / "scores.parquet", on_error="skip").ok
    assert not (tmp_path / "scores.rejects.parquet").exists()


def test_bad_arguments_are_refused_before_anything_is_read(classifier, tmp_path, rows):
    artifact, _ = classifier
    rows(10).to_parquet(tmp_path / "rows.parquet")
    with pytest.raises(ms.UnknownKeywordError) as info:
        ms.predict_file(artifact, tmp_path / "rows.parquet", tmp_path / "o.parquet", batchsize=10)
    assert info.value.suggestions == {"batchsize": "batch_size"}
    with pytest.raises(ms.BatchError, match=r"suffix '\.xlsx'"):
        ms.predict_file(artifact, tmp_path / "rows.parquet", tmp_path / "o.xlsx")
    with pytest.raises(ms.BatchError, match="No input at"):
        ms.predict_file(artifact, tmp_path / "nothing.csv", tmp_path / "o.csv")
    with pytest.raises(ms.BatchError, match="is the input"):
        ms.predict_file(artifact, tmp_path / "rows.parquet", tmp_path / "rows.parquet")
    with pytest.raises(ValueError, match="on_error"):
        ms.predict_file(artifact, tmp_path / "rows.parquet", tmp_path / "o.csv", on_error="ignore")
    with pytest.raises(ms.MissingMethodError):
        ms.predict_file(artifact, tmp_path / "rows.parquet", tmp_path / "o.csv", method="transform")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.parquet"]
