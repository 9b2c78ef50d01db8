"""Remote storage against one loopback S3 server (moto, in its own process), side by side.

* load of a torch state dict artifact from S3, verification included, vs raw s3fs cat_file of
  the same bytes (target >= 0.8x the raw throughput);
* save to S3 vs torch.save to a local file followed by an s3fs upload (target >= 1x);
* bytes the server sent for inspect (target <= 1 MiB), counted by a loopback proxy.

Run: ``python bench/bench_remote.py [--gib 1.0] [--runs 3]``.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
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
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", "import sys,time; from moto.server import ThreadedMotoServer as S; "
                               f"s=S(ip_address='127.0.0.1', port={port}, verbose=False); s.start(); "
                               "sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        time.sleep(3)
        run(port, args)
    finally:
        server.stdin.close()  # type: ignore[union-attr]
        server.wait(10)


def run(port: int, args: argparse.Namespace) -> None:
    import s3fs
    import torch
    from conftest import Proxy  # the tests' counting proxy

    import modelsafe as ms

    options = {"endpoint_url": f"http://127.0.0.1:{port}", "skip_instance_cache": True}
    fs = s3fs.S3FileSystem(**options)
    fs.mkdir("bench")
    n = int(args.gib * (1 << 30)) // 4 // 8
    state = {f"layer{i}.weight": torch.randn(n) for i in range(8)}
    size = sum(t.numel() * 4 for t in state.values())
    rows = []
    for run_ in range(args.runs):
        url = f"s3://bench/model-{run_}.msafe"
        t = time.perf_counter()
        ms.save(state, url, storage_options=options)
        save = time.perf_counter() - t
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            torch.save(state, f"{tmp}/m.pt")
            fs.put_file(f"{tmp}/m.pt", f"bench/peer-{run_}.pt")
            peer_save = time.perf_counter() - t
        os.environ["MODELSAFE_HASH_CACHE"] = "0"
        t = time.perf_counter()
        ms.load(url, storage_options=options)
        load = time.perf_counter() - t
        t = time.perf_counter()
        raw = fs.cat_file(f"bench/model-{run_}.msafe")
        cat = time.perf_counter() - t
        del raw
        proxy = Proxy(port)
        ms.inspect(url, storage_options={"endpoint_url": proxy.url, "skip_instance_cache": True})
        rows.append((save, peer_save, load, cat, proxy.sent))
        fs.rm([f"bench/model-{run_}.msafe", f"bench/peer-{run_}.pt"])
    gib = size / (1 << 30)
    print(f"torch state dict, {gib:.2f} GiB, loopback moto S3 server (own process), {args.runs} runs")
    print(f"{'run':>3} | {'ms.save s':>9} | {'torch.save+put s':>16} | {'save ratio':>10} | {'ms.load s':>9} | "
          f"{'cat_file s':>10} | {'load/raw thr.':>13} | {'inspect bytes':>13}")
    for i, (save, peer_save, load, cat, sent) in enumerate(rows):
        print(f"{i:>3} | {save:9.2f} | {peer_save:16.2f} | {peer_save / save:9.2f}x | {load:9.2f} | {cat:10.2f} | "
              f"{cat / load:12.2f}x | {sent:13d}")


if __name__ == "__main__":
    main()
