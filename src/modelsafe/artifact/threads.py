"""Worker threads shared by every save and load of the process.

A pool's threads start on first use and then wait for work: starting threads at every
save or load cost milliseconds (a new thread must get the GIL to report that it runs).
Jobs are self-contained (none waits for another job), so saves and loads in several
threads can share the pools. Callers keep their own futures, to wait for or cancel them.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, Iterable

_pools: dict[str, ThreadPoolExecutor] = {}
_lock = threading.Lock()


def pool(name: str, workers: int) -> ThreadPoolExecutor:
    """The process-wide pool ``name`` (``workers`` threads, named ``modelsafe-<name>``)."""
    with _lock:
        found = _pools.get(name)
        if found is None:
            found = _pools[name] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"modelsafe-{name}")
        return found


def settle(jobs: Iterable[Future[Any]]) -> None:
    """Cancel the jobs not started and wait for the running ones (their errors are dropped)."""
    jobs = list(jobs)
    for job in jobs:
        job.cancel()
    wait(jobs)


def _forget() -> None:
    """In a forked child the pools' threads do not exist: new ones start when needed."""
    global _lock
    _pools.clear()
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget)
