"""Micro-batching in-process: concurrent requests are guarded alone, predicted together, split back exactly."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelsafe.errors import SchemaError
from modelsafe.serving.batching import Lane, concat, run_requests
from modelsafe.serving.models import ServedModel
from modelsafe.serving.outputs import take_rows


@pytest.fixture(scope="module")
def served(bundles):
    from modelsafe.serving import capture

    capture.install()  # as create_app does: guard warnings go to the request that raised them
    return {name: ServedModel(name, str(b.path), b, b.verify()) for name, b in bundles.items()}


def _frames(sizes, seed):
    rng = np.random.default_rng(seed)
    return [pd.DataFrame(rng.normal(size=(n, 4)), columns=["f0", "f1", "f2", "f3"]) for n in sizes]


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(1, 6), min_size=1, max_size=12), seed=st.integers(0, 2**32 - 1))
def test_every_request_gets_exactly_its_own_rows(served, bundles, sizes, seed):
    frames = _frames(sizes, seed)
    outcomes = run_requests(served["linear"], "predict", frames, sizes)
    for frame, outcome in zip(frames, outcomes):
        assert outcome.error is None and outcome.batch_rows == sum(sizes)
        assert np.allclose(outcome.value, bundles["linear"].predict(frame), rtol=1e-12, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(1, 5), min_size=2, max_size=8), seed=st.integers(0, 2**32 - 1))
def test_a_forest_batch_is_exact(served, bundles, sizes, seed):
    rng = np.random.default_rng(seed)
    arrays = [rng.normal(size=(n, 4)) for n in sizes]
    outcomes = run_requests(served["forest"], "predict", arrays, sizes)
    for x, outcome in zip(arrays, outcomes):
        assert outcome.value.tolist() == bundles["forest"].predict(x).tolist()


def test_a_bad_request_fails_alone_and_keeps_its_warnings(served, bundles):
    good, extra = _frames([2, 3], 0)
    missing = good.drop(columns="f2")
    outcomes = run_requests(served["linear"], "predict", [good, missing, extra.assign(more=1.0)], [2, 2, 3])
    assert isinstance(outcomes[1].error, SchemaError) and outcomes[1].error.column == "f2"
    assert np.allclose(outcomes[0].value, bundles["linear"].predict(good), rtol=1e-12)
    assert outcomes[0].warnings == []
    assert any("'more'" in w for w in outcomes[2].warnings)
    assert np.allclose(outcomes[2].value, bundles["linear"].predict(extra), rtol=1e-12)


def test_texts_and_class_probabilities_batch_too(served, bundles):
    texts = [["good food"], ["bad wait", "great staff"], ["awful"]]
    outcomes = run_requests(served["texts"], "predict_proba", texts, [1, 2, 1])
    for t, outcome in zip(texts, outcomes):
        assert np.allclose(outcome.value, bundles["texts"].predict_proba(t), rtol=1e-12)


def test_concat_and_take_rows_invert_each_other():
    parts = [{"a": np.arange(3), "b": np.arange(3.0)}, {"a": np.arange(2), "b": np.arange(2.0)}]
    joined = concat(parts)
    assert take_rows(joined, 3, 5)["a"].tolist() == [0, 1]
    assert concat([(np.ones(2), np.zeros(2)), (np.ones(1), np.zeros(1))])[1].tolist() == [0, 0, 0]
    assert concat([["x"], ["y", "z"]]) == ["x", "y", "z"]


@pytest.mark.parametrize("latency", [0.0, 0.005], ids=["no wait when idle", "waits 5 ms for company"])
def test_a_lane_batches_concurrent_requests_up_to_the_limit(served, bundles, latency):
    sizes = [1, 2, 3] * 14
    frames = _frames(sizes, 7)
    batches: list[int] = []

    async def main():
        with ThreadPoolExecutor(2) as pool:
            model = served["linear"]
            lane = Lane(lambda inputs, rows: run_requests(model, "predict", inputs, rows), pool, 16, latency,
                        on_batch=batches.append)
            results = await asyncio.gather(*(lane.submit(f, n) for f, n in zip(frames, sizes)))
            await lane.close()
        return results

    results = asyncio.run(main())
    assert sum(batches) == sum(sizes) and max(batches) <= 16 and len(batches) < len(sizes)
    for frame, outcome in zip(frames, results):
        assert np.allclose(outcome.value, bundles["linear"].predict(frame), rtol=1e-12)
