"""Predicting off the event loop, one request at a time or in micro-batches.

:func:`run_requests` is what a worker thread runs: each request's input through the input
guard on its own (so a bad request fails alone, and its warnings stay its own), the good
ones concatenated, predicted once and split back by their row counts. When the model's
output does not have one row per input row, or the batch raises, every request is
predicted on its own instead, so a batch never changes what a caller gets.

:class:`Lane` gathers concurrent requests to one model and method. A batch leaves for the
thread pool when a prediction slot is free and either ``max_rows`` rows are waiting or the
oldest request has waited ``max_latency`` (0, the default: at once). Requests that arrive
while the slots are busy wait for the next batch, so under load batches form without any
added wait, and a lone request is never held back.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from modelsafe.errors import ModelsafeError
from modelsafe.serving.capture import collect
from modelsafe.serving.errors import PredictionError
from modelsafe.serving.models import ServedModel
from modelsafe.serving.outputs import rows_of, take_rows

__all__ = ["Outcome", "run_requests", "concat", "Lane"]

log = logging.getLogger("modelsafe.serving")


@dataclass
class Outcome:
    """What one request gets: its predictions, or the error it caused, and its warnings."""

    value: Any = None
    error: BaseException | None = None
    warnings: list[str] = field(default_factory=list)
    batch_rows: int = 0


def run_requests(model: ServedModel, method: str, inputs: list[Any], rows: list[int]) -> list[Outcome]:
    """Guard each input, predict the good ones together, split the result back (see the module doc)."""
    outcomes = [Outcome() for _ in inputs]
    good: list[tuple[int, Any]] = []
    for i, x in enumerate(inputs):
        with collect() as seen:
            try:
                good.append((i, model.guard(x)))
            except ModelsafeError as exc:
                outcomes[i].error = exc
        outcomes[i].warnings = seen
    if len(good) == 1:
        i, x = good[0]
        _predict_one(model, method, x, rows[i], outcomes[i])
    elif good:
        _predict_batch(model, method, good, rows, outcomes)
    return outcomes


def _predict_batch(model: ServedModel, method: str, good: list[tuple[int, Any]], rows: list[int],
                   outcomes: list[Outcome]) -> None:
    counts = [rows[i] for i, _ in good]
    total = sum(counts)
    try:
        result = model.method(method)(concat([x for _, x in good]), check=False)
    except Exception:  # noqa: BLE001 - some request's input makes the model fail: find which, alone
        result = None
    if result is None or rows_of(result) != total:
        for i, x in good:
            _predict_one(model, method, x, rows[i], outcomes[i])
        return
    start = 0
    for (i, _), count in zip(good, counts):
        outcomes[i].value = take_rows(result, start, start + count)
        outcomes[i].batch_rows = total
        start += count


def _predict_one(model: ServedModel, method: str, x: Any, rows: int, outcome: Outcome) -> None:
    outcome.batch_rows = rows
    try:
        outcome.value = model.method(method)(x, check=False)
    except ModelsafeError as exc:
        outcome.error = exc
    except Exception as exc:  # noqa: BLE001 - the model's own failure: a short 500, the traceback logged
        log.exception("model %s raised in %s on %d row(s)", model.name, method, rows)
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        outcome.error = PredictionError(
            f"The model {model.name!r} raised {type(exc).__name__} in {method} on {rows} row(s)"
            f"{': ' + first if first else ''}. The input passed the schema check, so the failure is the model's "
            "own; the server log has its traceback.", model=model.name, exception=type(exc).__name__, method=method)


def concat(inputs: list[Any]) -> Any:
    """The inputs of several requests as one (DataFrames, arrays, lists, dicts or tuples of them)."""
    first = inputs[0]
    if hasattr(first, "iloc"):
        import pandas as pd

        return pd.concat(inputs, ignore_index=True)
    if isinstance(first, np.ndarray):
        return np.concatenate(inputs)
    if isinstance(first, dict):
        return {k: concat([x[k] for x in inputs]) for k in first}
    if isinstance(first, tuple):
        return tuple(concat(list(parts)) for parts in zip(*inputs))
    if isinstance(first, list):
        return [item for x in inputs for item in x]
    raise TypeError(f"cannot batch inputs of type {type(first).__name__}")


@dataclass
class _Job:
    inputs: Any
    rows: int
    arrived: float
    future: asyncio.Future[Outcome]


class Lane:
    """Micro-batches of one model's method (see the module docstring)."""

    def __init__(self, run: Callable[[list[Any], list[int]], list[Outcome]], executor: Executor, max_rows: int,
                 max_latency: float, in_flight: int = 2, on_batch: Callable[[int], None] | None = None) -> None:
        self.run, self.executor = run, executor
        self.max_rows, self.max_latency = max_rows, max_latency
        self.on_batch = on_batch
        self.pending: deque[_Job] = deque()
        self.rows = 0
        self.slots = asyncio.Semaphore(in_flight)
        self.wake = asyncio.Event()
        self.full: asyncio.Future[None] | None = None
        self.task: asyncio.Task[None] | None = None

    async def submit(self, inputs: Any, rows: int) -> Outcome:
        loop = asyncio.get_running_loop()
        if self.task is None:
            self.task = loop.create_task(self._serve())
        job = _Job(inputs, rows, loop.time(), loop.create_future())
        self.pending.append(job)
        self.rows += rows
        self.wake.set()
        if self.full is not None and self.rows >= self.max_rows and not self.full.done():
            self.full.set_result(None)
        return await job.future

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self.pending:
                self.wake.clear()
                await self.wake.wait()
            wait = self.pending[0].arrived + self.max_latency - loop.time()
            if self.rows < self.max_rows and wait > 0:
                self.full = loop.create_future()
                timer = loop.call_later(wait, _resolve, self.full)
                try:
                    await self.full
                finally:
                    timer.cancel()
                    self.full = None
            await self.slots.acquire()
            batch = self._take()
            if self.on_batch is not None:
                self.on_batch(sum(job.rows for job in batch))
            done = loop.run_in_executor(self.executor, self.run, [j.inputs for j in batch], [j.rows for j in batch])
            done.add_done_callback(lambda fut, batch=batch: self._finish(batch, fut))  # type: ignore[misc]

    def _take(self) -> list[_Job]:
        batch = [self.pending.popleft()]
        rows = batch[0].rows
        while self.pending and rows + self.pending[0].rows <= self.max_rows:
            job = self.pending.popleft()
            batch.append(job)
            rows += job.rows
        self.rows -= rows
        return batch

    def _finish(self, batch: list[_Job], done: asyncio.Future[list[Outcome]]) -> None:
        self.slots.release()
        error = None if done.cancelled() else done.exception()
        for i, job in enumerate(batch):
            if job.future.done():
                continue  # the caller went away
            if done.cancelled():
                job.future.cancel()
            elif error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result(done.result()[i])

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
