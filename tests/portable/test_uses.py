"""The portable member where predictions are made: exported for other runtimes, scored over files, served."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import modelsafe as ms


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, frame):
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    df, y = frame
    model = make_pipeline(make_column_transformer((OneHotEncoder(handle_unknown="ignore"), ["city"]),
                                                  (StandardScaler(), ["income", "age"])), LogisticRegression())
    model.fit(df, y)
    folder = tmp_path_factory.mktemp("portable-uses")
    ms.save(model, folder / "churn.msafe", sample=df.iloc[:40], portable="onnx")
    return folder / "churn.msafe", model, df


def test_export_writes_a_graph_other_runtimes_read(pipeline, tmp_path):
    import onnxruntime as ort

    path, model, df = pipeline
    written = ms.export(path, tmp_path / "churn.onnx", to="onnx")
    assert written == tmp_path / "churn.onnx"
    session = ort.InferenceSession(str(written), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["income", "age", "city"]
    rows = df.iloc[:50]
    feeds = {"income": rows[["income"]].to_numpy(np.float32), "age": rows[["age"]].to_numpy(np.int64),
             "city": rows[["city"]].to_numpy(object)}
    labels, probabilities = session.run(["label", "probabilities"], feeds)
    assert np.array_equal(labels, model.predict(rows))
    assert np.allclose(probabilities, model.predict_proba(rows), atol=1e-5)
    assert ms.scan(written).ok


def test_export_on_the_command_line_prints_inputs_and_tolerance(pipeline, tmp_path, cli):
    path, _, _ = pipeline
    proc = cli("export", str(path), "--to", "onnx", str(tmp_path / "out.onnx"))
    assert proc.returncode == 0, proc.stderr
    assert "input  'income': float32 ['batch', 1]" in proc.stdout and "input  'city': str ['batch', 1]" in proc.stdout
    assert "output 'label' (predict): exact" in proc.stdout
    assert "output 'probabilities' (predict_proba): rtol=0.000122" in proc.stdout
    assert "largest difference at save" in proc.stdout
    proc = cli("export", str(path), "--to", "onnx", str(tmp_path / "again.onnx"), "--json")
    record = json.loads(proc.stdout)
    record = record[0] if isinstance(record, list) else record
    assert [i["name"] for i in record["inputs"]] == ["income", "age", "city"]
    assert record["outputs"]["predict_proba"]["tolerance"]["rtol"] == pytest.approx(1.2207e-4, rel=1e-3)


def test_export_of_an_artifact_without_a_member_is_refused(tmp_path, numbers, cli):
    from sklearn.linear_model import LogisticRegression

    X, y = numbers
    ms.save(LogisticRegression().fit(X, y), tmp_path / "plain.msafe", sample=X[:20])
    with pytest.raises(ms.NoPortableMemberError):
        ms.export(tmp_path / "plain.msafe", tmp_path / "plain.onnx", to="onnx")
    proc = cli("export", str(tmp_path / "plain.msafe"), "--to", "onnx", str(tmp_path / "plain.onnx"))
    assert proc.returncode != 0 and "NoPortableMemberError" in proc.stdout + proc.stderr
    assert not (tmp_path / "plain.onnx").exists()


def test_predict_file_takes_the_runtime(pipeline, tmp_path):
    import pandas as pd

    path, model, df = pipeline
    df.to_csv(tmp_path / "rows.csv", index=False)
    report = ms.predict_file(path, tmp_path / "rows.csv", tmp_path / "scores.csv", method="predict_proba",
                             runtime="onnx")
    assert report.rows_out == len(df) and report.ok
    scores = pd.read_csv(tmp_path / "scores.csv")
    assert list(scores.columns) == ["0", "1"]  # named by the class labels recorded with the member
    assert np.allclose(scores.to_numpy(), model.predict_proba(df), atol=1e-5)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_runs_the_member(pipeline):
    import httpx

    path, model, df = pipeline
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "modelsafe", "serve", str(path), "--runtime", "onnx",
                               "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ping", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, server.communicate()[1]
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.3)
        rows = df.iloc[:8]
        body = {"dataframe_split": {"columns": list(rows.columns), "data": rows.to_numpy().tolist()}}
        answer = httpx.post(f"http://127.0.0.1:{port}/invocations", json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"] == model.predict(rows).tolist()
        bad = httpx.post(f"http://127.0.0.1:{port}/invocations",
                         json={"dataframe_split": {"columns": ["income"], "data": [[1.0]]}}, timeout=30)
        assert bad.status_code == 422 and bad.json()["error"]["type"] == "SchemaError"  # a column is missing
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=60)


def test_inspect_and_verify_name_the_member(pipeline, cli):
    path, _, _ = pipeline
    assert "portable: ONNX graph by skl2onnx" in str(ms.inspect(path))
    assert "inputs income:float32, age:int64, city:str" in cli("inspect", str(path)).stdout
    report = ms.verify(path, runtime="onnx")
    assert report.ok and "rtol=0.00012207" in str(report)
