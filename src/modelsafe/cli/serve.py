"""``modelsafe serve ARTIFACT...``: the artifacts behind a REST server (extra ``modelsafe[serve]``)."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import signal
import sys
import tempfile
from typing import Any

import click

from modelsafe import errors
from modelsafe.cli._app import State, cli, exit_code, storage_option
from modelsafe.cli.signing import signature_options


@cli.command()
@click.argument("artifacts", nargs=-1, required=True, metavar="ARTIFACT...")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (loopback unless told).")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Server processes.")
@click.option("--max-batch-size", default=32, show_default=True, type=click.IntRange(1),
              help="Requests to one model that arrive while it is busy are predicted together, up to this many "
                   "rows (a request is never held back for others unless --max-latency-ms says so); 1 turns "
                   "batching off.")
@click.option("--max-latency-ms", default=0.0, show_default=True, type=click.FloatRange(0),
              help="How long a request may wait for others to join its batch while the model is idle "
                   "(requests arriving while it is busy are batched anyway).")
@click.option("--max-body-mb", default=64.0, show_default=True, type=click.FloatRange(0, min_open=True),
              help="Larger request bodies get 413.")
@click.option("--max-rows", default=100_000, show_default=True, type=click.IntRange(1),
              help="Requests with more rows get 413.")
@click.option("--threads", default=0, show_default=True, type=click.IntRange(0),
              help="Prediction threads per process (0: min(4, CPUs + 1)).")
@click.option("--env", "env", type=click.Choice(["strict", "warn", "ignore"]), default="warn", show_default=True)
@click.option("--runtime", type=click.Choice(["native", "onnx", "auto"]), default="native", show_default=True,
              help="The model's framework, its portable ONNX member (onnxruntime), or the member where the framework "
                   "cannot load.")
@click.option("--trust-code", is_flag=True, help="Allow importing code bundled in the artifacts.")
@click.option("--isolate", is_flag=True, help="Run each model in a worker process inside its recreated environment "
                                               "(built on first use, then cached).")
@click.option("--trusted", multiple=True, metavar="MODULE.NAME", help="Extra global the unpickler may resolve.")
@signature_options
@click.option("--token-file", type=click.Path(exists=True, dir_okay=False), help="Require this bearer token.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@storage_option
@click.pass_obj
def serve(state: State, artifacts: tuple[str, ...], host: str, port: int, workers: int, max_batch_size: int,
          max_latency_ms: float, max_body_mb: float, max_rows: int, threads: int, env: str, runtime: str,
          trust_code: bool, trusted: tuple[str, ...], token_file: str | None, log_level: str, isolate: bool) -> None:
    """Serve artifacts over MLflow's scoring protocol and the Open Inference Protocol v2.

    Each ARTIFACT is a path (or URL), named by its file stem, or NAME=PATH. Every one is
    loaded and verified before the server starts (its signature first, under --signature);
    if any fails, it does not start.
    """
    from modelsafe.serving import require_serve_extra
    from modelsafe.serving.worker import OPTIONS_VARIABLE, read_token

    load_options: dict[str, Any] = {  # ms.load's, for every worker (JSON: the workers read them from the environment)
        "env": env, "trust_code": trust_code, "trusted": list(trusted), **state.signature_options(),
        **({"isolate": True} if isolate else {}), **({"runtime": runtime} if runtime != "native" else {}),
        **({"storage_options": state.storage_options} if state.storage_options else {})}
    options: dict[str, Any] = {
        "max_batch_size": max_batch_size, "max_latency_ms": max_latency_ms,
        "max_body_bytes": int(max_body_mb * (1 << 20)), "max_rows": max_rows, "threads": threads, **load_options}
    try:
        require_serve_extra()
        token = read_token(token_file) if token_file else None
    except (errors.ModelsafeError, OSError, ValueError) as exc:
        _fail(state, "serve", exc)
    _configure_logging(log_level)
    if token is None and not _loopback(host):
        click.echo(f"warning: serving on {host}, which is not a loopback address, without a token: anyone who can "
                   "reach this machine can call the models. Start it with --token-file FILE, or bind 127.0.0.1.",
                   err=True)
    import uvicorn

    settings = {"host": host, "port": port, "log_config": None, "access_log": False, "log_level": log_level}
    if workers == 1:
        from modelsafe.serving.app import create_app

        try:
            app = create_app(list(artifacts), token=token, **options)
        except (errors.ModelsafeError, OSError, ValueError) as exc:
            _fail(state, getattr(exc, "artifact", "serve"), exc)
        server = uvicorn.Server(uvicorn.Config(app, **settings))
        stop = server.handle_exit

        def drain(sig: int, frame: Any) -> None:  # readiness false from the signal on, while requests finish
            app.state.service.draining = True
            stop(sig, frame)

        server.handle_exit = drain  # type: ignore[method-assign]
        # uvicorn drains in-flight requests on SIGTERM, then raises the signal again; this handler
        # takes that second one, so a drained server exits 0.
        signal.signal(signal.SIGTERM, lambda *_: None)
        server.run()
        sys.exit(0 if server.started else 1)
    from modelsafe.serving.app import load_models

    try:  # every check once here, so that a failing artifact stops the command, not N workers one by one
        for model in load_models(list(artifacts), **load_options):
            model.bundle.close()
    except (errors.ModelsafeError, OSError, ValueError) as exc:
        _fail(state, getattr(exc, "artifact", "serve"), exc)
    os.environ[OPTIONS_VARIABLE] = json.dumps({"artifacts": list(artifacts), "token_file": token_file, **options})
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="modelsafe-metrics-"))
    uvicorn.run("modelsafe.serving.worker:build", factory=True, workers=workers, **settings)
    sys.exit(0)


def _fail(state: State, where: str, exc: BaseException) -> None:
    if state.verbose:
        raise exc
    click.echo(f"{where}: {type(exc).__name__}: {exc}", err=True)
    sys.exit(exit_code(exc))


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _configure_logging(level: str) -> None:
    """Server messages to stderr; the access log (one JSON object per request) to stdout."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(level.upper())
    access = logging.getLogger("modelsafe.serving.access")
    if not access.handlers:
        out = logging.StreamHandler(sys.stdout)
        out.setFormatter(logging.Formatter("%(message)s"))
        access.addHandler(out)
    access.propagate = False
