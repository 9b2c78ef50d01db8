"""A bounded load test on loopback: 20,000 one-row requests at 64 concurrent connections, micro-batching on.

Every row is distinct and every answer is checked against the model's prediction of that
very row in this process: no errors, no rows mixed up between callers, and the server's
memory after the run within 10 % of what it was after the warm-up.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REQUESTS, CONCURRENCY, WARM_UP = 20_000, 64, 2_000
COLUMNS = ["f0", "f1", "f2", "f3"]
TOLERANCE = 1e-12  # batch and single-row predictions of a linear model differ in the last bits at most


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def _drive(url: str, rows: np.ndarray, first: int, count: int) -> dict[int, float]:
    """Send rows ``first .. first + count`` one per request from CONCURRENCY callers on kept-alive connections.

    aiohttp's client (s3fs's HTTP stack, installed with the remote extra): it costs the client a fraction of
    httpx's CPU per request, and the client shares the machine's two cores with the server under test."""
    import aiohttp

    answers: dict[int, float] = {}
    next_index = iter(range(first, first + count))
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(url, connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as client:

        async def caller() -> None:
            for i in next_index:
                payload = {"dataframe_split": {"columns": COLUMNS, "data": [rows[i].tolist()]}}
                async with client.post("/invocations", json=payload) as response:
                    assert response.status == 200, (i, await response.text())
                    (answers[i],) = (await response.json())["predictions"]

        await asyncio.gather(*(caller() for _ in range(CONCURRENCY)))
    return answers


@pytest.mark.slow
def test_twenty_thousand_requests_each_get_their_own_prediction(start_server, bundles):
    rows = np.random.default_rng(11).normal(size=(REQUESTS, 4))
    expected = bundles["linear"].predict(pd.DataFrame(rows, columns=COLUMNS))
    gaps = np.diff(np.sort(expected))
    assert gaps.min() > 4 * TOLERANCE * np.abs(expected).max()  # a mixed-up answer could not pass for the right one
    server = start_server(["linear.msafe", "--max-batch-size", "64"]).wait_ready()

    answers = asyncio.run(_drive(server.url, rows, 0, WARM_UP))
    warm = _rss(server.pid)
    answers.update(asyncio.run(_drive(server.url, rows, WARM_UP, REQUESTS - WARM_UP)))
    after = _rss(server.pid)

    assert len(answers) == REQUESTS
    got = np.array([answers[i] for i in range(REQUESTS)])
    wrong = np.flatnonzero(~np.isclose(got, expected, rtol=TOLERANCE, atol=TOLERANCE))
    assert wrong.size == 0, f"{wrong.size} answers differ, first at row {wrong[:5]}"
    assert after <= 1.10 * warm, f"RSS grew from {warm / 2**20:.1f} MiB to {after / 2**20:.1f} MiB"
    batches = [line for line in server.stdout().splitlines() if '"batch_rows"' in line]
    assert any('"batch_rows": 1,' not in line for line in batches)  # requests were predicted together
    assert server.terminate() == 0
