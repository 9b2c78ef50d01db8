"""modelsafe's own endpoints: /v1/models, OpenAPI (/openapi.json, /docs), /metrics, and the access log."""

from __future__ import annotations

import json

import pandas as pd
import pytest


def test_v1_lists_the_models(client):
    body = client.get("/v1/models").json()
    assert body["ready"] is True
    names = {m["name"]: m for m in body["models"]}
    assert set(names) == {"pipe", "forest", "linear", "texts", "rf"}
    assert names["pipe"]["flavor"] == "sklearn" and names["pipe"]["type"] == "sklearn.pipeline.Pipeline"
    assert "predict_proba" in names["pipe"]["methods"] and "predict_proba" not in names["forest"]["methods"]


def test_v1_model_details(client, bundles):
    details = client.get("/v1/models/pipe").json()
    assert details["verification"]["ok"] is True and details["verification"]["rows"] == 40
    assert details["environment"]["ok"] is True
    assert {d["package"] for d in details["environment"]["differences"]} >= {"python", "scikit-learn", "numpy"}
    assert [c["name"] for c in details["schema"]["columns"]] == ["income", "age", "score"]
    assert details["metadata"] == dict(bundles["pipe"].manifest.metadata)
    assert details["outputs"]["predict_proba"] == {"dtype": "float64", "shape": [40, 2]}
    assert details["artifact"] == "pipe.msafe"


def test_openapi_request_bodies_come_from_the_recorded_schema(client):
    import jsonschema

    document = client.get("/openapi.json").json()
    assert document["openapi"] == "3.1.0"
    body = document["paths"]["/invocations"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    pipe = next(s for s in body["oneOf"] if s["title"] == "pipe request")
    good = {"dataframe_records": [{"income": 50.0, "age": 30, "score": 0.5}]}
    jsonschema.validate(good, pipe)
    jsonschema.validate({"dataframe_split": {"columns": ["income", "age", "score"], "data": [[50.0, 30, 0.5]]},
                         "params": {"method": "predict_proba"}}, pipe)
    for bad in ({"dataframe_records": [{"income": 50.0, "score": 0.5}]},  # a missing column
                {"dataframe_records": [{"income": 50.0, "age": "old", "score": 0.5}]},  # text in an int column
                {"dataframe_split": {"columns": ["income"], "data": [[1.0, 2, 3, 4]]}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, pipe)
    forest = next(s for s in body["oneOf"] if s["title"] == "forest request")
    jsonschema.validate({"instances": [[1.0, 2.0, 3.0, 4.0]]}, forest)
    infer = document["paths"]["/v2/models/pipe/infer"]["post"]["requestBody"]["content"]["application/json"]
    names = [t["properties"]["name"]["const"] for t in infer["schema"]["properties"]["inputs"]["items"]["oneOf"]]
    assert names == ["income", "age", "score"]


def test_the_card_examples_are_valid_requests(client, server, bundles):
    """The JSON the card's form starts with validates against the OpenAPI schema and predicts."""
    import jsonschema

    from modelsafe.serving.card import example_payloads
    from modelsafe.serving.models import ServedModel

    document = client.get("/openapi.json").json()
    schemas = document["paths"]["/invocations"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    for name in ("pipe", "forest", "texts"):
        model = ServedModel(name, str(bundles[name].path), bundles[name], bundles[name].verify())
        as_json, _ = example_payloads(model)
        payload = json.loads(as_json)
        jsonschema.validate(payload, next(s for s in schemas["oneOf"] if s["title"] == f"{name} request"))
        response = client.post(f"/invocations?model={name}", json=payload)
        assert response.status_code == 200, response.text


def test_docs_page_shows_the_schemas_escaped(client):
    page = client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "POST /v2/models/pipe/infer" in page.text and "&quot;income&quot;" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]


def _samples(text, name):
    from prometheus_client.parser import text_string_to_metric_families

    return [s for family in text_string_to_metric_families(text) for s in family.samples if s.name == name]


def test_metrics_count_requests_latency_batches_and_errors_per_model(client):
    rows = pd.DataFrame({"f0": [0.1], "f1": [0.2], "f2": [0.3], "f3": [0.4]})
    before = client.get("/metrics").text
    for _ in range(3):
        assert client.post("/invocations?model=linear",
                           json={"dataframe_records": rows.to_dict(orient="records")}).status_code == 200
    assert client.post("/invocations?model=linear", json={"dataframe_records": [{"f0": 1}]}).status_code == 422
    text = client.get("/metrics").text

    def value(name, **labels):
        found = [s.value for s in _samples(text, name) if all(s.labels.get(k) == v for k, v in labels.items())]
        old = [s.value for s in _samples(before, name) if all(s.labels.get(k) == v for k, v in labels.items())]
        return sum(found) - sum(old)

    assert value("modelsafe_requests_total", model="linear", protocol="mlflow", status="200") == 3
    assert value("modelsafe_requests_total", model="linear", status="422") == 1
    assert value("modelsafe_request_duration_seconds_count", model="linear", protocol="mlflow") == 4
    assert value("modelsafe_errors_total", model="linear", type="SchemaError") == 1
    assert value("modelsafe_batch_rows_count", model="linear", method="predict") >= 1


def test_the_access_log_is_one_json_object_per_request(client, server):
    client.post("/invocations?model=forest", json={"instances": [[1, 2, 3, 4], [4, 3, 2, 1]]},
                headers={"X-Request-Id": "trace-42"})
    client.post("/invocations?model=forest", json={"instances": [[1, 2]]})
    entries = [json.loads(line) for line in server.stdout().splitlines() if line.startswith("{")]
    ok = next(e for e in entries if e.get("request_id") == "trace-42")
    assert ok["status"] == 200 and ok["model"] == "forest" and ok["rows"] == 2 and ok["path"] == "/invocations"
    assert ok["method"] == "POST" and ok["duration_ms"] > 0 and ok["client"].startswith("127.0.0.1:")
    failed = [e for e in entries if e.get("error") == "SchemaError" and e["model"] == "forest"]
    assert failed and failed[-1]["status"] == 422
