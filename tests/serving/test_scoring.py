"""MLflow's scoring protocol against a real server, with the payload shapes of MLflow's documentation."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest

ROWS = pd.DataFrame({"income": [41.5, 63.0, 55.2], "age": [25, 47, 63], "score": [-0.4, 1.2, 0.1]})


def _expected(bundles, name, x, method="predict"):
    return np.asarray(getattr(bundles[name], method)(x)).tolist()


# The request bodies of MLflow's "Deploy MLflow models" page, one per payload format.
MLFLOW_PAYLOADS = {
    "dataframe_split": {"dataframe_split": {"columns": list(ROWS.columns), "data": ROWS.to_numpy(object).tolist()}},
    "dataframe_split with index": {"dataframe_split": {"index": [10, 11, 12], "columns": list(ROWS.columns),
                                                       "data": ROWS.to_numpy(object).tolist()}},
    "dataframe_records": {"dataframe_records": ROWS.to_dict(orient="records")},
    "instances of records": {"instances": ROWS.to_dict(orient="records")},
    "inputs as columns": {"inputs": {c: ROWS[c].tolist() for c in ROWS.columns}},
    "columns in another order": {"dataframe_split": {"columns": ["score", "income", "age"],
                                                     "data": ROWS[["score", "income", "age"]].to_numpy(object).tolist()}},
}


@pytest.mark.parametrize("shape", sorted(MLFLOW_PAYLOADS))
def test_every_documented_payload_shape_predicts_as_the_model_does_in_process(client, bundles, shape):
    response = client.post("/invocations?model=pipe", json=MLFLOW_PAYLOADS[shape])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["predictions"] == _expected(bundles, "pipe", ROWS)
    assert "warnings" not in body


def test_params_choose_the_method(client, bundles):
    payload = {**MLFLOW_PAYLOADS["dataframe_split"], "params": {"method": "predict_proba"}}
    response = client.post("/invocations?model=pipe", json=payload)
    assert response.status_code == 200, response.text
    assert np.allclose(response.json()["predictions"], _expected(bundles, "pipe", ROWS, "predict_proba"), rtol=1e-12)


def test_csv_with_a_header_row(client, bundles):
    response = client.post("/invocations?model=pipe", content=ROWS.to_csv(index=False).encode(),
                           headers={"Content-Type": "text/csv"})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == _expected(bundles, "pipe", ROWS)


def test_gzip_compressed_body(client, bundles):
    body = gzip.compress(json.dumps(MLFLOW_PAYLOADS["dataframe_records"]).encode())
    response = client.post("/invocations?model=pipe", content=body,
                           headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == _expected(bundles, "pipe", ROWS)


def test_the_model_comes_from_the_header_too(client, bundles):
    x = np.random.default_rng(1).normal(size=(3, 4))
    response = client.post("/invocations", json={"instances": x.tolist()}, headers={"X-Model": "forest"})
    assert response.status_code == 200, response.text
    assert np.allclose(response.json()["predictions"], _expected(bundles, "forest", x), rtol=0, atol=0)


@pytest.mark.parametrize("key", ["instances", "inputs"])
def test_an_array_model_takes_rows(client, bundles, key):
    x = np.random.default_rng(2).normal(size=(5, 4))
    response = client.post("/invocations?model=forest", json={key: x.tolist()})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == _expected(bundles, "forest", x)


@pytest.mark.parametrize("key", ["instances", "inputs"])
def test_a_text_model_takes_a_list_of_texts(client, bundles, key):
    texts = ["good staff", "awful food", "great service"]
    response = client.post("/invocations?model=texts", json={key: texts})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == _expected(bundles, "texts", texts)


def test_rows_without_names_are_taken_by_position_with_a_warning(client, bundles):
    response = client.post("/invocations?model=pipe", json={"instances": ROWS.to_numpy(object).tolist()})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["predictions"] == _expected(bundles, "pipe", ROWS)
    assert len(body["warnings"]) == 1 and "without column names" in body["warnings"][0]


def test_guard_warnings_come_back_with_the_predictions_and_are_logged(client, server, bundles):
    extra = ROWS.assign(region=["n", "s", "e"])
    response = client.post("/invocations?model=pipe", json={"dataframe_records": extra.to_dict(orient="records")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["predictions"] == _expected(bundles, "pipe", ROWS)
    assert any("'region'" in w and "ignored" in w for w in body["warnings"])

    scaled = ROWS.assign(income=ROWS["income"] * 1000)  # raw dollars given to a model trained on thousands
    response = client.post("/invocations?model=pipe", json={"dataframe_records": scaled.to_dict(orient="records")})
    assert response.status_code == 200, response.text
    warnings = response.json()["warnings"]
    assert any("income" in w and "the model saw" in w for w in warnings)
    assert "input warning" in server.stderr() and "the model saw" in server.stderr()


def test_json_has_no_nan_a_missing_float_is_null(client, bundles):
    response = client.post("/invocations?model=forest", json={"instances": [[0.1, None, 0.3, 0.4]]})
    # The forest handles a missing value (scikit-learn's trees route NaN), and its answer is plain JSON.
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == _expected(bundles, "forest", np.array([[0.1, np.nan, 0.3, 0.4]]))


def test_ping_health_and_version(client):
    import modelsafe as ms

    assert client.get("/ping").status_code == 200
    assert client.get("/health").status_code == 200
    version = client.get("/version")
    assert version.status_code == 200 and version.text == ms.__version__


def test_with_one_model_invocations_needs_no_name(start_server, bundles):
    import httpx

    one = start_server(["solo=linear.msafe"]).wait_ready()
    row = {"f0": 0.1, "f1": 0.2, "f2": 0.3, "f3": 0.4}
    response = httpx.post(one.url + "/invocations", json={"dataframe_records": [row]}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == _expected(bundles, "linear", pd.DataFrame([row]))
    assert httpx.get(one.url + "/v1/models", timeout=30).json()["models"][0]["name"] == "solo"
    assert one.terminate() == 0
