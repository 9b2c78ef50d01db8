"""Every flavor through s3:// (moto's server on loopback): saved here as a single file and as a folder,
loaded in a fresh process with every check of ``load`` (verification replay included), predicting what
the model predicted here."""

from __future__ import annotations

import json

import numpy as np
import pytest

import modelsafe as ms

X = np.random.default_rng(0).normal(size=(40, 4)).astype("float32")
Y = (X[:, 0] + X[:, 1] > 0).astype(int)
TEXTS = ["the cat sat", "a red dog ran", "save the model"]


def _sklearn():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, Y)
    return model, {"sample": X[:8]}, lambda m: m.predict_proba(X[:5])


def _python():
    model = {"weights": np.arange(300_000, dtype=np.float64), "labels": ["a", "b"], "scale": 0.5}
    return model, {}, lambda m: [float(m["weights"].sum()), m["labels"], m["scale"]]


def _torch():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2)).eval()
    with torch.no_grad():
        expected = model(torch.from_numpy(X[:5])).numpy()
    return model, {"sample": X[:8]}, lambda m: expected


def _keras():
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)])
    return model, {"sample": X[:8]}, lambda m: m.predict(X[:5], verbose=0)


def _xgboost():
    xgb = pytest.importorskip("xgboost")
    model = xgb.XGBClassifier(n_estimators=5, max_depth=2).fit(X, Y)
    return model, {"sample": X[:8]}, lambda m: m.predict_proba(X[:5])


def _lightgbm():
    lgb = pytest.importorskip("lightgbm")
    model = lgb.LGBMClassifier(n_estimators=5, num_leaves=4, min_child_samples=2, verbose=-1).fit(X, Y)
    return model, {"sample": X[:8]}, lambda m: m.predict_proba(X[:5])


def _transformers():
    pytest.importorskip("transformers")
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        PreTrainedTokenizerFast,
    )

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted({w for t in TEXTS for w in t.split()})]
    backend = Tokenizer(models.WordPiece(vocab={w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]",
                                        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=20, max_position_embeddings=16, num_labels=2)
    model = BertForSequenceClassification(config).eval()
    with torch.no_grad():
        logits = model(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits.numpy()
    return model, {"preprocess": tokenizer, "sample": TEXTS}, lambda m: logits


FLAVORS = {"sklearn": _sklearn, "python": _python, "torch": _torch, "keras": _keras, "xgboost": _xgboost,
           "lightgbm": _lightgbm, "transformers": _transformers}


def test_every_flavor_round_trips_through_s3_in_a_fresh_process(s3, fresh):
    expected, urls = {}, {}
    for name, build in FLAVORS.items():
        model, save_kwargs, predict = build()
        base = f"s3://{s3['bucket']}/{name}"
        for url in (f"{base}.msafe", f"{base}-folder"):
            assert ms.save(model, url, storage_options=s3["options"], **save_kwargs).flavor == name
            urls[url] = name
        expected[name] = predict(model)
    out = fresh(f"""
        import json, numpy as np, modelsafe as ms
        X = np.random.default_rng(0).normal(size=(40, 4)).astype("float32")
        TEXTS = {TEXTS!r}
        for url, name in {urls!r}.items():
            bundle = ms.load(url, storage_options={s3['options']!r})
            if name == "python":
                m = bundle.model
                got = [float(m["weights"].sum()), m["labels"], m["scale"]]
            elif name in ("sklearn", "xgboost", "lightgbm"):
                got = bundle.predict_proba(X[:5])
            else:
                got = bundle.predict(TEXTS if name == "transformers" else X[:5])
            verified = bundle.verify().ok if bundle.manifest.verification is not None else None
            print(json.dumps({{"url": url, "flavor": bundle.manifest.flavor, "verified": verified,
                               "got": np.asarray(got).tolist() if hasattr(got, "shape") else got}}))
    """)
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert sorted(r["url"] for r in rows) == sorted(urls)
    for row in rows:
        name = urls[row["url"]]
        assert row["flavor"] == name and row["verified"] is (None if name == "python" else True), row
        got, want = row["got"], expected[name]
        if name == "python":
            assert got == want
        else:
            assert np.allclose(np.asarray(got, dtype=float), np.asarray(want, dtype=float), atol=1e-5), name
