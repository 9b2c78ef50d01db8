"""export(to="docker"): the build context's files, and its requirements installed in a fresh venv and served.

Docker is not available on this machine: no image is built. What the image would do is done
here instead: ``pip install -r requirements.txt`` from the context in a fresh virtual
environment, then the Dockerfile's entry point (``modelsafe serve`` on the context's artifact)
and its HEALTHCHECK command, run as written, on a free loopback port.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import modelsafe as ms


@pytest.fixture(scope="module")
def context(saved_in_old, old_env, tmp_path_factory) -> Path:
    return ms.export(saved_in_old / "pipeline.msafe", tmp_path_factory.mktemp("ctx") / "image", to="docker")


def _instructions(dockerfile: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in dockerfile.replace("\\\n", " ").splitlines():
        if line.strip() and not line.startswith("#"):
            word, _, rest = line.strip().partition(" ")
            found.setdefault(word, []).append(" ".join(rest.split()))
    return found


def test_the_context_holds_a_dockerfile_on_the_recorded_python_and_a_non_root_server(context):
    dockerfile = (context / "Dockerfile").read_text()
    steps = _instructions(dockerfile)
    assert steps["FROM"] == ["python:3.11-slim"]
    assert steps["USER"] == ["modelsafe"] and any("useradd" in run and "modelsafe" in run for run in steps["RUN"])
    assert any(run.startswith("pip install --no-cache-dir -r requirements.txt") for run in steps["RUN"])
    assert json.loads(steps["ENTRYPOINT"][0]) == ["modelsafe", "serve", "--host", "0.0.0.0", "--port", "8080",
                                                  "--env", "strict"]
    assert json.loads(steps["CMD"][0]) == ["/srv/modelsafe/pipeline.msafe"]
    health = steps["HEALTHCHECK"][0]
    assert "/v2/health/ready" in health and health.startswith("--interval=30s")
    assert "pipeline.msafe ./pipeline.msafe" in steps["COPY"]
    assert steps["EXPOSE"] == ["8080"]
    readme = (context / "README.md").read_text()
    assert "`docker build -t pipeline .`" in readme and "docker run --rm -p 8080:8080 pipeline" in readme


def test_the_requirements_pin_every_recorded_version_and_the_artifact_is_the_checked_one(context, saved_in_old):
    lines = (context / "requirements.txt").read_text().splitlines()
    requirements = [line for line in lines if line and not line.startswith("#")]
    assert requirements == ["--only-binary numpy,pandas,scikit-learn", "numpy==1.26.4", "pandas==2.1.4",
                            "scikit-learn==1.4.2", "./modelsafe-src[serve]"]
    assert (context / "modelsafe-src" / "pyproject.toml").is_file()
    assert (context / "pipeline.msafe").read_bytes() == (saved_in_old / "pipeline.msafe").read_bytes()
    assert ms.verify(context / "pipeline.msafe", isolate=True).ok


def test_the_requirements_install_in_a_fresh_venv_and_serve_as_the_image_would(context, saved_in_old, old_rows,
                                                                                tmp_path):
    venv = tmp_path / "image-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-r", "requirements.txt"],
                         check=False, cwd=context, capture_output=True, text=True, timeout=1500)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    code = "import importlib.metadata as m, json; print(json.dumps({n: m.version(n) for n in ('numpy', 'pandas', " \
           "'scikit-learn')}))"
    versions = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(versions.stdout) == {"numpy": "1.26.4", "pandas": "2.1.4", "scikit-learn": "1.4.2"}

    steps = _instructions((context / "Dockerfile").read_text())
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    entry = [a.replace("0.0.0.0", "127.0.0.1").replace("8080", port) for a in json.loads(steps["ENTRYPOINT"][0])]
    artifact = json.loads(steps["CMD"][0])[0].replace("/srv/modelsafe", str(context))
    health = json.loads(re.search(r"CMD (\[.*\])$", steps["HEALTHCHECK"][0]).group(1))
    health = [str(venv / "bin" / "python"), *[a.replace("8080", port) for a in health[1:]]]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PROMETHEUS_MULTIPROC_DIR")}
    with open(tmp_path / "serve.err", "wb") as err:
        server = subprocess.Popen([str(venv / "bin" / entry[0]), *entry[1:], artifact], stdout=subprocess.DEVNULL,
                                  stderr=err, env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 300
        while subprocess.run(health, check=False, capture_output=True, env=env).returncode != 0:  # the HEALTHCHECK, as written
            assert server.poll() is None, (tmp_path / "serve.err").read_text()
            assert time.monotonic() < deadline, "never healthy"
            time.sleep(0.5)
        import httpx

        rows = old_rows.iloc[:100]
        body = {"dataframe_split": {"columns": list(rows.columns), "data": rows.values.tolist()}}
        answer = httpx.post(f"http://127.0.0.1:{port}/invocations", json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        np.testing.assert_array_equal(answer.json()["predictions"], np.load(saved_in_old / "pipeline_predict.npy")[:100])
    finally:
        server.terminate()
        server.wait(60)


def test_a_non_empty_destination_is_refused_and_the_command_line_exports(saved_in_old, old_env, tmp_path, cli):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    with pytest.raises(ms.EnvironmentBuildError) as caught:
        ms.export(saved_in_old / "pipeline.msafe", taken, to="docker")
    assert caught.value.reason == "destination" and (taken / "keep.txt").read_text() == "mine"
    proc = cli("export", str(saved_in_old / "forest.msafe"), "--to", "docker", str(tmp_path / "forest-image"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "FROM python:3.11-slim" in (tmp_path / "forest-image" / "Dockerfile").read_text()
