"""The serving tests' artifacts (saved in a fresh process) and real servers in subprocesses.

``ServerProcess`` runs ``python -m modelsafe serve ...`` on a free loopback port, the way a
user starts it, and waits until ``/v2/health/ready`` says ready. The shared server (one per
test session) holds several models with micro-batching on.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """``modelsafe serve`` in a subprocess; its stdout (access log) and stderr go to files."""

    def __init__(self, args: list[str], folder: Path, *, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.folder = folder
        self.out, self.err = folder / f"serve-{self.port}.out", folder / f"serve-{self.port}.err"
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PROMETHEUS_MULTIPROC_DIR")}
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.process = subprocess.Popen([sys.executable, "-m", "modelsafe", "serve", *args, "--port", str(self.port)],
                                            cwd=str(folder), stdout=out, stderr=err, env=env)

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, timeout: float = 180) -> "ServerProcess":
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited with {self.process.returncode}:\n{self.stderr()}")
            try:
                if httpx.get(self.url + "/v2/health/ready", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.kill()
        raise AssertionError(f"the server was not ready after {timeout} s:\n{self.stderr()}")

    def wait_exit(self, timeout: float = 120) -> int:
        return self.process.wait(timeout=timeout)

    def terminate(self, timeout: float = 120) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the artifacts of ``save_models.py``, saved in a fresh process."""
    folder = tmp_path_factory.mktemp("served")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, str(HERE / "save_models.py"), str(folder)], cwd=str(folder), env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return folder


@pytest.fixture(scope="session")
def bundles(artifacts: Path) -> dict[str, Any]:
    """The same artifacts loaded in this process: what the server's answers are compared with."""
    import modelsafe as ms

    return {name: ms.load(artifacts / f"{name}.msafe") for name in ("pipe", "forest", "linear", "texts", "rf")}


@pytest.fixture(scope="session")
def server(artifacts: Path):
    """One server for the session (per xdist worker): five models, micro-batching on, small limits to test them."""
    proc = ServerProcess(["pipe.msafe", "forest.msafe", "linear.msafe", "texts.msafe", "rf.msafe",
                          "--max-batch-size", "64", "--max-latency-ms", "2", "--max-body-mb", "1",
                          "--max-rows", "5000"], artifacts)
    try:
        yield proc.wait_ready()
    finally:
        proc.terminate()


@pytest.fixture
def start_server(artifacts: Path):
    """``start_server(args)``: a ServerProcess in the artifacts' folder, stopped after the test."""
    started: list[ServerProcess] = []

    def start(args: list[str], **kwargs: Any) -> ServerProcess:
        started.append(ServerProcess(args, artifacts, **kwargs))
        return started[-1]

    yield start
    for proc in started:
        proc.kill()


@pytest.fixture
def client(server: ServerProcess):
    import httpx

    with httpx.Client(base_url=server.url, timeout=60) as http:
        yield http
