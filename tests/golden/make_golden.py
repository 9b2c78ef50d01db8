"""Write the golden artifacts of the current format version into ``tests/golden/v<N>/``.

Run once per format version, with the project's environment, from the repository root:
``.venv/bin/python tests/golden/make_golden.py``. The artifacts are small and committed;
``tests/test_golden.py`` loads every one of them in a fresh process, so each later change
must keep reading them, or bump the format version and add a reader for the old one.
Nothing here is random: fixed seeds, small models.

Each artifact's expected predictions are stored beside it (``<name>.expected.npy``) from
the original object, so the test checks the model itself and not only its own sample.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # golden_code.py: the custom code a golden artifact bundles

os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    X = rng.normal(size=(80, 4)).astype(np.float32)
    return X, (X[:, 0] + X[:, 1] > 0).astype(np.int64)


def sklearn_pipeline(folder: Path) -> Any:
    import pandas as pd
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    import modelsafe as ms

    X, y = _data()
    df = pd.DataFrame({"a": X[:, 0].astype(float), "b": X[:, 1].astype(float),
                       "c": np.where(X[:, 2] > 0, "up", "down")})
    model = make_pipeline(make_column_transformer((OneHotEncoder(), ["c"]), (StandardScaler(), ["a", "b"])),
                          LogisticRegression()).fit(df, y)
    ms.save(model, folder / "sklearn_pipeline.msafe", sample=df.iloc[:10])
    return model.predict_proba(df.iloc[:10])


def sklearn_forest_folder(folder: Path) -> Any:
    from sklearn.ensemble import RandomForestClassifier

    import modelsafe as ms

    X, y = _data()
    model = RandomForestClassifier(4, max_depth=3, random_state=0).fit(X, y)
    ms.save(model, folder / "sklearn_forest", sample=X[:10])  # the folder form
    return model.predict_proba(X[:10])


def custom_code(folder: Path) -> Any:
    from golden_code import Shift
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    import modelsafe as ms

    X, y = _data()
    model = make_pipeline(Shift(1.5), LogisticRegression()).fit(X, y)
    ms.save(model, folder / "custom_code.msafe", sample=X[:10])
    return model.predict_proba(X[:10])


def torch_mlp(folder: Path) -> Any:
    import torch

    import modelsafe as ms

    torch.manual_seed(0)
    X, _ = _data()
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).eval()
    ms.save(model, folder / "torch_mlp.msafe", sample=X[:10])
    with torch.no_grad():
        return model(torch.from_numpy(X[:10])).numpy()


def keras_sequential(folder: Path) -> Any:
    import keras

    import modelsafe as ms

    keras.utils.set_random_seed(0)
    X, _ = _data()
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6, activation="relu"), keras.layers.Dense(2)])
    ms.save(model, folder / "keras_sequential.msafe", sample=X[:10])
    return model.predict(X[:10], verbose=0)


def xgboost_classifier(folder: Path) -> Any:
    import xgboost

    import modelsafe as ms

    X, y = _data()
    model = xgboost.XGBClassifier(n_estimators=8, max_depth=2, random_state=0).fit(X, y)
    ms.save(model, folder / "xgboost_classifier.msafe", sample=X[:10])
    return model.predict_proba(X[:10])


def lightgbm_regressor(folder: Path) -> Any:
    import lightgbm

    import modelsafe as ms

    X, y = _data()
    model = lightgbm.LGBMRegressor(n_estimators=8, num_leaves=4, min_child_samples=5, verbose=-1).fit(X, X[:, 0])
    ms.save(model, folder / "lightgbm_regressor.msafe", sample=X[:10])
    return model.predict(X[:10])


GOLDEN: dict[str, Callable[[Path], Any]] = {
    "sklearn_pipeline.msafe": sklearn_pipeline,
    "sklearn_forest": sklearn_forest_folder,
    "custom_code.msafe": custom_code,
    "torch_mlp.msafe": torch_mlp,
    "keras_sequential.msafe": keras_sequential,
    "xgboost_classifier.msafe": xgboost_classifier,
    "lightgbm_regressor.msafe": lightgbm_regressor,
}


def main() -> None:
    from modelsafe.artifact.manifest import FORMAT_VERSION

    folder = HERE / f"v{FORMAT_VERSION}"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    for name, make in GOLDEN.items():
        expected = make(folder)
        np.save(folder / f"{name.removesuffix('.msafe')}.expected.npy", np.asarray(expected))
        print(f"wrote {folder / name}")


if __name__ == "__main__":
    main()
