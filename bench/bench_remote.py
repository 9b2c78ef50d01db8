"""Remote storage against one loopback S3 server (moto, in its own process), side by side in each run.

Workload: a PyTorch state dict of 8 float32 tensors (1 GiB by default).

* **load**: ``ms.load`` of the artifact from S3, every member hashed (a new object each run,
  so the verified-hash cache never knows it, and ``MODELSAFE_HASH_CACHE=0``), vs two raw s3fs
  reads of the same object: ``cat_file`` of the whole object (s3fs fetches it in concurrent
  50 MiB ranges) and ranged ``cat_file`` calls of the very ranges modelsafe's load asked for
  (recorded during it), 8 at a time, so what moto makes each request cost is the same on both
  sides. Target: >= 0.8x the raw (``cat_file``) throughput.
* **save**: ``ms.save`` to S3 (streamed multipart upload, hashed as it goes) vs ``torch.save``
  to a local file followed by s3fs ``put_file``. Target: >= 1x.
* **inspect**: bytes the server sent for ``ms.inspect``, counted by the tests' loopback proxy.
  Target: <= 1 MiB.
* **moto**: what one 64 MiB range costs from a 64 MiB object and from the 1 GiB object. moto
  5 reads the whole object for every range request, so a range of a large object costs
  about what the whole object does; real S3 does not.

Every S3 client is made (and its first request sent) before anything is timed, as a
long-running process has it. The load's peak memory beyond what the process held before
is read from ``/proc/self/status`` (VmHWM, reset through ``/proc/self/clear_refs``).

Run: ``python bench/bench_remote.py [--gib 1.0] [--runs 3]``.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "artifact" / "remote"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
                      MODELSAFE_HASH_CACHE="0")  # every load hashes every byte, whatever an earlier run recorded
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", "import sys; from moto.server import ThreadedMotoServer as S; "
                               f"s=S(ip_address='127.0.0.1', port={port}, verbose=False); s.start(); "
                               "sys.stdin.read()"], stdin=subprocess.PIPE, stderr=subprocess.DEVNULL)  # no request log
    try:
        time.sleep(3)
        run(port, args)
    finally:
        server.stdin.close()  # type: ignore[union-attr]
        server.wait(10)


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) << 10 for line in f if line.startswith(key))


def _timed(work) -> tuple[float, object]:
    t = time.perf_counter()
    out = work()
    return time.perf_counter() - t, out


class _Requests:
    """Records the byte ranges modelsafe's reader asks the store for (artifact.remote_object), to replay them raw."""

    def __init__(self) -> None:
        from modelsafe.artifact.remote_object import RemoteObject

        self.ranges: list[tuple[int, int]] = []
        fetch, fetch_into = RemoteObject.fetch, RemoteObject.fetch_into

        def fetch_recorded(obj, start: int, end: int) -> bytes:
            self.ranges.append((start, end))
            return fetch(obj, start, end)

        def fetch_into_recorded(obj, start: int, target) -> None:
            self.ranges.append((start, start + memoryview(target).nbytes))
            fetch_into(obj, start, target)

        RemoteObject.fetch, RemoteObject.fetch_into = fetch_recorded, fetch_into_recorded  # type: ignore[method-assign]


def _replay(fs, key: str, ranges: list[tuple[int, int]]) -> None:
    """The very ranges modelsafe's load asked for, as raw s3fs cat_file calls, WINDOW in flight."""
    from modelsafe.artifact.remote_object import WINDOW

    with ThreadPoolExecutor(WINDOW) as workers:
        for _ in workers.map(lambda r: fs.cat_file(key, start=r[0], end=r[1]), ranges):
            pass


def run(port: int, args: argparse.Namespace) -> None:
    import s3fs
    import torch
    from conftest import Proxy  # the tests' counting proxy

    import modelsafe as ms

    # moto concatenates a multipart upload's parts in memory when it completes it: for 1 GiB that can take
    # longer than s3fs's 15 s read timeout on a busy machine, and the retry then finds no upload. Both sides wait.
    options = {"endpoint_url": f"http://127.0.0.1:{port}", "config_kwargs": {"read_timeout": 300}}
    fs = s3fs.S3FileSystem(**options)
    fs.mkdir("bench")
    n = int(args.gib * (1 << 30)) // 4 // 8
    state = {f"layer{i}.weight": torch.randn(n) for i in range(8)}
    size = sum(t.numel() * 4 for t in state.values())
    ms.save({"warm": torch.zeros(4)}, "s3://bench/warm.msafe", storage_options=options)  # modelsafe's client made
    ms.load("s3://bench/warm.msafe", storage_options=options)
    fs.cat_file("bench/warm.msafe")
    proxy = Proxy(port)
    requests = _Requests()
    rows = []
    for run_ in range(args.runs):
        url, key = f"s3://bench/model-{run_}.msafe", f"bench/model-{run_}.msafe"
        save, _ = _timed(lambda: ms.save(state, url, storage_options=options))
        with tempfile.TemporaryDirectory() as tmp:
            peer_save, _ = _timed(lambda: (torch.save(state, f"{tmp}/m.pt"), fs.put_file(f"{tmp}/m.pt", "bench/peer.pt")))
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = _status("VmRSS:")
        requests.ranges.clear()
        load, bundle = _timed(lambda: ms.load(url, storage_options=options))
        growth = (_status("VmHWM:") - before) / size
        del bundle
        cat, raw = _timed(lambda: fs.cat_file(key))
        del raw
        asked = sorted(requests.ranges)
        ranged, _ = _timed(lambda: _replay(fs, key, asked))
        proxy.reset()
        ms.inspect(url, storage_options={**options, "endpoint_url": proxy.url})
        rows.append((save, peer_save, load, cat, ranged, growth, proxy.sent, os.getloadavg()[0], len(asked)))
        fs.rm([key, "bench/peer.pt"])
    fs.pipe_file("bench/small", os.urandom(64 << 20))
    fs.pipe_file("bench/large", os.urandom(1 << 30))
    small, _ = _timed(lambda: fs.cat_file("bench/small", start=0, end=64 << 20))
    large, _ = _timed(lambda: fs.cat_file("bench/large", start=0, end=64 << 20))
    _report(args, size, rows, small, large)


def _report(args: argparse.Namespace, size: int, rows: list[tuple], small: float, large: float) -> None:
    cat_requests = -(-size // (50 << 20))
    print(f"torch state dict, {size / (1 << 30):.2f} GiB, loopback moto S3 server (own process), {args.runs} runs; "
          f"{os.cpu_count()} cores; load average (1 min) when each run ended beside it\n")
    print("| run | ms.save s | torch.save+put s | save: peer / ms | ms.load s | cat_file s | ms.load's ranges, raw s "
          "| load: thr. vs cat_file | thr. vs its ranges raw | load peak / size | inspect bytes | load avg |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for i, (save, peer, load, cat, ranged, growth, sent, avg, _) in enumerate(rows):
        print(f"| {i} | {save:.2f} | {peer:.2f} | {peer / save:.2f}x | {load:.2f} | {cat:.2f} | {ranged:.2f} | "
              f"{cat / load:.2f}x | {ranged / load:.2f}x | {growth:.2f}x | {sent:,} | {avg:.1f} |")
    med = [statistics.median(column) for column in zip(*rows)]
    print(f"| median | {med[0]:.2f} | {med[1]:.2f} | {statistics.median(r[1] / r[0] for r in rows):.2f}x | "
          f"{med[2]:.2f} | {med[3]:.2f} | {med[4]:.2f} | {statistics.median(r[3] / r[2] for r in rows):.2f}x | "
          f"{statistics.median(r[4] / r[2] for r in rows):.2f}x | {med[5]:.2f}x | {int(med[6]):,} | {med[7]:.1f} |")
    print(f"\nrange requests per load: ms.load {int(med[8])} (the same replayed raw), cat_file {cat_requests} "
          "(50 MiB ranges)")
    print(f"moto: one 64 MiB range of a 64 MiB object {small:.2f} s, of a 1 GiB object {large:.2f} s "
          f"({large / small:.1f}x: moto reads the whole object per range request)")


if __name__ == "__main__":
    main()
