"""Pipelines as one unit, and the hub never contacted at load."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import modelsafe as ms

TEXTS = ["the cat sat on the mat", "a red dog", "save and load the model safely"]


@pytest.fixture(scope="module")
def classification_pipeline(tokenizer, classifier):
    from transformers import pipeline

    return pipeline("text-classification", model=classifier, tokenizer=tokenizer, top_k=2)


def test_text_classification_pipeline_loads_back_as_a_pipeline(tmp_path, fresh, classification_pipeline):
    import json

    manifest = ms.save(classification_pipeline, tmp_path / "pipe.msafe", sample=TEXTS)
    data = manifest.components["model"].data
    assert data["kind"] == "pipeline" and data["task"] == "text-classification"
    assert set(data["parts"]) == {"model", "tokenizer"}
    assert set(manifest.verification["outputs"]) == {"predict.0.label", "predict.0.score", "predict.1.label",
                                                     "predict.1.score"}
    (tmp_path / "expected.json").write_text(json.dumps(classification_pipeline(TEXTS)))
    fresh(f"""
        import json, modelsafe as ms
        bundle = ms.load("pipe.msafe")
        assert type(bundle.model).__name__ == "TextClassificationPipeline"
        got, expected = bundle.predict({TEXTS!r}), json.load(open("expected.json"))
        assert [[r["label"] for r in row] for row in got] == [[r["label"] for r in row] for row in expected]
        assert all(abs(a["score"] - b["score"]) < 1e-6 for x, y in zip(got, expected) for a, b in zip(x, y))
        assert len(got[0]) == 2                               # top_k=2 was saved with the pipeline
    """)


def test_load_needs_no_network_even_with_the_hub_variables_unset(tmp_path, fresh, classification_pipeline):
    ms.save(classification_pipeline, tmp_path / "pipe.msafe", sample=TEXTS)
    env = {name: "" for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")}
    proc = fresh("""
        import os, socket
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_ENABLE_HF_TRANSFER"):
            os.environ.pop(name, None)
        attempts = []
        def refuse(self, address, *args):
            attempts.append(address)
            raise OSError("network blocked by the test")
        socket.socket.connect = refuse
        socket.socket.connect_ex = refuse
        socket.create_connection = lambda address, *a, **k: refuse(None, address)
        import transformers                                    # imported with the network variables unset
        import modelsafe as ms
        bundle = ms.load("pipe.msafe")
        assert bundle.verify().ok
        assert bundle.predict(["a cat"])[0][0]["label"].startswith("LABEL_")
        assert not attempts, attempts
        assert "HF_HUB_OFFLINE" not in os.environ             # the switches were held for the load only
        print("no network attempted")
    """, env=env)
    assert "no network attempted" in proc.stdout


def test_bundle_predict_is_the_model_on_the_tokenized_text_for_any_text(tmp_path, tokenizer, classifier):
    import numpy as np
    import torch

    ms.save(classifier, tmp_path / "m.msafe", preprocess=tokenizer, sample=TEXTS)
    bundle = ms.load(tmp_path / "m.msafe")

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.lists(st.text(min_size=0, max_size=80), min_size=1, max_size=4))
    def check(texts):
        with torch.no_grad():
            expected = classifier(**tokenizer(texts, padding=True, truncation=True, return_tensors="pt")).logits
        # Same computation; memory-mapped weights may take another SIMD path, so float32 rounding may differ.
        np.testing.assert_allclose(bundle.predict(texts, check=False), expected.numpy(), rtol=1e-5, atol=1e-7)

    check()
