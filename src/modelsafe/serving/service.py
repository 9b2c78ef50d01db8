"""The server's state: its models, the thread pool predictions run on, micro-batching lanes, limits.

Protocol handlers build a model's input from the request and call :meth:`Service.predict`;
nothing about HTTP is here.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from modelsafe.serving.batching import Lane, Outcome, run_requests
from modelsafe.serving.capture import collect
from modelsafe.serving.errors import MalformedRequestError, ModelNotFoundError, RequestTooLargeError
from modelsafe.serving.inputs import rows_in
from modelsafe.serving.metrics import Metrics
from modelsafe.serving.models import METHODS, ServedModel

__all__ = ["Limits", "Service"]

log = logging.getLogger("modelsafe.serving")
#: Input kinds whose requests can be concatenated into one batch.
_BATCHABLE = frozenset({"dataframe", "ndarray", "tensor", "texts", "dict", "positional"})
#: Bodies up to this size are decoded on the event loop (cheaper than a trip to the thread pool).
_INLINE_BYTES = 256 << 10


@dataclass(frozen=True)
class Limits:
    """What the server accepts and how it batches."""

    max_batch_size: int = 32
    max_latency_ms: float = 0.0
    max_body_bytes: int = 64 << 20
    max_rows: int = 100_000
    threads: int = 0  # 0: min(4, CPUs + 1)

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_body_bytes", "max_rows"):
            if int(getattr(self, name)) < 1:
                value = getattr(self, name)
                raise ValueError(f"Invalid `{name}`: expected an integer >= 1. Received: {name}={value!r}")
        if self.max_latency_ms < 0:
            raise ValueError("Invalid `max_latency_ms`: expected a number >= 0. "
                             f"Received: max_latency_ms={self.max_latency_ms!r}")


class Service:
    """The models a server holds, and how their predictions run (see the module docstring)."""

    def __init__(self, models: list[ServedModel], limits: Limits) -> None:
        self.models = {m.name: m for m in models}
        self.limits = limits
        threads = limits.threads or min(4, (os.cpu_count() or 1) + 1)
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="modelsafe-predict")
        self.metrics = Metrics()
        self.lanes: dict[tuple[str, str], Lane] = {}
        self.draining = False

    @property
    def ready(self) -> bool:
        """Every model loaded and verified, and not shutting down."""
        return not self.draining and all(m.verification.ok for m in self.models.values())

    def pick(self, name: str | None) -> ServedModel:
        """The model ``name``, or the only one when no name is given."""
        if name is None and len(self.models) == 1:
            return next(iter(self.models.values()))
        model = self.models.get(name) if name is not None else None
        if model is None:
            names = sorted(self.models)
            what = f"No model is named {name!r}" if name is not None else \
                f"This server holds {len(names)} models and the request did not say which one"
            raise ModelNotFoundError(
                f"{what}: the server holds {names}. Name one with ?model=NAME or the X-Model header "
                "(/v2/models/NAME/infer for the v2 protocol).", model=name, available=names)
        return model

    def check_method(self, model: ServedModel, method: Any) -> str:
        if method in model.methods:
            return method
        if method in METHODS:
            model.method(method)  # raises MissingMethodError, naming what the model offers
        raise MalformedRequestError(
            f"Unknown method {method!r}: the model {model.name!r} offers {list(model.methods)}. Ask for one of "
            "those (params: {\"method\": \"predict_proba\"}), or leave the parameter out for predict.",
            expected=list(model.methods), actual=repr(method))

    async def decode(self, size: int, build: Callable[[], Any]) -> tuple[Any, list[str]]:
        """``build()`` (the model's input from a body of ``size`` bytes) and the warnings it raised: on the
        event loop for a small body, on the thread pool for a large one."""

        def run() -> tuple[Any, list[str]]:
            with collect() as seen:
                return build(), seen

        if size <= _INLINE_BYTES:
            return run()
        return await asyncio.get_running_loop().run_in_executor(self.executor, run)

    async def predict(self, model: ServedModel, method: str, inputs: Any, noted: Sequence[str] = ()) -> Outcome:
        """Predict ``inputs`` off the event loop (batched with other requests when enabled); raise its error.

        ``noted``: warnings met while building the input, returned (and logged) with the guard's."""
        rows = rows_in(inputs)
        limit = self.limits.max_rows
        if rows > limit:
            raise RequestTooLargeError(
                f"The request has {rows} rows, over this server's limit of {limit} per request: so many rows would "
                "hold a worker for every other caller. Split it into requests of at most that many rows (or start "
                "the server with a larger --max-rows).", limit=limit, actual=rows, unit="rows")
        batch = self.limits.max_batch_size
        if batch > 1 and rows < batch and model.spec.kind in _BATCHABLE:
            outcome = await self._lane(model, method).submit(inputs, rows)
        else:
            loop = asyncio.get_running_loop()
            outcome = (await loop.run_in_executor(self.executor, run_requests, model, method, [inputs], [rows]))[0]
            self.metrics.batch_rows.labels(model.name, method).observe(rows)
        outcome.warnings = [*noted, *outcome.warnings]
        if outcome.warnings:
            self.metrics.warnings.labels(model.name).inc(len(outcome.warnings))
            for message in outcome.warnings:
                log.warning("model %s: input warning: %s", model.name, message)
        if outcome.error is not None:
            raise outcome.error
        return outcome

    def _lane(self, model: ServedModel, method: str) -> Lane:
        key = (model.name, method)
        lane = self.lanes.get(key)
        if lane is None:
            observe = self.metrics.batch_rows.labels(model.name, method).observe

            def run(inputs: list[Any], rows: list[int]) -> list[Outcome]:
                return run_requests(model, method, inputs, rows)

            lane = self.lanes[key] = Lane(run, self.executor, self.limits.max_batch_size,
                                          self.limits.max_latency_ms / 1000.0, on_batch=observe)
        return lane

    async def close(self) -> None:
        """Stop the batching lanes and the thread pool (after in-flight requests finished)."""
        self.draining = True
        for lane in self.lanes.values():
            await lane.close()
        self.executor.shutdown(wait=True)
        for model in self.models.values():
            model.bundle.close()
