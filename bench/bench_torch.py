"""Benchmark: modelsafe vs torch.save/torch.load, safetensors and a raw write on a 1.5 GiB state dict.

Workload: 24 blocks of a ``3d x d`` and a ``d x d`` float32 matrix, d = 2048 (1.5 GiB).

Every operation runs in its own fresh interpreter, so its memory can be measured: the peak
resident memory (VmHWM) beyond what the process held just before the operation, and the
peak anonymous memory sampled every 2 ms (file-backed pages of memory maps count in the
first, not in the second). Files live in a temporary folder (``BENCH_DIR``, default /tmp)
and stay in the page cache between operations, for every tool alike. Before each save every
output file is deleted and dirty pages are synced, so each writer starts from the same
state. Rounds interleave the tools, so background load hits all of them; the table shows
the median and the range, and the CPU seconds per thread of each save, which do not depend
on what else runs on the machine.

modelsafe operations:

* ``ms.save``: the whole save (environment capture, manifest, SHA-256 of every member
  computed while it is written, fsync and atomic rename). ``torch.save`` and the raw write
  do not fsync; a row ``torch.save + fsync`` shows what durability costs the peer.
* ``ms.load verified``: every member hashed (the verified-hash cache off), then read.
* ``ms.load lazy``: an unchanged file already verified once: hashes come from the cache.

Run: ``.venv-bench/bin/python bench/bench_torch.py`` (``BENCH_ROUNDS``, default 3).
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

D = int(os.environ.get("BENCH_D", "2048"))
BLOCKS = int(os.environ.get("BENCH_BLOCKS", "24"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
GIB = 1 << 30
#: Imported before timing (torch and safetensors are imported before timing too).
MODELSAFE_MODULES = ("modelsafe._api", "modelsafe._load", "modelsafe._save", "modelsafe._bundle", "modelsafe.checks.verify",
                     "modelsafe.checks.environment", "modelsafe.artifact.integrity", "modelsafe.code.bundle", "modelsafe.checks.data",
                     "modelsafe.checks.schema", "modelsafe.flavors.torch.flavor", "modelsafe.flavors.torch.tree",
                     "modelsafe.security", "packaging.version", "importlib.metadata")


# ---------------------------------------------------------------------------------------
# one operation, in a child process
# ---------------------------------------------------------------------------------------


def state_dict() -> dict[str, Any]:
    import torch

    gen = torch.Generator().manual_seed(0)
    out = {}
    for i in range(BLOCKS):
        out[f"blocks.{i}.qkv.weight"] = torch.empty(3 * D, D).uniform_(-1, 1, generator=gen)
        out[f"blocks.{i}.proj.weight"] = torch.empty(D, D).uniform_(-1, 1, generator=gen)
    return out


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


class _AnonPeak:
    """Samples RssAnon on a thread (the kernel keeps no high-water mark for it)."""

    def __init__(self) -> None:
        self.peak = _status("RssAnon")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _status("RssAnon"))

    def __enter__(self) -> "_AnonPeak":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _status("RssAnon"))


def _reset_hwm() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # resets VmHWM to the current RSS
        f.write("5")


def _write_raw(sd: dict[str, Any], path: Path) -> None:
    with open(path, "wb") as f:
        for t in sd.values():
            f.write(t.numpy().data)


def _ms_load(path: Path, cache: bool, mmap: bool = True) -> None:
    import modelsafe as ms

    os.environ["MODELSAFE_HASH_CACHE"] = "1" if cache else "0"
    bundle = ms.load(path, mmap=mmap)
    assert len(bundle.model) == 2 * BLOCKS
    bundle.close()


def _fsynced(fn: Callable[[], None], path: Path) -> Callable[[], None]:
    def run() -> None:
        fn()
        fd = os.open(path, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    return run


def child(op: str, folder: Path) -> dict[str, Any]:
    import torch

    import modelsafe as ms

    for module in MODELSAFE_MODULES:  # imports are not part of any tool's timing
        importlib.import_module(module)

    torch.set_num_threads(1)
    sd = state_dict() if op.startswith(("save", "raw")) else None
    files = {"raw": folder / "raw.bin", "torch": folder / "sd.pt", "safetensors": folder / "sd.safetensors",
             "ms": folder / "sd.msafe"}
    if op.startswith(("save", "raw")) and not os.environ.get("BENCH_KEEP"):
        # Every save starts from the same state: no output file of any tool exists (so none pays an
        # unlink, and every writer gets the same freed page-cache pages: on a VM, pages never touched
        # before cost several times more to fill), and nothing is left to write back.
        for path in files.values():
            path.unlink(missing_ok=True)
        os.sync()
    from safetensors.torch import load_file, save_file

    ops: dict[str, Callable[[], Any]] = {
        "raw write": lambda: _write_raw(sd, files["raw"]),
        "save:torch": lambda: torch.save(sd, files["torch"]),
        "save:torch+fsync": _fsynced(lambda: torch.save(sd, files["torch"]), files["torch"]),
        "save:safetensors": lambda: save_file(sd, files["safetensors"]),
        "save:ms": lambda: ms.save(sd, files["ms"], overwrite=True),
        "load:torch": lambda: torch.load(files["torch"]),
        "load:torch mmap": lambda: torch.load(files["torch"], mmap=True),
        "load:safetensors": lambda: load_file(files["safetensors"]),
        "load:safetensors pread": lambda: load_file(files["safetensors"], backend="pread"),
        "load:ms verified": lambda: _ms_load(files["ms"], cache=False),
        "load:ms first": lambda: _ms_load(files["ms"], cache=True),
        "load:ms lazy": lambda: _ms_load(files["ms"], cache=True),
        "load:ms copy": lambda: _ms_load(files["ms"], cache=True, mmap=False),
    }
    fsync_seconds = _time_fsync()
    before_rss, before_anon = _status("VmRSS"), _status("RssAnon")
    _reset_hwm()
    with _AnonPeak() as anon:
        cpu, main_cpu = time.process_time(), time.thread_time()
        start = time.perf_counter()
        result = ops[op]()
        seconds = time.perf_counter() - start
        cpu, main_cpu = time.process_time() - cpu, time.thread_time() - main_cpu
    peak = _status("VmHWM")
    del result
    return {"op": op, "seconds": seconds, "peak_extra": peak - before_rss, "anon_extra": anon.peak - before_anon,
            "fsync": fsync_seconds[0], "cpu": cpu, "main_cpu": main_cpu}


def _time_fsync() -> list[float]:
    """Count the time spent waiting in os.fsync (the disk), to report it beside the totals."""
    spent = [0.0]
    real = os.fsync

    def fsync(fd: int) -> None:
        start = time.perf_counter()
        real(fd)
        spent[0] += time.perf_counter() - start

    os.fsync = fsync
    return spent


# ---------------------------------------------------------------------------------------
# the driver
# ---------------------------------------------------------------------------------------

SAVES = ["raw write", "save:torch", "save:torch+fsync", "save:safetensors", "save:ms"]
LOADS = ["load:torch", "load:torch mmap", "load:safetensors", "load:safetensors pread", "load:ms verified",
         "load:ms first", "load:ms lazy", "load:ms copy"]


LOAD_INPUTS = ["save:torch", "save:safetensors", "save:ms"]
#: Operations whose other-thread work runs on two threads at once (the two weight members of a large
#: artifact are hashed, or read, in parallel); the others have at most one busy helper thread.
PARALLEL = {"load:ms verified": 2, "load:ms first": 2, "load:ms copy": 2}


def run_child(op: str, folder: Path, keep: bool = False) -> dict[str, Any]:
    os.sync()  # no writeback left over from the previous operation
    env = {**os.environ, "MODELSAFE_CACHE_DIR": str(folder / "cache"), "OMP_NUM_THREADS": "1",
           "BENCH_KEEP": "1" if keep else ""}
    proc = subprocess.run([sys.executable, __file__, "--child", op, str(folder)], capture_output=True, text=True,
                          env=env, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"{op} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    size = BLOCKS * 4 * D * D * 4
    base = Path(os.environ.get("BENCH_DIR", tempfile.gettempdir()))
    folder = Path(tempfile.mkdtemp(prefix="modelsafe-bench-torch-", dir=base))
    results: dict[str, list[dict[str, Any]]] = {op: [] for op in SAVES + LOADS}
    try:
        run_child("save:ms", folder)  # warm-up: first touches of fresh memory are slow on some VMs
        for round_ in range(ROUNDS):
            for op in SAVES:
                results[op].append(run_child(op, folder))
            for op in LOAD_INPUTS:  # untimed: the files the loads read
                run_child(op, folder, keep=True)
            for op in LOADS:
                results[op].append(run_child(op, folder))
            print(f"round {round_ + 1}/{ROUNDS} done", file=sys.stderr)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(table(results, size))


def _median(rows: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def table(results: dict[str, list[dict[str, Any]]], size: int) -> str:
    gib = size / GIB
    t = {op: _median(rows, "seconds") for op, rows in results.items()}
    lines = [f"State dict: {BLOCKS} blocks x (3d x d + d x d) float32, d = {D}: {gib:.2f} GiB. "
             f"Median of {ROUNDS} rounds (range in brackets); memory beyond what the process held before.",
             "",
             "| operation | seconds | GiB/s | peak extra RSS | peak extra anon |",
             "|---|---|---|---|---|"]
    for op, rows in results.items():
        secs = [r["seconds"] for r in rows]
        lines.append(f"| {op} | {t[op]:.3f} [{min(secs):.3f}-{max(secs):.3f}] | {gib / t[op]:.2f} | "
                     f"{_median(rows, 'peak_extra') / GIB:.2f} GiB | {_median(rows, 'anon_extra') / GIB:.2f} GiB |")
    own = {op: statistics.median(r["seconds"] - r["fsync"] for r in rows) for op, rows in results.items()}
    lines.append(f"| save:ms without its fsync wait | {own['save:ms']:.3f} | {gib / own['save:ms']:.2f} | | |")
    lines.append(f"| save:torch+fsync without the fsync | {own['save:torch+fsync']:.3f} | "
                 f"{gib / own['save:torch+fsync']:.2f} | | |")
    crit = {}
    lines += ["", "CPU seconds (independent of other load): on an idle two-core machine an operation takes about "
              "its critical path, the larger of the main thread and the other threads (shared by the threads that "
              "run at once), plus waits for the disk.", "",
              "| operation | main-thread CPU | other-thread CPU | critical path | GiB/s on it |",
              "|---|---|---|---|---|"]
    for op in SAVES + LOADS:
        main_cpu = statistics.median(r["main_cpu"] for r in results[op])
        other = statistics.median(r["cpu"] - r["main_cpu"] for r in results[op])
        crit[op] = max(main_cpu, other / PARALLEL.get(op, 1))
        lines.append(f"| {op} | {main_cpu:.3f} | {other:.3f} | {crit[op]:.3f} | {gib / max(crit[op], 1e-9):.2f} |")
    lines += [
        "",
        "| target | measured | met |",
        "|---|---|---|",
        f"| save >= 1.3 x torch.save throughput | total {t['save:torch'] / t['save:ms']:.2f} x; without the fsync "
        f"wait {t['save:torch'] / own['save:ms']:.2f} x; vs torch.save + fsync "
        f"{t['save:torch+fsync'] / t['save:ms']:.2f}"
        f" x; on CPU critical paths {crit['save:torch'] / crit['save:ms']:.2f} x | "
        f"{'yes' if t['save:torch'] / t['save:ms'] >= 1.3 else 'no (total)'} |",
        f"| lazy load within 2 x safetensors.load_file | {t['load:ms lazy'] / t['load:safetensors']:.2f} x | "
        f"{'yes' if t['load:ms lazy'] <= 2 * t['load:safetensors'] else 'no'} |",
        f"| verified load >= 1.2 GiB/s | {gib / t['load:ms verified']:.2f} GiB/s (on its CPU critical path "
        f"{gib / crit['load:ms verified']:.2f} GiB/s) | "
        f"{'yes' if gib / t['load:ms verified'] >= 1.2 else 'no'} |",
        f"| save: no full second copy | {_median(results['save:ms'], 'peak_extra') / size:.2f} x model size | "
        f"{'yes' if _median(results['save:ms'], 'peak_extra') < 0.5 * size else 'no'} |",
        f"| load peak <= 1.2 x model size | {_median(results['load:ms verified'], 'peak_extra') / size:.2f} x "
        f"(lazy {_median(results['load:ms lazy'], 'peak_extra') / size:.2f} x) | "
        f"{'yes' if _median(results['load:ms verified'], 'peak_extra') <= 1.2 * size else 'no'} |",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], Path(sys.argv[3]))))
    else:
        main()
