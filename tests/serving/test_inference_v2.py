"""The Open Inference Protocol v2, driven by the official Triton client with its defaults (binary
tensors) and with JSON tensors, and by hand-made requests for the binary extension's framing."""

from __future__ import annotations

import json
import struct

import numpy as np
import pandas as pd
import pytest

ROWS = pd.DataFrame({"income": [41.5, 63.0, 55.2, 48.0], "age": [25, 47, 63, 31], "score": [-0.4, 1.2, 0.1, 0.0]})


@pytest.fixture
def triton(server):
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
    yield client
    client.close()


def _column_inputs(frame, binary):
    import tritonclient.http as httpclient

    inputs = []
    for name in frame.columns:
        values = frame[name].to_numpy()
        tensor = httpclient.InferInput(name, list(values.shape), "FP64" if values.dtype.kind == "f" else "INT64")
        tensor.set_data_from_numpy(values, binary_data=binary)
        inputs.append(tensor)
    return inputs


def test_health_and_server_metadata(triton):
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready("pipe") and triton.is_model_ready("forest")
    meta = triton.get_server_metadata()
    assert meta["name"] == "modelsafe" and "binary_tensor_data" in meta["extensions"]


def test_model_metadata_comes_from_the_recorded_schema(triton):
    meta = triton.get_model_metadata("pipe")
    assert meta["inputs"] == [{"name": "income", "datatype": "FP64", "shape": [-1]},
                              {"name": "age", "datatype": "INT64", "shape": [-1]},
                              {"name": "score", "datatype": "FP64", "shape": [-1]}]
    assert {o["name"]: o["datatype"] for o in meta["outputs"]} == {"predict": "INT64", "predict_proba": "FP64"}
    assert meta["parameters"] == {"content_type": "pd"}
    forest = triton.get_model_metadata("forest")
    assert forest["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]
    assert triton.get_model_metadata("texts")["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]


@pytest.mark.parametrize("binary", [True, False], ids=["binary tensors (the default)", "JSON tensors"])
def test_a_dataframe_as_one_input_per_column(triton, bundles, binary):
    result = triton.infer("pipe", _column_inputs(ROWS, binary))
    assert result.as_numpy("predict").tolist() == bundles["pipe"].predict(ROWS).tolist()


@pytest.mark.parametrize("binary", [True, False], ids=["binary outputs", "JSON outputs"])
def test_requested_outputs_run_their_method(triton, bundles, binary):
    import tritonclient.http as httpclient

    outputs = [httpclient.InferRequestedOutput("predict_proba", binary_data=binary),
               httpclient.InferRequestedOutput("predict", binary_data=binary)]
    result = triton.infer("pipe", _column_inputs(ROWS, True), outputs=outputs)
    assert np.allclose(result.as_numpy("predict_proba"), bundles["pipe"].predict_proba(ROWS), rtol=1e-12, atol=0)
    assert result.as_numpy("predict").tolist() == bundles["pipe"].predict(ROWS).tolist()
    response = result.get_response()
    assert all(("parameters" in o) == binary for o in response["outputs"])


@pytest.mark.parametrize("datatype", ["FP64", "FP32"])
@pytest.mark.parametrize("binary", [True, False])
def test_an_array_model_takes_one_2d_tensor(triton, bundles, datatype, binary):
    import tritonclient.http as httpclient

    x = np.random.default_rng(3).normal(size=(6, 4)).astype(datatype.replace("FP", "float"))
    tensor = httpclient.InferInput("input-0", list(x.shape), datatype)
    tensor.set_data_from_numpy(x, binary_data=binary)
    result = triton.infer("forest", [tensor])
    assert result.as_numpy("predict").tolist() == bundles["forest"].predict(x.astype(np.float64)).tolist()


@pytest.mark.parametrize("binary", [True, False])
def test_texts_as_bytes_tensors(triton, bundles, binary):
    import tritonclient.http as httpclient

    texts = np.array([b"good staff", b"awful food", "great service".encode()], dtype=object)
    tensor = httpclient.InferInput("text", [3], "BYTES")
    tensor.set_data_from_numpy(texts, binary_data=binary)
    result = triton.infer("texts", [tensor])
    assert result.as_numpy("predict").tolist() == bundles["texts"].predict(
        ["good staff", "awful food", "great service"]).tolist()


def test_an_unknown_model_raises_in_the_client(triton):
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException, match="ModelNotFoundError"):
        triton.get_model_metadata("nope")
    assert not triton.is_model_ready("nope")


def test_a_schema_error_reaches_the_client(triton):
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException, match="missing column"):
        triton.infer("pipe", _column_inputs(ROWS[["income", "score"]], True))


def _v2_error(response, kind):
    """The protocol's error (a string, as tritonclient reads it) and modelsafe's structured one beside it."""
    body = response.json()
    assert body["error"].startswith(kind + ": ") and body["details"]["type"] == kind, body
    assert body["details"]["message"] in body["error"]
    return body["details"]


def _binary_request(header, blobs):
    raw = json.dumps(header).encode()
    return raw + b"".join(blobs), {"Inference-Header-Content-Length": str(len(raw)),
                                   "Content-Type": "application/octet-stream"}


def test_binary_framing_by_hand(client, bundles):
    x = np.random.default_rng(4).normal(size=(2, 4))
    header = {"id": "req-7", "inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP64",
                                         "parameters": {"binary_data_size": x.nbytes}}],
              "outputs": [{"name": "predict", "parameters": {"binary_data": True}}]}
    body, headers = _binary_request(header, [x.astype("<f8").tobytes()])
    response = client.post("/v2/models/forest/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    length = int(response.headers["Inference-Header-Content-Length"])
    meta = json.loads(response.content[:length])
    assert meta["id"] == "req-7" and meta["model_name"] == "forest"
    (out,) = meta["outputs"]
    values = np.frombuffer(response.content[length:length + out["parameters"]["binary_data_size"]], "<f8")
    assert values.tolist() == bundles["forest"].predict(x).tolist() and out["shape"] == [2]


def test_bytes_elements_are_length_prefixed(client, bundles):
    texts = [b"good food", b"bad service"]
    blob = b"".join(struct.pack("<I", len(t)) + t for t in texts)
    header = {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": len(blob)}}]}
    body, headers = _binary_request(header, [blob])
    response = client.post("/v2/models/texts/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == bundles["texts"].predict(["good food", "bad service"]).tolist()


@pytest.mark.parametrize("header, blobs, extra_headers", [
    ({"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [1.0, 2.0, 3.0]}]}, [], {}),
    ({"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP99", "data": [1, 2, 3, 4]}]}, [], {}),
    ({"inputs": [{"name": "input-0", "shape": [1, -4], "datatype": "FP64", "data": [1, 2, 3, 4]}]}, [], {}),
    ({"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "INT64", "data": [1.5, 2, 3, 4]}]}, [], {}),
    ({"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": ["a", "b", "c", "d"]}]}, [], {}),
    ({"inputs": []}, [], {}),
    ({"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64"}]}, [], {}),
    ({"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64",
                  "parameters": {"binary_data_size": 32}}]}, [b"\0" * 16], "binary"),
    ({"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64",
                  "parameters": {"binary_data_size": 32}}]}, [b"\0" * 40], "binary"),
    ({"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}],
      "outputs": [{"name": "nothing"}]}, [], {}),
    ({"inputs": [{"name": "a", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]},
                 {"name": "b", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}]}, [], {}),
], ids=["data does not fill the shape", "unknown datatype", "negative dimension", "fractions for INT64",
        "text for FP64", "no inputs", "no data", "binary data short", "binary data left over", "unknown output",
        "two inputs for one array"])
def test_bad_inference_requests_are_400(client, header, blobs, extra_headers):
    if extra_headers == "binary":
        body, headers = _binary_request(header, blobs)
    else:
        body, headers = json.dumps(header).encode(), {"Content-Type": "application/json"}
    response = client.post("/v2/models/forest/infer", content=body, headers=headers)
    assert response.status_code == 400, response.text
    _v2_error(response, "MalformedRequestError")


def test_a_header_length_past_the_body_is_400(client):
    response = client.post("/v2/models/forest/infer", content=b'{"inputs": []}',
                           headers={"Inference-Header-Content-Length": "999"})
    assert response.status_code == 400
    _v2_error(response, "MalformedRequestError")


def test_a_wrong_column_shape_is_a_schema_error_or_400(client):
    bad = {"inputs": [{"name": "income", "shape": [2, 2], "datatype": "FP64", "data": [1, 2, 3, 4]},
                      {"name": "age", "shape": [2], "datatype": "INT64", "data": [1, 2]},
                      {"name": "score", "shape": [2], "datatype": "FP64", "data": [1, 2]}]}
    response = client.post("/v2/models/pipe/infer", json=bad)
    assert response.status_code == 400
    _v2_error(response, "MalformedRequestError")
    wrong_type = {"inputs": [{"name": "income", "shape": [1], "datatype": "BYTES", "data": ["rich"]},
                             {"name": "age", "shape": [1], "datatype": "INT64", "data": [30]},
                             {"name": "score", "shape": [1], "datatype": "FP64", "data": [0.5]}]}
    response = client.post("/v2/models/pipe/infer", json=wrong_type)
    assert response.status_code == 422
    assert _v2_error(response, "SchemaError")["column"] == "income"


def test_warnings_come_back_in_the_response_parameters(client):
    extra = {"inputs": [{"name": c, "shape": [1], "datatype": "FP64" if c != "age" else "INT64",
                         "data": [ROWS[c].iloc[0].item()]} for c in ROWS.columns]
             + [{"name": "region", "shape": [1], "datatype": "BYTES", "data": ["north"]}]}
    response = client.post("/v2/models/pipe/infer", json=extra)
    assert response.status_code == 200, response.text
    assert any("'region'" in w for w in response.json()["parameters"]["warnings"])
