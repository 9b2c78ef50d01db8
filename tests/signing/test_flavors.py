"""Every flavor, both forms: saved and signed in one process, loaded under signature="require" in another."""

from __future__ import annotations

import json

FLAVORS = ("sklearn", "torch", "keras", "xgboost", "lightgbm", "transformers", "python")

SAVE_AND_SIGN = """
import os
os.environ.setdefault("USE_TF", "0")
import numpy as np
import modelsafe as ms

rng = np.random.default_rng(0)
X = rng.normal(size=(80, 4)).astype("float32")
y = (X[:, 0] > 0).astype(int)


def scale(x):
    return np.asarray(x) * 2.0


def models():
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.linear_model import LogisticRegression
    yield "sklearn", make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y), X[:5], {}
    import torch
    torch.manual_seed(0)
    yield "torch", torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU()).eval(), torch.from_numpy(X[:5]), {}
    import keras
    net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    yield "keras", net, X[:5], {}
    import xgboost
    yield "xgboost", xgboost.XGBClassifier(n_estimators=5, max_depth=2).fit(X, y), X[:5], {}
    import lightgbm
    yield "lightgbm", lightgbm.LGBMClassifier(n_estimators=5, verbose=-1).fit(X, y), X[:5], {}
    from transformers import BertConfig, BertForSequenceClassification
    bert = BertForSequenceClassification(BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1,
                                                    num_attention_heads=2, intermediate_size=20)).eval()
    yield "transformers", bert, {"input_ids": torch.randint(0, 40, (2, 6))}, {}
    yield "python", scale, X[:5], {}


for flavor, model, sample, options in models():
    for form in ("file", "folder"):
        path = f"{flavor}.msafe" if form == "file" else flavor
        manifest = ms.save(model, path, sample=sample, **options)
        assert manifest.flavor == flavor, (flavor, manifest.flavor)
        assert ms.sign(path, key=KEY).ok
print("saved")
"""

LOAD = """
import os, json
os.environ.setdefault("USE_TF", "0")
import modelsafe as ms
loaded = {}
for flavor in FLAVORS:
    for path in (f"{flavor}.msafe", flavor):
        bundle = ms.load(path, signature="require", trusted_keys=[PUB], trust_code=True)
        loaded[path] = [bundle.manifest.flavor, bundle.verify().ok]
        bundle.close()
print(json.dumps(loaded))
"""


def test_every_flavor_round_trips_signed(tmp_path, keys, fresh):
    fresh.script("train.py", f"KEY = {str(keys.private)!r}\n" + SAVE_AND_SIGN, timeout=900)
    proc = fresh(f"FLAVORS = {FLAVORS!r}\nPUB = {str(keys.public)!r}\n" + LOAD, timeout=900)
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert loaded == {path: [flavor, True] for flavor in FLAVORS for path in (f"{flavor}.msafe", flavor)}
    for flavor in FLAVORS:
        assert (tmp_path / f"{flavor}.msafe.sig").is_file() and (tmp_path / f"{flavor}.sig").is_file()
