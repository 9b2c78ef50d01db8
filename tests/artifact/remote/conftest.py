"""A real S3 API on loopback for the remote-storage tests: moto's server mode, started once per
session on a free 127.0.0.1 port (as s3fs's own tests do), and a small TCP proxy in front of
it that counts the bytes the server sent and can cut the connection after N of them."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from typing import Iterator

import pytest

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def wait_for_server(url: str, proc: "subprocess.Popen", what: str, timeout: float = 60) -> None:
    """Return once ``url`` answers (any HTTP status is an answer); RuntimeError if ``proc`` exits or ``timeout``
    seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{what} did not start") from None
            time.sleep(0.2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proxy:
    """Forwards 127.0.0.1:port to the server and counts the server->client bytes.

    ``cut_after``: once the server sent that many bytes, the connection is dropped (RST-free close), for
    ``cuts`` connections (None: every one). ``stall_after``: once the server sent that many bytes, nothing
    more is forwarded and the connection stays open (a peer gone silent, no FIN) until :meth:`reset`.
    ``upload_delay``: seconds slept per client->server chunk (a slow uplink).
    """

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.sent = 0
        self.cut_after: int | None = None
        self.cuts: int | None = None
        self.stall_after: int | None = None
        self.upload_delay = 0.0
        self._released = threading.Event()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        with self._lock:
            self.sent, self.cut_after, self.cuts, self.stall_after, self.upload_delay = 0, None, None, None, 0.0
            self._released.set()  # stalled connections end
            self._released = threading.Event()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, counted: bool) -> None:
        try:
            while data := src.recv(1 << 16):
                if not counted:
                    if self.upload_delay:
                        time.sleep(self.upload_delay)
                    dst.sendall(data)
                    continue
                with self._lock:
                    stall = self._released if self.stall_after is not None else None
                    limit = self.stall_after if stall else self.cut_after if self.cuts != 0 else None
                    over = limit is not None and self.sent + len(data) > limit
                    if over:
                        data = data[: max(0, limit - self.sent)]  # type: ignore[operator]
                        if stall is None and self.cuts is not None:
                            self.cuts -= 1
                    self.sent += len(data)
                dst.sendall(data)
                if over:
                    if stall is not None:
                        stall.wait(300)  # silent, the connection open, until reset()
                    raise ConnectionAbortedError("cut by the test")
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[dict[str, object]]:
    from moto.server import ThreadedMotoServer

    for key, value in CREDENTIALS.items():
        os.environ.setdefault(key, value)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    proxy = Proxy(port)
    yield {"server": server, "port": port, "proxy": proxy}
    server.stop()


@pytest.fixture
def s3(s3_server: dict[str, object]) -> dict[str, object]:
    """A new bucket; ``options`` reach the server directly, ``proxied`` through the counting proxy."""
    import s3fs

    # Filesystem instances are cached by fsspec as for any user (a new S3 client costs most of a second).
    direct = {"endpoint_url": f"http://127.0.0.1:{s3_server['port']}"}
    proxy = s3_server["proxy"]
    proxy.reset()  # type: ignore[attr-defined]
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    fs = s3fs.S3FileSystem(use_listings_cache=False, **direct)  # the tests' own view: never a stale listing
    fs.mkdir(bucket)
    # botocore makes one attempt and s3fs two (its own retries, with backoff): a cut connection fails fast.
    proxied = {"endpoint_url": proxy.url, "retries": 2,
               "config_kwargs": {"retries": {"max_attempts": 1}}}  # type: ignore[attr-defined]
    return {"bucket": bucket, "fs": fs, "options": direct, "proxied": proxied, "proxy": proxy,
            "server": s3_server["server"], "port": s3_server["port"]}
