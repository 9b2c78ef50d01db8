"""A real MLflow tracking server on loopback, started once per session, and the artifacts the tests log to it.

``mlflow server`` keeps runs and the model registry in SQLite and artifacts in a local folder
(``--default-artifact-root``), so a test can reach into the server's store the way an attacker
with write access to the bucket would.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Iterator

import pytest

MLFLOW = Path(sys.executable).parent / "mlflow"
# Nothing leaves the machine: MLflow's usage telemetry is off for the tests and the servers they start.
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["DO_NOT_TRACK"] = "true"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 180) -> None:
    """Poll ``url`` until it answers 200; fail with the server's log if it exits or never answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout} s:\n{log.read_text()[-4000:]}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group the server leads (its workers too), then SIGKILL if it lingers."""
    import signal

    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """``{"uri": "http://127.0.0.1:PORT", "artifacts": <the server's artifact folder>}``."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    artifacts = folder / "artifacts"
    artifacts.mkdir()
    port = free_port()
    log = folder / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(MLFLOW), "server", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
             "--default-artifact-root", str(artifacts), "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1"],
            cwd=folder, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        uri = f"http://127.0.0.1:{port}"
        wait_ready(f"{uri}/health", proc, log)
        yield {"uri": uri, "artifacts": artifacts, "log": log}
    finally:
        stop(proc)


@pytest.fixture
def tracking(mlflow_server: dict[str, object], monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """The server as this process's (and its children's) tracking and registry URI, in an experiment of its own."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", str(mlflow_server["uri"]))
    mlflow.set_tracking_uri(str(mlflow_server["uri"]))
    experiment = mlflow.set_experiment(f"test-{uuid.uuid4().hex[:8]}")
    return {**mlflow_server, "experiment_id": experiment.experiment_id}


@pytest.fixture(scope="session")
def frame_model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A scikit-learn pipeline on a DataFrame (floats and an int column), saved as an artifact with a sample."""
    import numpy as np
    import pandas as pd
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import modelsafe as ms

    rng = np.random.default_rng(7)
    frame = pd.DataFrame({"income": rng.uniform(20, 120, 300), "age": rng.integers(18, 80, 300),
                          "score": rng.normal(size=300)})
    labels = (frame["income"] + frame["score"] * 10 > 70).astype(int)
    model = make_pipeline(StandardScaler(), RandomForestClassifier(20, random_state=0)).fit(frame, labels)
    path = tmp_path_factory.mktemp("frame-model") / "churn.msafe"
    ms.save(model, path, sample=frame.iloc[:16], training_data=frame)
    return {"path": path, "frame": frame, "model": model}
