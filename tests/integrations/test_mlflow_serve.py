"""``mlflow models serve --env-manager local`` on an exported artifact answers /invocations as the model does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import modelsafe as ms

from .conftest import MLFLOW, free_port, stop, wait_ready

pytestmark = pytest.mark.slow


def _post(url: str, body: dict[str, object]) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_mlflow_models_serve_answers_invocations_with_the_same_predictions(tmp_path, frame_model):
    folder = ms.export(frame_model["path"], tmp_path / "served", to="mlflow")
    port = free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(MLFLOW), "models", "serve", "-m", str(folder), "--env-manager", "local",
                                 "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_ready(f"http://127.0.0.1:{port}/ping", proc, log)
        rows = frame_model["frame"].iloc[100:130]
        split = json.loads(rows.to_json(orient="split", index=False))
        status, answer = _post(f"http://127.0.0.1:{port}/invocations", {"dataframe_split": split})
        assert status == 200, answer
        assert answer["predictions"] == frame_model["model"].predict(rows).tolist()
        status, answer = _post(f"http://127.0.0.1:{port}/invocations",
                               {"dataframe_split": split, "params": {"method": "predict_proba"}})
        assert status == 200, answer
        np.testing.assert_allclose(answer["predictions"], frame_model["model"].predict_proba(rows))
        records = json.loads(rows.iloc[:3][["score", "income", "age"]].to_json(orient="records"))
        status, answer = _post(f"http://127.0.0.1:{port}/invocations", {"dataframe_records": records})
        assert status == 200 and answer["predictions"] == frame_model["model"].predict(rows.iloc[:3]).tolist()
        status, answer = _post(f"http://127.0.0.1:{port}/invocations",
                               {"dataframe_split": {"columns": ["income", "score"], "data": [[50.0, 0.1]]}})
        assert 400 <= status < 500 and "age" in json.dumps(answer)
    finally:
        stop(proc)
