"""Benchmark: ``modelsafe serve`` against ``mlflow models serve`` and a bare Starlette endpoint.

In one run, on the same scikit-learn pipeline (StandardScaler + LogisticRegression on an
8-column DataFrame), each server in its own process on 127.0.0.1, one worker each:

* start-up: from launching the server to its first successful ``/ping``;
* one-row ``dataframe_split`` requests at concurrency 1, 8 and 64: throughput, p50, p99
  (every row distinct; every answer checked to be 200);
* micro-batching on (``--max-batch-size 64``) vs off, concurrency 64, on a RandomForest(100).

modelsafe runs twice in the first table: with its defaults (requests that arrive while the
model is busy are batched, up to 32 rows, none held back) and with ``--max-batch-size 1``. All servers run at once; every (server, concurrency) is measured
once per round, the servers taking turns, and the figures are medians over the rounds
(``--rounds``, 3 by default), so that a shared machine's load drifting during the run
hits every peer alike.

Peers: ``mlflow models serve --env-manager local`` on the model logged with
``mlflow.sklearn.save_model``; a bare Starlette app on uvicorn that builds the DataFrame and
calls ``model.predict`` in its handler (the floor: no checks, no metrics, no logs). The load
generator is a plain asyncio HTTP/1.1 client on kept-alive connections, bounded by a request
count, against 127.0.0.1 only.

Run with the bench environment (it has MLflow): ``.venv-bench/bin/python bench/bench_serve.py``
(``--quick`` for fewer requests).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pickle
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

COLUMNS = [f"x{i}" for i in range(8)]
BARE_APP = textwrap.dedent('''
    import os, pickle
    import pandas as pd
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route

    with open(os.environ["BARE_MODEL"], "rb") as f:
        model = pickle.load(f)

    async def invocations(request):
        split = (await request.json())["dataframe_split"]
        frame = pd.DataFrame(split["data"], columns=split["columns"])
        return JSONResponse({"predictions": model.predict(frame).tolist()})

    async def ping(request):
        return PlainTextResponse("\\n")

    app = Starlette(routes=[Route("/invocations", invocations, methods=["POST"]), Route("/ping", ping)])
''')


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _models(folder: Path) -> dict[str, Any]:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import mlflow.sklearn
    from mlflow.models import infer_signature

    import modelsafe as ms

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(2000, len(COLUMNS))), columns=COLUMNS)
    labels = (frame["x0"] + frame["x1"] - frame["x2"] > 0).astype(int)
    pipe = make_pipeline(StandardScaler(), LogisticRegression()).fit(frame, labels)
    forest = RandomForestClassifier(100, random_state=0).fit(frame, labels)
    for name, model in (("pipe", pipe), ("forest", forest)):
        ms.save(model, folder / f"{name}.msafe", sample=frame.iloc[:50], training_data=frame)
        with open(folder / f"{name}.pkl", "wb") as f:
            pickle.dump(model, f)
    mlflow.sklearn.save_model(pipe, str(folder / "mlflow-pipe"), signature=infer_signature(frame, pipe.predict(frame)))
    (folder / "bare.py").write_text(BARE_APP)
    return {"frame": frame}


class Server:
    def __init__(self, name: str, command: list[str], port: int, cwd: Path) -> None:
        self.name, self.port = name, port
        self.url = f"http://127.0.0.1:{port}"
        self.log = open(cwd / f"{name}.log", "wb")
        self.started = time.perf_counter()
        # mlflow models serve runs `uvicorn` from PATH: the environment's own, as after activating it.
        env = {**os.environ, "PYTHONUNBUFFERED": "1",
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        self.process = subprocess.Popen(command, cwd=str(cwd), stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.startup = self._wait_ready()

    def _wait_ready(self, timeout: float = 300) -> float:
        import httpx

        while time.perf_counter() - self.started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}; see {self.log.name}")
            try:
                if httpx.get(self.url + "/ping", timeout=1).status_code == 200:
                    return time.perf_counter() - self.started
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"{self.name} was not ready after {timeout} s")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    """One HTTP/1.1 request on a kept-alive connection; the status (the body is read and dropped)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    fields = {k.strip().lower(): v.strip() for k, _, v in
              (line.partition(b":") for line in head.split(b"\r\n")[1:] if line)}
    if b"content-length" in fields:
        await reader.readexactly(int(fields[b"content-length"]))
    elif fields.get(b"transfer-encoding") == b"chunked":
        while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
            await reader.readexactly(size + 2)
        await reader.readuntil(b"\r\n")
    return status


async def _load(port: int, bodies: list[bytes], concurrency: int) -> dict[str, float]:
    """``concurrency`` kept-alive connections sending ``bodies`` as fast as they are answered.

    A plain asyncio HTTP/1.1 client: a few tens of microseconds of CPU per request, so that on
    two cores the servers, not the load generator, set the pace (httpx takes ten times more).
    """
    latencies: list[float] = []
    work = iter(bodies)
    head = (b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n")

    async def caller() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for body in work:
                start = time.perf_counter()
                status = await _exchange(reader, writer, head % len(body) + body)
                latencies.append(time.perf_counter() - start)
                if status != 200:
                    raise RuntimeError(f"port {port}: HTTP {status}")
        finally:
            writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    latencies.sort()
    return {"rps": len(bodies) / elapsed, "p50": 1000 * statistics.median(latencies),
            "p99": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]}


def _bodies(frame: pd.DataFrame, count: int, seed: int) -> list[bytes]:
    rows = np.random.default_rng(seed).normal(size=(count, frame.shape[1]))
    return [json.dumps({"dataframe_split": {"columns": COLUMNS, "data": [row.tolist()]}}).encode() for row in rows]


def _run(server: Server, frame: pd.DataFrame, concurrency: int, count: int, seed: int) -> dict[str, float]:
    asyncio.run(_load(server.port, _bodies(frame, max(50, count // 10), seed + 1), concurrency))  # warm-up
    return asyncio.run(_load(server.port, _bodies(frame, count, seed), concurrency))


def _interleaved(servers: dict[str, Server], frame: pd.DataFrame, levels: dict[int, int],
                 rounds: int) -> dict[str, dict[Any, Any]]:
    """Each (server, concurrency) measured once per round, servers taking turns, so that the load
    of a shared machine drifting during the run hits every server alike; medians over the rounds."""
    runs: dict[tuple[str, int], list[dict[str, float]]] = {}
    for r in range(rounds):
        for concurrency, count in levels.items():
            for name, server in servers.items():
                runs.setdefault((name, concurrency), []).append(
                    _run(server, frame, concurrency, count, seed=1000 * r + concurrency))
    results: dict[str, dict[Any, Any]] = {name: {"startup": server.startup} for name, server in servers.items()}
    for (name, concurrency), figures in runs.items():
        results[name][concurrency] = {k: statistics.median(f[k] for f in figures) for k in figures[0]}
    return results


def _start(commands: dict[str, list[str]], folder: Path) -> dict[str, Server]:
    servers: dict[str, Server] = {}
    try:
        for name, command in commands.items():
            port = _free_port()
            servers[name] = Server(name, [*command, "--port", str(port)], port, folder)
    except BaseException:
        _stop(servers)
        raise
    return servers


def _stop(servers: dict[str, Server]) -> None:
    for server in servers.values():
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer requests and one round (a smoke run)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    levels = {1: 200, 8: 800, 64: 1000} if args.quick else {1: 500, 8: 2000, 64: 3000}
    rounds = 1 if args.quick else args.rounds
    python, here = sys.executable, Path(sys.executable).parent
    serve = [python, "-m", "modelsafe", "serve", "--log-level", "warning"]
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        folder = Path(tmp)
        frame = _models(folder)["frame"]
        os.environ["BARE_MODEL"] = str(folder / "pipe.pkl")  # bare.py reads it
        servers = _start({
            "modelsafe serve": [*serve, "pipe.msafe"],
            "modelsafe serve, no batching": [*serve, "pipe.msafe", "--max-batch-size", "1"],
            "mlflow models serve": [str(here / "mlflow"), "models", "serve", "-m", "mlflow-pipe", "--env-manager",
                                    "local", "--host", "127.0.0.1"],
            "bare Starlette": [python, "-m", "uvicorn", "--app-dir", str(folder), "bare:app", "--host", "127.0.0.1",
                               "--log-level", "warning", "--no-access-log"],
        }, folder)
        try:
            results = _interleaved(servers, frame, levels, rounds)
        finally:
            _stop(servers)
        forests = _start({"off": [*serve, "forest.msafe", "--max-batch-size", "1"],
                          "on": [*serve, "forest.msafe", "--max-batch-size", "64"]}, folder)
        try:
            batching = _interleaved(forests, frame, {64: levels[64] // 2}, rounds)
        finally:
            _stop(forests)
    _report(results, {label: figures[64] for label, figures in batching.items()})
    return 0


def _report(results: dict[str, dict[Any, Any]], batching: dict[str, dict[str, float]]) -> None:
    mlflow, bare = results["mlflow models serve"], results["bare Starlette"]
    print("| server | start-up to ready (s) | c | req/s | p50 (ms) | p99 (ms) |")
    print("|---|---|---|---|---|---|")
    for name, figures in results.items():
        for c in (1, 8, 64):
            f = figures[c]
            print(f"| {name} | {figures['startup']:.2f} | {c} | {f['rps']:.0f} | {f['p50']:.2f} | {f['p99']:.2f} |")
    print("\n| modelsafe | c | / MLflow throughput | MLflow p99 / modelsafe p99 | / bare throughput |")
    print("|---|---|---|---|---|")
    for name in ("modelsafe serve", "modelsafe serve, no batching"):
        ours = results[name]
        for c in (1, 8, 64):
            print(f"| {name.removeprefix('modelsafe serve').strip(', ') or 'default'} | {c} | "
                  f"{ours[c]['rps'] / mlflow[c]['rps']:.2f}x | {mlflow[c]['p99'] / ours[c]['p99']:.2f}x | "
                  f"{ours[c]['rps'] / bare[c]['rps']:.2f}x |")
    print("\ntargets at c=8: >= 3x MLflow throughput, p99 <= 1/3 of MLflow's, >= 0.8x the bare endpoint")
    print("\n| RandomForest(100), c=64 | req/s | p50 (ms) | p99 (ms) |")
    print("|---|---|---|---|")
    for label, f in batching.items():
        print(f"| micro-batching {label} | {f['rps']:.0f} | {f['p50']:.2f} | {f['p99']:.2f} |")
    print(f"\nmicro-batching speed-up: {batching['on']['rps'] / batching['off']['rps']:.2f}x (target >= 5x)")


if __name__ == "__main__":
    sys.exit(main())
