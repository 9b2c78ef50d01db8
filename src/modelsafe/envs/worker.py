"""The isolated worker: the program run inside a recreated environment (``python -m modelsafe.envs.worker``).

It answers one request at a time on its stdin/stdout in the protocol of
:mod:`modelsafe.envs.protocol` (JSON headers, ``.npy`` data; never pickle). The requests:

* ``hello``: the protocol, modelsafe and Python versions, the process id;
* ``load``: ``ms.load`` of the artifact with every check (integrity, audit, trust gate,
  environment, deserialize; the client verifies through its own guard afterwards), answered with
  the methods the model has and this environment's fingerprint (the versions of the recorded packages);
* ``call``: one of the model's methods (preprocess, then the model) on input the client has
  already guarded;
* ``outputs``: every recorded output of an input; without one, the outputs of the verification sample (read from the artifact here, guarded here as
  at an in-process load) inside the flavors' replay contexts, as arrays: the client compares them
  with the recorded outputs it read itself, so it needs neither pandas nor the framework;
* ``attribute``: a data attribute of the model or its preprocessing (``classes_``);
* ``close``: answer, then exit. End of input (the client went away) exits too.

Anything the model prints goes to stderr: file descriptor 1 is moved aside for the protocol
first, so a stray ``print`` cannot corrupt a message.
"""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import sys
from collections.abc import Callable
from typing import Any, BinaryIO

from modelsafe.envs.protocol import (
    PROTOCOL,
    Blob,
    error_payload,
    pack,
    read_message,
    unpack,
    write_message,
)
from modelsafe.errors import IsolatedWorkerError

__all__ = ["main"]

_JSON_SCALARS = (str, int, float, bool, type(None))


class _Worker:
    def __init__(self) -> None:
        self.bundle: Any = None

    def hello(self, header: dict[str, Any], blobs: list[memoryview]) -> tuple[dict[str, Any], list[Blob]]:
        from modelsafe._version import __version__

        return {"protocol": PROTOCOL, "modelsafe": __version__, "python": platform.python_version(),
                "pid": os.getpid(), "executable": sys.executable}, []

    def load(self, header: dict[str, Any], blobs: list[memoryview]) -> tuple[dict[str, Any], list[Blob]]:
        from modelsafe._api import load
        from modelsafe.checks.environment import capture_environment

        if self.bundle is not None:
            self.bundle.close()
        self.bundle = load(header["path"], verify=False, **header.get("options", {}))
        route = self.bundle._route
        methods = [m for m in ("predict_proba", "decision_function", "transform")
                   if route.model_flavor.has_method(route.model, m)]
        saved = list((self.bundle.manifest.environment or {}).get("packages", {}))
        return {"methods": methods, "environment": capture_environment(extra_distributions=saved),
                "type": f"{type(route.model).__module__}.{type(route.model).__qualname__}"}, []

    def call(self, header: dict[str, Any], blobs: list[memoryview]) -> tuple[dict[str, Any], list[Blob]]:
        route = self._route()
        result = route.call(str(header["method"]), unpack(header["data"], blobs), check=False)
        out: list[Blob] = []
        return {"data": pack(_densified(result), out)}, out

    def outputs(self, header: dict[str, Any], blobs: list[memoryview]) -> tuple[dict[str, Any], list[Blob]]:
        """Every recorded output of the given input, or, without one, of the verification sample as arrays."""
        from modelsafe.checks.data import as_arrays

        route = self._route()
        out: list[Blob] = []
        if "data" in header:
            found = route.outputs(unpack(header["data"], blobs), check=False)
            return {"data": pack({name: _densified(value) for name, value in found.items()}, out)}, out
        x = self.bundle.sample_inputs()  # read here, from the artifact this worker checked
        with contextlib.ExitStack() as stack:
            stack.enter_context(route.model_flavor.replay_context(route.model))
            if route.pre_flavor is not None:
                stack.enter_context(route.pre_flavor.replay_context(route.preprocess))
            found = route.outputs(x, check=True)  # the stored sample, guarded here as at an in-process load
        return {"data": pack({name: as_arrays(value) for name, value in found.items()}, out)}, out

    def attribute(self, header: dict[str, Any], blobs: list[memoryview]) -> tuple[dict[str, Any], list[Blob]]:
        route = self._route()
        owner = route.preprocess if header.get("component") == "preprocess" else route.model
        name = str(header["name"])
        value = getattr(owner, name)  # AttributeError crosses back as one: hasattr() works on the proxy
        if callable(value):
            raise IsolatedWorkerError(
                f"{name!r} of the isolated {type(owner).__name__} is a method: it runs in the worker process, and "
                "only data crosses the process boundary. Call it through the bundle (bundle.predict, "
                "bundle.predict_proba...), which guards the input first.", attribute=name, operation="attribute")
        if isinstance(value, _JSON_SCALARS) or (isinstance(value, (list, dict)) and _plain_json(value)):
            return {"json": value}, []
        out: list[Blob] = []
        return {"data": pack(value, out)}, out

    def _route(self) -> Any:
        if self.bundle is None:
            raise IsolatedWorkerError("The worker has not loaded an artifact yet: a 'load' request comes first.",
                                      operation="call")
        return self.bundle._route


def _densified(result: Any) -> Any:
    """A scipy sparse result as a dense array (the codec stores arrays); anything else as it is."""
    if type(result).__module__.startswith("scipy.sparse") and hasattr(result, "toarray"):
        return result.toarray()
    return result


def _plain_json(value: Any, depth: int = 0) -> bool:
    if depth > 20:
        return False
    if isinstance(value, list):
        return all(_plain_json(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain_json(v, depth + 1) for k, v in value.items())
    return isinstance(value, _JSON_SCALARS)


def _claim_stdio() -> tuple[BinaryIO, BinaryIO]:
    """The protocol's pipes, moved off fds 0 and 1: stdin reads nothing, stdout writes to stderr."""
    requests = os.fdopen(os.dup(0), "rb", buffering=1 << 16)
    replies = os.fdopen(os.dup(1), "wb", buffering=1 << 16)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    return requests, replies


def main() -> int:
    """Serve requests until ``close`` or the end of input."""
    requests, replies = _claim_stdio()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in a terminal is for the client, which stops the worker
    worker = _Worker()
    handlers: dict[str, Callable[[dict[str, Any], list[memoryview]], tuple[dict[str, Any], list[Blob]]]] = {
        "hello": worker.hello, "load": worker.load, "call": worker.call, "outputs": worker.outputs,
        "attribute": worker.attribute, "close": lambda header, blobs: ({}, [])}
    while True:
        try:
            header, blobs = read_message(requests)
        except EOFError:
            return 0
        op = str(header.get("op"))
        try:
            handler = handlers.get(op)
            if handler is None:
                raise IsolatedWorkerError(f"Unknown request {op!r}: the client speaks another protocol than this "
                                          f"worker ({PROTOCOL}).", operation=op)
            reply, out = handler(header, blobs)
            reply = {"ok": True, **reply}
        except Exception as exc:  # noqa: BLE001 - every failure is the caller's to see, with its class
            reply, out = {"ok": False, "error": error_payload(exc)}, []
        try:
            write_message(replies, reply, out)
        except BrokenPipeError:
            return 0
        if op == "close":
            return 0


if __name__ == "__main__":
    sys.exit(main())
