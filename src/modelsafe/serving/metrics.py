"""Prometheus metrics of a server: requests, latency, batch sizes, errors and warnings, per model.

Each app has its own registry, so several apps in one process (tests, or an app mounted
in another) never collide. With ``--workers N`` the command line sets
``PROMETHEUS_MULTIPROC_DIR`` before the workers start, and ``/metrics`` then adds up
every worker's figures (prometheus-client's multiprocess mode).
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384, 65536)


class Metrics:
    """The server's instruments (prometheus-client objects) and the ``/metrics`` page."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("modelsafe_requests", "HTTP requests by model, protocol and status code",
                                ["model", "protocol", "status"], registry=self.registry)
        self.latency = Histogram("modelsafe_request_duration_seconds", "Time from request to response, per model",
                                 ["model", "protocol"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.batch_rows = Histogram("modelsafe_batch_rows", "Rows given to the model in one call, per model",
                                    ["model", "method"], buckets=_ROW_BUCKETS, registry=self.registry)
        self.errors = Counter("modelsafe_errors", "Error responses by model and error type",
                              ["model", "type"], registry=self.registry)
        self.warnings = Counter("modelsafe_input_warnings", "Input-guard warnings returned with predictions",
                                ["model"], registry=self.registry)

    def observe(self, model: str, protocol: str, status: int, seconds: float, error: str | None) -> None:
        self.requests.labels(model, protocol, str(status)).inc()
        if model:
            self.latency.labels(model, protocol).observe(seconds)
        if error:
            self.errors.labels(model, error).inc()

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type (every worker's figures under multiprocess mode)."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        registry: Any = self.registry
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
