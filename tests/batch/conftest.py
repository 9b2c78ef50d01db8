"""Fixtures of the batch tests: a fitted classifier saved as an artifact, and data files written from frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

FEATURES = [f"f{j}" for j in range(5)]


def make_frame(rows: int, seed: int = 1):
    """``rows`` rows of the five features (and an int32 ``id`` and a text ``tag`` the model does not use)."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(rows, len(FEATURES))), columns=FEATURES)
    frame["id"] = np.arange(rows, dtype=np.int32)
    frame["tag"] = np.where(frame["f1"] > 0, "up", "down")
    return frame


@pytest.fixture(scope="session")
def classifier(tmp_path_factory):
    """(artifact path, the fitted pipeline): StandardScaler + RandomForest on five named features, string labels."""
    import pandas as pd
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import modelsafe as ms

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(2000, len(FEATURES))), columns=FEATURES)
    y = np.select([X["f0"] > 0.5, X["f0"] < -0.5], ["high", "low"], "mid")
    model = make_pipeline(StandardScaler(), RandomForestClassifier(10, max_depth=8, random_state=0)).fit(X, y)
    path = tmp_path_factory.mktemp("model") / "forest.msafe"
    ms.save(model, path, sample=X.iloc[:64], training_data=X)
    return path, model


@pytest.fixture(scope="session")
def logistic(tmp_path_factory):
    """(artifact path, model): StandardScaler + LogisticRegression, which refuses NaN (a row-level failure)."""
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import modelsafe as ms

    rng = np.random.default_rng(3)
    X = pd.DataFrame(rng.normal(size=(500, 2)), columns=["x", "y"])
    X["count"] = rng.integers(0, 10, 500)
    labels = (X["x"] + X["count"] > 4).astype(int)
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, labels)
    path = tmp_path_factory.mktemp("logistic") / "logistic.msafe"
    ms.save(model, path, sample=X.iloc[:40], training_data=X)
    return path, model


def write_parquet(frame, path: Path, row_group: int = 50_000) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=row_group)
    return path


@pytest.fixture(scope="session")
def rows():
    """``rows(n, seed=1)``: see :func:`make_frame`."""
    return make_frame


@pytest.fixture(scope="session")
def parquet():
    """``parquet(frame, path, row_group=50_000)``: the frame written as Parquet, in row groups."""
    return write_parquet


@pytest.fixture(scope="session")
def features():
    return list(FEATURES)
