"""Benchmark: ms.Checkpointer (sync and async) vs torch.save of the same training checkpoint.

Workload: a module of 24 blocks of a ``3d x d`` and a ``d x d`` float32 matrix, d = 2048
(1.5 GiB of weights), with Adam's state (two moments per weight: 3 GiB more) unless
``BENCH_ADAM=0``. The peer saves ``{"model": model.state_dict(), "optimizer":
opt.state_dict()}`` with ``torch.save``; modelsafe saves the same objects with
``Checkpointer.save`` (an artifact with the SHA-256 of every member, fsync, atomic rename,
index update).

Rows, measured side by side in one process, rounds interleaved (``BENCH_ROUNDS``, default 3):

* ``torch.save``: no fsync, so part of the data is still in the page cache when it returns;
  ``torch.save + fsync`` shows what durability costs the peer; ``raw write + fsync`` writes
  the same bytes with plain writes: what the disk allows. Each replaces its previous file,
  as ``torch.save(ckpt, "last.pt")`` does; Checkpointer deletes its previous checkpoint
  (``keep_last=1``), so every row pays for freeing the last one.
* ``Checkpointer.save``: synchronous; "fsync wait" is the time spent in ``os.fsync``.
* ``Checkpointer(async_save=True).save``: the *stall* is how long ``save`` blocks the
  training loop (copying the module's tensors to host memory; Adam's moments are copied in
  the background); "next step held" is how long an ``optimizer.step()`` called at once after
  ``save`` waits for that background copy (the worst case: a loop's forward and backward
  run meanwhile); "until written" adds the background write (``wait()``).
  The first save of a run has its own rows. A new run's first save leaves the copy of the
  parameters, too, to the background (its host buffers are still to be allocated and first
  touched); its Checkpointer reads the installed distributions (the environment record) and
  imports the snapshot path in the background when it is created. A resumed run's
  Checkpointer (a directory holding a checkpoint) also makes the host buffers then. Each
  first stall is timed once that background work is done (a loop that trains that long, a
  few seconds, before its first save).

``os.sync()`` runs between operations (not timed), so no tool pays for another's writeback.
The machine is shared: the table shows the median and range over interleaved rounds.
Files go to ``BENCH_DIR`` (default /tmp) and are deleted.

Run: ``.venv-bench/bin/python bench/bench_checkpoint.py``.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

import modelsafe as ms

D = int(os.environ.get("BENCH_D", "2048"))
BLOCKS = int(os.environ.get("BENCH_BLOCKS", "24"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
ADAM = os.environ.get("BENCH_ADAM", "1") != "0"
GIB = 1 << 30


class Block(torch.nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.qkv = torch.nn.Linear(d, 3 * d, bias=False)
        self.proj = torch.nn.Linear(d, d, bias=False)


class Model(torch.nn.Module):
    def __init__(self, d: int, blocks: int) -> None:
        super().__init__()
        self.blocks = torch.nn.ModuleList(Block(d) for _ in range(blocks))


def build() -> tuple[Any, Any]:
    torch.manual_seed(0)
    with torch.no_grad():
        model = Model(D, BLOCKS)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    if ADAM:  # one step with zero gradients creates both moments for every weight
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return model, opt


class FsyncClock:
    """Counts the time spent waiting in os.fsync (the disk), to show it beside the totals."""

    def __init__(self) -> None:
        self.spent = 0.0
        self._real = os.fsync
        os.fsync = self._fsync  # type: ignore[assignment]

    def _fsync(self, fd: int) -> None:
        start = time.perf_counter()
        self._real(fd)
        self.spent += time.perf_counter() - start

    def reset(self) -> float:
        spent, self.spent = self.spent, 0.0
        return spent


def timed(fn: Callable[[], Any], clock: FsyncClock) -> tuple[float, float]:
    os.sync()
    clock.reset()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start, clock.reset()


def main() -> None:
    model, opt = build()
    nbytes = sum(p.numel() * p.element_size() for p in model.parameters())
    nbytes += sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values())
    folder = Path(tempfile.mkdtemp(prefix="bench-checkpoint-", dir=os.environ.get("BENCH_DIR", "/tmp")))
    clock = FsyncClock()
    sync_ck = ms.Checkpointer(folder / "sync", keep_last=1)
    async_ck = ms.Checkpointer(folder / "async", keep_last=1, async_save=True)
    peer_file = folder / "checkpoint.pt"

    def torch_save(fsync: bool) -> None:  # replaces last round's file, as torch.save(ckpt, "last.pt") does
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, peer_file)
        if fsync:
            fd = os.open(peer_file, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)

    def raw_write() -> None:  # the same bytes, plain writes + fsync: what the disk allows
        with open(peer_file, "wb") as f:
            for tensor in [*model.state_dict().values(), *(t for s in opt.state.values() for t in s.values())]:
                f.write(tensor.numpy().data)
            f.flush()
            os.fsync(f.fileno())

    def async_save(ck: Any, step: int, which: str) -> tuple[tuple[float, float], float]:
        """The stall of ``ck.save`` and how long an optimizer step called at once then waits."""
        stall = timed(lambda: ck.save(step, model=model, optimizer=opt), clock)
        start = time.perf_counter()
        opt.step()  # no gradients: Adam changes nothing, but its step waits for the moments' copy
        held = time.perf_counter() - start
        rows.setdefault(f"Checkpointer.save (async): {which}: next step held", []).append((held, 0.0))
        return stall, held

    rows: dict[str, list[tuple[float, float]]] = {}
    try:
        # warm-up, not counted: every tool has written once (the VM's first touch of page-cache memory is slow)
        async_ck._join_prefetch()  # the loop would train meanwhile
        rows["Checkpointer.save (async): first stall of a new run"] = [async_save(async_ck, 0, "new run's first")[0]]
        async_ck.wait()
        timed(lambda: torch_save(False), clock)
        timed(lambda: sync_ck.save(0, model=model, optimizer=opt), clock)
        for step in range(1, ROUNDS + 1):
            rows.setdefault("torch.save", []).append(timed(lambda: torch_save(False), clock))
            rows.setdefault("torch.save + fsync", []).append(timed(lambda: torch_save(True), clock))
            rows.setdefault("raw write + fsync", []).append(timed(raw_write, clock))
            rows.setdefault("Checkpointer.save (sync)", []).append(
                timed(lambda s=step: sync_ck.save(s, model=model, optimizer=opt), clock))
            stall, held = async_save(async_ck, step, "later saves")
            start = time.perf_counter()
            async_ck.wait()
            rows.setdefault("Checkpointer.save (async): stall", []).append(stall)
            rows.setdefault("Checkpointer.save (async): until written", []).append(
                (stall[0] + held + time.perf_counter() - start, clock.reset()))
        async_ck.close()  # frees its buffers; the resumed run makes its own
        resumed = ms.Checkpointer(folder / "async", keep_last=1, async_save=True)
        resumed._join_prefetch()  # the loop would train meanwhile
        rows["Checkpointer.save (async): first stall of a resumed run"] = [
            async_save(resumed, ROUNDS + 1, "resumed run's first")[0]]
        resumed.close()
    finally:
        sync_ck.close()
        async_ck.close()
        shutil.rmtree(folder, ignore_errors=True)
    report(rows, nbytes)


def report(rows: dict[str, list[tuple[float, float]]], nbytes: int) -> None:
    what = f"{BLOCKS} blocks, d = {D}: {nbytes / GIB:.2f} GiB " + ("(weights + Adam moments)" if ADAM else "(weights)")
    print(f"Checkpoint of {what}; {ROUNDS} rounds, median (min-max).\n")
    print("| operation | seconds | GiB/s | fsync wait (s) |")
    print("|---|---|---|---|")
    median = {}
    for name, values in sorted(rows.items(), key=lambda kv: kv[0].endswith("held")):
        seconds = [v[0] for v in values]
        median[name] = statistics.median(seconds)
        rate = "-" if name.endswith("held") else f"{nbytes / GIB / median[name]:.2f}"
        print(f"| {name} | {median[name]:.2f} ({min(seconds):.2f}-{max(seconds):.2f}) | "
              f"{rate} | {statistics.median(v[1] for v in values):.2f} |")
    sync = median["Checkpointer.save (sync)"]
    stall = median["Checkpointer.save (async): stall"]
    first, resumed = (median[f"Checkpointer.save (async): first stall of a {run} run"] for run in ("new", "resumed"))
    print(f"\nasync stall / sync save: {100 * stall / sync:.1f} % (target <= 10 %); first stalls: a new run "
          f"{first:.2f} s ({100 * first / sync:.0f} % of a sync save), a resumed run {resumed:.2f} s "
          f"({100 * resumed / sync:.0f} %); a new run's first stall / a later stall: {first / stall:.1f}x "
          "(target <= 1)")
    print(f"sync save throughput / torch.save throughput: {median['torch.save'] / sync:.2f} (target >= 1); "
          f"/ torch.save + fsync: {median['torch.save + fsync'] / sync:.2f}")


if __name__ == "__main__":
    main()
