"""Benchmark: modelsafe vs transformers' save_pretrained / from_pretrained on a GPT-2-sized model.

Workload: ``GPT2LMHeadModel(GPT2Config())`` built from its config (124 M parameters, float32,
about 500 MB; ``lm_head`` tied to ``wte``), random weights from a fixed seed.

Every operation runs in its own fresh interpreter with torch, transformers and modelsafe
already imported (imports are not timed for any tool), files in one temporary folder
(``BENCH_DIR``, default /tmp) kept in the page cache between operations. Rounds interleave
the tools so background load hits all of them; the table shows the median and the range.

* ``save_pretrained``: ``model.save_pretrained(folder, safe_serialization=True)`` (no fsync).
* ``ms.save``: the whole save of a ``.msafe`` (environment capture, manifest, SHA-256 of every
  member computed while written, fsync and atomic rename). ``ms.save + sample`` also runs the
  model on a two-row verification sample and stores its logits; the model's own time on that
  sample is measured apart in the same process (``sample predict``) and is not counted against
  the ratio, as the SPEC asks.
* ``from_pretrained``: ``GPT2LMHeadModel.from_pretrained(folder)`` (memory-mapped safetensors).
* ``ms.load verified``: every member hashed (the verified-hash cache off), classes checked,
  model built on ``meta``, weights memory-mapped and assigned, no sample to replay.
* ``ms.load lazy``: the same file again, its hashes from the verified-hash cache.

Besides the wall-clock seconds, each row shows the CPU seconds of the main thread and of the
other threads (the background hashing): on a busy shared machine they say more than the
totals, since the totals include the time the operation waited for a core or for the disk.

Run: ``.venv/bin/python bench/bench_transformers.py`` (``BENCH_ROUNDS``, default 3).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SAVES = ["save:save_pretrained", "save:ms", "save:ms+sample"]
LOADS = ["load:from_pretrained", "load:ms verified", "load:ms lazy"]
#: Imported before timing in every child.
MODULES = ("modelsafe._api", "modelsafe._load", "modelsafe._save", "modelsafe._bundle", "modelsafe.checks.verify",
           "modelsafe.checks.environment", "modelsafe.artifact.integrity", "modelsafe.code.bundle",
           "modelsafe.checks.data", "modelsafe.checks.schema", "modelsafe.flavors.torch.flavor",
           "modelsafe.flavors.torch.tree", "modelsafe.flavors.transformers.flavor", "modelsafe.security",
           "packaging.version", "importlib.metadata", "safetensors.torch")


def _model() -> Any:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config()).eval()


def _sample() -> Any:
    import torch

    return {"input_ids": torch.randint(0, 50257, (2, 8), generator=torch.Generator().manual_seed(0))}


def child(op: str, folder: Path) -> dict[str, Any]:
    import importlib

    os.environ.setdefault("USE_TF", "0")
    import torch
    import transformers

    import modelsafe as ms

    for module in MODULES:
        importlib.import_module(module)
    # transformers' modules load on first use: import the model's classes before timing, for both tools.
    transformers.GPT2LMHeadModel, transformers.GPT2Config, transformers.GenerationConfig  # noqa: B018
    torch.set_num_threads(1)
    files = {"hf": folder / "hf", "ms": folder / "gpt2.msafe", "ms+sample": folder / "gpt2-sample.msafe"}
    model = _model() if op.startswith("save") else None
    extra: dict[str, float] = {}
    if op.startswith("save") and not os.environ.get("BENCH_KEEP"):
        for path in files.values():
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        os.sync()
    if op == "save:ms+sample":
        with torch.no_grad():
            start = time.perf_counter()
            model(**_sample())
            extra["predict"] = time.perf_counter() - start

    def load(path: Path, cache: bool) -> None:
        os.environ["MODELSAFE_HASH_CACHE"] = "1" if cache else "0"
        bundle = ms.load(path)
        assert bundle.model.lm_head.weight is bundle.model.transformer.wte.weight
        bundle.close()

    ops: dict[str, Callable[[], Any]] = {
        "save:save_pretrained": lambda: model.save_pretrained(files["hf"], safe_serialization=True),
        "save:ms": lambda: ms.save(model, files["ms"], overwrite=True),
        "save:ms+sample": lambda: ms.save(model, files["ms+sample"], sample=_sample(), overwrite=True),
        "load:from_pretrained": lambda: transformers.GPT2LMHeadModel.from_pretrained(files["hf"]),
        "load:ms verified": lambda: load(files["ms"], cache=False),
        "load:ms lazy": lambda: load(files["ms"], cache=True),
    }
    fsync = _time_fsync()
    cpu, main_cpu = time.process_time(), time.thread_time()
    start = time.perf_counter()
    ops[op]()
    seconds = time.perf_counter() - start
    cpu, main_cpu = time.process_time() - cpu, time.thread_time() - main_cpu
    return {"op": op, "seconds": seconds, "fsync": fsync[0], "cpu": cpu, "main_cpu": main_cpu, **extra}


def _time_fsync() -> list[float]:
    """Count the time spent waiting in os.fsync (the disk), reported beside the totals."""
    spent = [0.0]
    real = os.fsync

    def fsync(fd: int) -> None:
        start = time.perf_counter()
        real(fd)
        spent[0] += time.perf_counter() - start

    os.fsync = fsync
    return spent


def run_child(op: str, folder: Path, keep: bool = False) -> dict[str, Any]:
    os.sync()
    env = {**os.environ, "MODELSAFE_CACHE_DIR": str(folder / "cache"), "OMP_NUM_THREADS": "1", "USE_TF": "0",
           "BENCH_KEEP": "1" if keep else "", "TRANSFORMERS_VERBOSITY": "error"}
    proc = subprocess.run([sys.executable, __file__, "--child", op, str(folder)], capture_output=True, text=True,
                          env=env, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"{op} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    base = Path(os.environ.get("BENCH_DIR", tempfile.gettempdir()))
    folder = Path(tempfile.mkdtemp(prefix="modelsafe-bench-transformers-", dir=base))
    results: dict[str, list[dict[str, Any]]] = {op: [] for op in SAVES + LOADS}
    try:
        run_child("save:ms", folder)  # warm-up
        for round_ in range(ROUNDS):
            for op in SAVES:
                results[op].append(run_child(op, folder))
            run_child("save:save_pretrained", folder, keep=True)  # the files the loads read
            run_child("save:ms", folder, keep=True)
            run_child("load:ms lazy", folder)  # fills the verified-hash cache for this file
            for op in LOADS:
                results[op].append(run_child(op, folder))
            print(f"round {round_ + 1}/{ROUNDS} done", file=sys.stderr)
        size = sum(p.stat().st_size for p in (folder / "hf").iterdir())
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(table(results, size))


def table(results: dict[str, list[dict[str, Any]]], size: int) -> str:
    t = {op: statistics.median(r["seconds"] for r in rows) for op, rows in results.items()}
    predict = statistics.median(r["predict"] for r in results["save:ms+sample"])
    own_sample = statistics.median(r["seconds"] - r["predict"] for r in results["save:ms+sample"])
    lines = [f"GPT-2 (124 M parameters, float32, lm_head tied to wte): save_pretrained folder {size / 1e6:.0f} MB. "
             f"Median of {ROUNDS} rounds (range in brackets).", "",
             "CPU seconds do not depend on what else runs on the machine: on an idle two-core machine an "
             "operation takes about its critical path, the larger of the main thread's CPU and the other threads' "
             "(which run on the second core), plus waits for the disk.", "",
             "| operation | seconds | x peer | main-thread CPU | other-thread CPU | critical path | x peer |",
             "|---|---|---|---|---|---|---|"]
    peers = {"save": t["save:save_pretrained"], "load": t["load:from_pretrained"]}
    crit = {op: max(statistics.median(r["main_cpu"] for r in rows),
                    statistics.median(r["cpu"] - r["main_cpu"] for r in rows)) for op, rows in results.items()}
    crit_peers = {"save": crit["save:save_pretrained"], "load": crit["load:from_pretrained"]}
    for op, rows in results.items():
        secs = [r["seconds"] for r in rows]
        main_cpu = statistics.median(r["main_cpu"] for r in rows)
        other = statistics.median(r["cpu"] - r["main_cpu"] for r in rows)
        lines.append(f"| {op} | {t[op]:.3f} [{min(secs):.3f}-{max(secs):.3f}] | {t[op] / peers[op[:4]]:.2f} | "
                     f"{main_cpu:.3f} | {other:.3f} | {crit[op]:.3f} | {crit[op] / crit_peers[op[:4]]:.2f} |")
    lines.append(f"| save:ms+sample without the model's predict ({predict:.3f} s) | {own_sample:.3f} | "
                 f"{own_sample / peers['save']:.2f} | | | | |")
    no_fsync = statistics.median(r["seconds"] - r["fsync"] for r in results["save:ms"])
    lines.append(f"| save:ms without its fsync wait (save_pretrained does not fsync) | {no_fsync:.3f} | "
                 f"{no_fsync / peers['save']:.2f} | | | | |")
    lines += ["", "| target | measured | met |", "|---|---|---|",
              f"| save <= 1.2 x save_pretrained | {t['save:ms'] / peers['save']:.2f} x (without the fsync wait "
              f"{no_fsync / peers['save']:.2f} x; with a sample, its predict apart: {own_sample / peers['save']:.2f} x)"
              f"; on CPU critical paths {crit['save:ms'] / crit_peers['save']:.2f} x"
              f" | {'yes' if t['save:ms'] <= 1.2 * peers['save'] else 'no'} |",
              f"| verified load <= 1.5 x from_pretrained | {t['load:ms verified'] / peers['load']:.2f} x (on CPU "
              f"critical paths {crit['load:ms verified'] / crit_peers['load']:.2f} x) | "
              f"{'yes' if t['load:ms verified'] <= 1.5 * peers['load'] else 'no'} |",
              f"| lazy load <= 1.1 x from_pretrained | {t['load:ms lazy'] / peers['load']:.2f} x (on CPU critical "
              f"paths {crit['load:ms lazy'] / crit_peers['load']:.2f} x) | "
              f"{'yes' if t['load:ms lazy'] <= 1.1 * peers['load'] else 'no'} |"]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], Path(sys.argv[3]))))
    else:
        main()
