"""``modelsafe serve`` as a user runs it: refusing to start, tokens, draining on SIGTERM, several workers."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading

import httpx
import numpy as np
import pytest

ROW = {"income": 50.0, "age": 30, "score": 0.5}


def _run(args, cwd, timeout=300):
    return subprocess.run([sys.executable, "-m", "modelsafe", "serve", *args], cwd=str(cwd), capture_output=True,
                          text=True, timeout=timeout)


def test_a_tampered_artifact_stops_the_server_from_starting(artifacts, tmp_path, flip_byte):
    import modelsafe as ms

    bad = tmp_path / "bad.msafe"
    shutil.copy(artifacts / "pipe.msafe", bad)
    member = ms.inspect(bad).components["model"].members[0]
    flip_byte(bad, member)
    shutil.copy(artifacts / "forest.msafe", tmp_path / "forest.msafe")
    proc = _run(["forest.msafe", "bad.msafe", "--port", "0"], tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("bad.msafe: IntegrityError: ")
    assert member in proc.stderr and "Traceback" not in proc.stderr
    assert "Uvicorn running" not in proc.stderr


def _drifted(artifacts, folder):
    """The linear model saved as a folder whose manifest says it was saved with scikit-learn 0.24.2."""
    import modelsafe as ms

    bundle = ms.load(artifacts / "linear.msafe")
    ms.save(bundle.model, folder, sample=bundle.sample_inputs())
    manifest = json.loads((folder / "modelsafe.json").read_text())
    manifest["environment"]["packages"]["scikit-learn"]["version"] = "0.24.2"
    (folder / "modelsafe.json").write_text(json.dumps(manifest))
    return folder


def test_an_environment_mismatch_under_env_strict_stops_it(artifacts, tmp_path):
    folder = _drifted(artifacts, tmp_path / "old-sklearn")
    proc = _run([str(folder), "--env", "strict", "--port", "0"], tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "EnvironmentMismatchError" in proc.stderr and "scikit-learn" in proc.stderr


def test_the_environment_difference_is_reported_when_allowed(start_server, artifacts):
    if not (artifacts / "drifted").exists():
        _drifted(artifacts, artifacts / "drifted")
    server = start_server(["drifted"]).wait_ready()
    details = httpx.get(server.url + "/v1/models/drifted", timeout=30).json()
    level = {d["package"]: d["level"] for d in details["environment"]["differences"]}
    assert level["scikit-learn"] == "major" and not details["environment"]["ok"]
    assert any("scikit-learn 0.24.2 ->" in w for w in details["load_warnings"])
    assert "scikit-learn 0.24.2 ->" in server.stderr()
    page = httpx.get(server.url + "/", timeout=30).text
    assert '<tr class="level-major"><td>scikit-learn</td><td>0.24.2</td>' in page
    assert server.terminate() == 0


@pytest.mark.parametrize("args, message", [
    (["missing.msafe"], "missing.msafe"),
    (["a=pipe.msafe", "a=forest.msafe"], "given twice"),
    (["bad name=pipe.msafe"], "Invalid model name"),
])
def test_usage_errors_exit_2(artifacts, args, message):
    proc = _run([*args, "--port", "0"], artifacts)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_an_empty_token_file_is_refused(artifacts, tmp_path):
    empty = tmp_path / "token"
    empty.write_text("\n")
    proc = _run(["pipe.msafe", "--token-file", str(empty), "--port", "0"], artifacts)
    assert proc.returncode == 2 and "is empty" in proc.stderr


def test_a_non_loopback_host_without_a_token_warns(artifacts):
    # 192.0.2.1 (TEST-NET-1) is no address of this machine: the warning comes first, then binding fails.
    proc = _run(["forest.msafe", "--host", "192.0.2.1", "--port", "0"], artifacts)
    assert "not a loopback address, without a token" in proc.stderr
    assert proc.returncode != 0


def test_a_bearer_token_guards_everything_but_the_health_probes(start_server, tmp_path):
    import tritonclient.http as httpclient

    token_file = tmp_path / "token"
    token_file.write_text("s3cr3t-token-of-the-test\n")
    server = start_server(["pipe.msafe", "--token-file", str(token_file)]).wait_ready()
    for path in ("/v1/models", "/", "/metrics", "/docs"):
        response = httpx.get(server.url + path, timeout=30)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"]["type"] == "AuthenticationError"
    wrong = httpx.post(server.url + "/invocations", json={"dataframe_records": [ROW]}, timeout=30,
                       headers={"Authorization": "Bearer s3cr3t-token-of-the-tesT"})
    assert wrong.status_code == 401
    v2 = httpx.get(server.url + "/v2/models/pipe", timeout=30)
    assert v2.status_code == 401 and v2.json()["error"].startswith("AuthenticationError: ")
    right = {"Authorization": "Bearer s3cr3t-token-of-the-test"}
    assert httpx.post(server.url + "/invocations", json={"dataframe_records": [ROW]}, headers=right,
                      timeout=30).status_code == 200
    for path in ("/ping", "/health", "/v2/health/live", "/v2/health/ready"):
        assert httpx.get(server.url + path, timeout=30).status_code == 200, path
    triton = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
    assert triton.get_model_metadata("pipe", headers=right)["name"] == "pipe"
    triton.close()
    assert server.terminate() == 0


def test_sigterm_drains_the_request_in_flight_then_exits_0(start_server, artifacts):
    server = start_server(["slow.msafe", "--trust-code"]).wait_ready()
    marker = artifacts / "slow-started"
    marker.unlink(missing_ok=True)  # verification at start-up ran the model too
    answers: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: answers.append(httpx.post(
        server.url + "/invocations", json={"instances": [[1.0, 2.0, 3.0]]}, timeout=60)))
    thread.start()
    for _ in range(600):
        if marker.exists():
            break
        thread.join(0.05)
    assert marker.exists(), server.stderr()
    server.process.send_signal(signal.SIGTERM)  # while the model sleeps on the request
    assert server.wait_exit() == 0
    thread.join(60)
    assert answers and answers[0].status_code == 200 and answers[0].json() == {"predictions": [6.0]}
    assert "Shutting down" in server.stderr() and "Finished server process" in server.stderr()
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "/ping", timeout=5)


def test_several_workers_share_the_port_and_the_metrics(start_server, bundles):
    server = start_server(["linear.msafe", "--workers", "2"]).wait_ready()
    rng = np.random.default_rng(5)
    rows = rng.normal(size=(40, 4))
    for row in rows:  # a new connection each time, so the kernel spreads them over the workers
        payload = {"dataframe_split": {"columns": ["f0", "f1", "f2", "f3"], "data": [row.tolist()]}}
        response = httpx.post(server.url + "/invocations", json=payload, timeout=30)
        assert response.status_code == 200, response.text
        expected = bundles["linear"].predict(_frame(row))
        assert np.allclose(response.json()["predictions"], expected, rtol=1e-12)
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(server.url + "/metrics", timeout=30).text
    counted = sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
                  if s.name == "modelsafe_requests_total" and s.labels.get("model") == "linear")
    assert counted == 40  # every worker's requests, whichever worker answers /metrics
    assert server.terminate() == 0


def _frame(row):
    import pandas as pd

    return pd.DataFrame([row], columns=["f0", "f1", "f2", "f3"])
