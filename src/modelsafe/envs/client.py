"""The client side of an isolated worker: the process, its pipes, one request at a time, restarts.

A :class:`Worker` starts ``<environment's python> -m modelsafe.envs.worker`` on first use, with
the caller's working directory (so a project's local modules import as they would here) and
without ``PYTHONPATH`` (so nothing of this environment leaks into that one). Every request takes
the worker's lock (a server's threads share one worker). A worker that dies during a request
(killed, out of memory, a crash in native code) makes that request raise
:class:`~modelsafe.errors.IsolatedWorkerError` with its exit status and last lines on stderr;
the next request starts a new one, which first replays the setup (the ``load`` request).
A request interrupted on this side (Ctrl-C) stops the worker too: its answer would arrive later,
out of turn. :meth:`Worker.stop` ends it (``close``, then a kill after a grace period); every
worker still running is stopped at interpreter exit. A forked child never uses its parent's worker.
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import signal
import subprocess
import sys
import threading
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from modelsafe.envs.installers import tool_environment
from modelsafe.envs.protocol import (
    PROTOCOL,
    Blob,
    read_message,
    rebuild_error,
    write_message,
)
from modelsafe.errors import IsolatedWorkerError

try:
    import fcntl
except ImportError:  # Windows: pipes keep their default size
    fcntl = None  # type: ignore[assignment]

__all__ = ["Worker"]

log = logging.getLogger("modelsafe.envs.worker")
#: How long a worker may take to exit after ``close`` before it is killed.
STOP_GRACE = 5.0
_TAIL_LINES = 40
_PIPE_BYTES = 1 << 20
_LIVE: weakref.WeakSet[Worker] = weakref.WeakSet()


class Worker:
    """One worker process in an environment, started on first use and again after it died."""

    def __init__(self, python: Path, *, cwd: str | None = None,
                 setup: Callable[[Worker], None] | None = None) -> None:
        self.python = Path(python)
        self.cwd = cwd if cwd is not None else os.getcwd()
        #: Run after every start (the ``load`` request): a restarted worker is set up as the first was.
        self.setup = setup
        self.pid: int | None = None
        self.starts = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._owner = os.getpid()
        self._lock = threading.RLock()
        self._tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None and self._owner == os.getpid()

    def request(self, op: str, header: dict[str, Any] | None = None,
                blobs: Sequence[Blob] = ()) -> tuple[dict[str, Any], list[memoryview]]:
        """Send one request; its reply (header, blobs). The worker's own error is raised as itself."""
        with self._lock:
            if not self.alive:
                self._start()
            reply, out = self._exchange(op, header or {}, blobs)
        if not reply.get("ok"):
            raise rebuild_error(reply.get("error") or {})
        return reply, out

    def _start(self) -> None:
        if self._owner != os.getpid():  # a forked child: its parent's worker is not its own
            self._proc, self._owner = None, os.getpid()
            self._lock = threading.RLock()
        self._proc = None
        try:
            proc = subprocess.Popen([str(self.python), "-m", "modelsafe.envs.worker"], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=self.cwd,
                                    env=tool_environment(), bufsize=0)
        except OSError as exc:
            raise IsolatedWorkerError(
                f"The isolated worker could not be started with {self.python} ({exc}): the environment is gone or "
                "broken. Recreate it (ms.recreate_env(path)), or pass another environment to isolate=.",
                python=str(self.python), operation="start", pid=None, returncode=None, output="") from None
        self._proc, self.pid = proc, proc.pid
        _widen(proc)
        self.starts += 1
        self._tail.clear()
        threading.Thread(target=_drain, args=(proc, self._tail), daemon=True, name=f"modelsafe-worker-{proc.pid}").start()
        _LIVE.add(self)
        hello, _ = self._exchange("hello", {}, ())
        if hello.get("protocol") != PROTOCOL:
            self.stop()
            raise IsolatedWorkerError(
                f"The environment at {self.python} has modelsafe {hello.get('modelsafe')}, which speaks worker protocol "
                f"{hello.get('protocol')}; this modelsafe speaks {PROTOCOL}. Recreate the environment with this modelsafe "
                "(ms.recreate_env(path)), or install this modelsafe into it.", python=str(self.python),
                operation="hello", pid=self.pid, returncode=None, output="")
        if self.setup is not None:
            try:
                self.setup(self)
            except BaseException:
                self.stop()
                raise

    def _exchange(self, op: str, header: dict[str, Any], blobs: Sequence[Blob]) -> tuple[dict[str, Any], list[memoryview]]:
        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        try:
            write_message(proc.stdin, {"op": op, **header}, blobs)
            return read_message(proc.stdout)
        except (OSError, EOFError, ValueError) as exc:
            raise self._died(op, exc) from None
        except BaseException:  # interrupted here: the reply would come out of turn, so this worker is done
            self._kill()
            raise

    def _died(self, op: str, cause: BaseException) -> IsolatedWorkerError:
        proc = self._proc
        assert proc is not None
        try:
            code = proc.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:  # alive but speaking nonsense: stop it
            self._kill()
            code = proc.returncode
        self._proc = None
        _LIVE.discard(self)
        output = "\n".join(self._tail)
        status = _status(code)
        last = f" Its last lines on stderr:\n{output}" if output.strip() else " It wrote nothing on stderr."
        return IsolatedWorkerError(
            f"The isolated worker (pid {proc.pid}, {self.python}) {status} during {op!r}: the call did not complete "
            f"({type(cause).__name__}: {cause}).{last}\nThe next call starts a new worker (which loads and checks the "
            f"model again). If it keeps dying, run the model in that environment directly to see why: {self.python} "
            "-c \"import modelsafe as ms; ms.load('ARTIFACT').predict(...)\".",
            pid=proc.pid, python=str(self.python), returncode=code, operation=op, output=output)

    def stop(self) -> None:
        """End the worker: ask it to close, then kill it if it has not exited after a grace period."""
        with self._lock:
            proc, self._proc = self._proc, None
            _LIVE.discard(self)
            if proc is None or self._owner != os.getpid():
                return
            if proc.poll() is None:
                try:
                    assert proc.stdin is not None
                    proc.stdin.close()  # end of input: the worker exits
                except OSError:
                    pass
                try:
                    proc.wait(timeout=STOP_GRACE)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        _LIVE.discard(self)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()


def _widen(proc: subprocess.Popen[bytes]) -> None:
    """Pipes of 1 MiB instead of 64 KiB where Linux allows it: a large input crosses in a few wake-ups of the
    other process instead of one per 64 KiB (on a busy machine each costs a scheduling delay)."""
    set_size = getattr(fcntl, "F_SETPIPE_SZ", 1031) if fcntl is not None else None
    if set_size is None or not sys.platform.startswith("linux"):
        return
    for stream in (proc.stdin, proc.stdout):
        try:
            fcntl.fcntl(stream.fileno(), set_size, _PIPE_BYTES)  # type: ignore[union-attr]
        except OSError:  # above /proc/sys/fs/pipe-max-size for this user: the default size works too
            pass


def _drain(proc: subprocess.Popen[bytes], tail: collections.deque[str]) -> None:
    """Keep the worker's stderr flowing (a full pipe would block it): the last lines, each also logged."""
    assert proc.stderr is not None
    for raw in iter(proc.stderr.readline, b""):
        line = raw.decode("utf-8", "replace").rstrip()
        tail.append(line)
        log.info("[worker %d] %s", proc.pid, line)


def _status(code: int | None) -> str:
    if code is None:
        return "stopped answering"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


@atexit.register
def _stop_all() -> None:
    for worker in list(_LIVE):
        worker.stop()
