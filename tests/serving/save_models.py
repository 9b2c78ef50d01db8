"""Saves the artifacts the serving tests serve (run as ``python save_models.py DIR`` in a fresh process).

Each model is saved here and served by another process, the way a model moves to a
service; the tests compare the server's answers with the same artifacts loaded in-process.
"""

import pathlib
import sys
import time

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import modelsafe as ms

out = pathlib.Path(sys.argv[1])
rng = np.random.default_rng(0)

# A classifier pipeline on a DataFrame (float, int and float columns), with metadata a user
# controls: HTML and script in it must reach the model card page as text.
frame = pd.DataFrame({"income": rng.normal(50, 10, 400), "age": rng.integers(18, 80, 400),
                      "score": rng.normal(size=400)})
labels = (frame["income"] + 5 * frame["score"] > 50).astype(int)
pipe = make_pipeline(StandardScaler(), LogisticRegression()).fit(frame, labels)
metadata = {
    "owner": "<script>document.body.setAttribute('data-pwned', '1'); window.__xss = 1; alert('xss')</script>",
    "note": "<img src=x onerror=\"document.title='pwned'; window.__xss = 2; alert(2)\">",
    "team": "risk & pricing",
}
ms.save(pipe, out / "pipe.msafe", sample=frame.iloc[:40], training_data=frame, metadata=metadata)

# A regressor on a plain float array (one 2-D input tensor in the v2 protocol).
X = rng.normal(size=(600, 4))
y = X @ np.array([1.0, 2.0, 3.0, 4.0]) + rng.normal(size=600)
ms.save(RandomForestRegressor(30, random_state=0).fit(X, y), out / "forest.msafe", sample=X[:40], training_data=X)

# A linear model on a DataFrame: every distinct row gets a distinct prediction (the load test).
wide = pd.DataFrame(rng.normal(size=(500, 4)), columns=["f0", "f1", "f2", "f3"])
ms.save(make_pipeline(StandardScaler(), Ridge()).fit(wide, wide @ np.array([1.0, -2.0, 3.0, 0.5])),
        out / "linear.msafe", sample=wide.iloc[:40], training_data=wide)

# A text classifier: a list of texts in, BYTES tensors in the v2 protocol.
texts = ["good service", "bad food", "great staff", "awful wait", "good food", "terrible service"] * 10
sentiment = [1, 0, 1, 0, 1, 0] * 10
ms.save(make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(texts, sentiment), out / "texts.msafe",
        sample=texts[:12])

# The forest the micro-batching benchmark uses, kept small for tests: one call per batch matters.
ms.save(RandomForestClassifier(20, random_state=0).fit(X, y > 0), out / "rf.msafe", sample=X[:40])


class SlowScorer:
    """Sums each row, after marking that it started and sleeping (the drain test's in-flight request)."""

    def __init__(self, marker, delay):
        self.marker = marker
        self.delay = delay

    def predict(self, x):
        pathlib.Path(self.marker).touch()
        time.sleep(self.delay)
        return np.asarray(x).sum(axis=1)


ms.save(SlowScorer(str(out / "slow-started"), 1.5), out / "slow.msafe", sample=np.ones((2, 3)))
print("saved")
