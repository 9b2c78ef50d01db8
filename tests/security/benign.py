"""Benign model files of every kind the scanner reads, made with the real frameworks (never a payload).

:func:`build` writes them into a folder and returns their names with what each one is.
Each must scan ``ok`` (or, for files that are not models, be refused as "not a model file",
exit code 2), and ``doctor`` must not report a security problem for it. The tests and
``bench/bench_corpus.py`` use the same set.
"""

from __future__ import annotations

import gzip
import io
import json
import pickle
import struct
import subprocess
import tarfile
import zipfile
import zlib
from pathlib import Path

#: Files that are not models: refused as such (FormatError, exit code 2), never reported unsafe.
NOT_MODELS = ("image_named.pt", "notes.txt", "encrypted.zip")


def _png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    pixels = zlib.compress(b"\x00\xff\x00\x00" * 1)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))


def _sklearn(folder: Path, out: dict[str, str]) -> None:
    import joblib
    import numpy as np
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 6))
    y = (X[:, 0] > 0).astype(int)
    forest = make_pipeline(FunctionTransformer(np.log1p), StandardScaler(),
                           RandomForestClassifier(200, random_state=0)).fit(np.abs(X), y)
    for protocol in (2, 5):
        (folder / f"forest_p{protocol}.pkl").write_bytes(pickle.dumps(forest, protocol=protocol))
        out[f"forest_p{protocol}.pkl"] = f"RandomForest(200) pipeline, pickle protocol {protocol}"
    joblib.dump(forest, folder / "forest.joblib", compress=3)
    out["forest.joblib"] = "the same pipeline, joblib with zlib compression"
    hgb = HistGradientBoostingClassifier(max_iter=10).fit(X, y)
    joblib.dump(hgb, folder / "hgb.joblib")
    out["hgb.joblib"] = "HistGradientBoostingClassifier, joblib"
    (folder / "logreg.pkl.gz").write_bytes(gzip.compress(pickle.dumps(LogisticRegression().fit(X, y)), mtime=0))
    out["logreg.pkl.gz"] = "gzip'd pickle"
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w:gz") as tf:
        data = pickle.dumps(LogisticRegression().fit(X, y))
        info = tarfile.TarInfo("model/logreg.pkl")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    (folder / "logreg.tar.gz").write_bytes(tar.getvalue())
    out["logreg.tar.gz"] = "a .tar.gz holding a pickle"
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("bundle/logreg.tar.gz", tar.getvalue())
    (folder / "zip_of_tgz.zip").write_bytes(zipped.getvalue())
    out["zip_of_tgz.zip"] = "a zip holding that .tar.gz"
    inner = pickle.dumps({"coef": [0.5, 1.5]})
    (folder / "nested_bytes.pkl").write_bytes(pickle.dumps({"cache": inner, "b64": __import__("base64").b64encode(
        inner).decode()}, protocol=4))
    out["nested_bytes.pkl"] = "a pickle holding a benign pickle as bytes and as base64"


def _torch(folder: Path, out: dict[str, str]) -> None:
    import torch
    from torch import nn

    torch.manual_seed(0)
    state = {"w": torch.randn(3, 4), "step": 3}
    torch.save(state, folder / "state.pt")
    torch.save(state, folder / "state_legacy.pt", _use_new_zipfile_serialization=False)
    out.update({"state.pt": "torch state dict", "state_legacy.pt": "torch state dict, legacy format"})
    layers = {
        "whole_mlp.pt": nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.1), nn.Linear(8, 2), nn.Softmax(dim=1)),
        "whole_conv.pt": nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.MaxPool2d(2), nn.Flatten(),
                                       nn.LayerNorm(4), nn.GELU()),
        "whole_rnn.pt": nn.ModuleDict({"lstm": nn.LSTM(4, 8, batch_first=True), "gru": nn.GRU(4, 4),
                                       "emb": nn.Embedding(10, 4)}),
        "whole_transformer.pt": nn.TransformerEncoderLayer(8, 2, dim_feedforward=16),
    }
    for name, module in layers.items():
        torch.save(module, folder / name)
        out[name] = f"whole-module torch.save of {type(module).__name__}"
    torch.jit.script(layers["whole_mlp.pt"]).save(str(folder / "scripted.pt"))
    out["scripted.pt"] = "TorchScript archive (torch.jit.script)"
    conv = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    torch.jit.trace(conv.eval(), torch.randn(1, 3, 8, 8)).save(str(folder / "traced.pt"))
    out["traced.pt"] = "TorchScript archive (torch.jit.trace)"


def _arrays_and_keras(folder: Path, out: dict[str, str]) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    np.save(folder / "array.npy", np.arange(12.0))
    np.savez_compressed(folder / "arrays.npz", x=np.arange(10), y=np.ones(3))
    save_file({"w": np.ones((2, 3), dtype=np.float32)}, str(folder / "weights.safetensors"))
    out.update({"array.npy": ".npy", "arrays.npz": ".npz", "weights.safetensors": "safetensors"})
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="relu"), keras.layers.Dense(1)])
    model.save(folder / "model.keras")
    model.save(folder / "model.h5")
    out.update({"model.keras": "Keras 3 .keras", "model.h5": "Keras .h5"})
    import tensorflow as tf

    class Doubler(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def __call__(self, x):
            return 2 * x

    tf.saved_model.save(Doubler(), str(folder / "savedmodel"))
    out["savedmodel"] = "TensorFlow SavedModel (math only)"


def _small(folder: Path, out: dict[str, str]) -> None:
    (folder / "len_reference.pkl").write_bytes(pickle.dumps(len))
    (folder / "future_annotations.pkl").write_bytes(b"\x80\x04c__future__\nannotations\n.")
    (folder / "image_named.pt").write_bytes(_png())
    (folder / "notes.txt").write_text("learning_rate: 0.1\nepochs: 3\n")
    (folder / "config.json").write_text(json.dumps({"hidden": 8, "layers": 2}))
    out.update({"len_reference.pkl": "a bare reference to builtins.len",
                "future_annotations.pkl": "a bare reference to __future__.annotations",
                "image_named.pt": "a PNG image named .pt", "notes.txt": "a text file",
                "config.json": "a JSON config"})
    (folder / "inner.pkl").write_bytes(pickle.dumps({"w": [1.0, 2.0]}))
    subprocess.run(["zip", "-q", "-P", "secret", "-j", str(folder / "encrypted.zip"), str(folder / "inner.pkl")],
                   check=True)
    (folder / "inner.pkl").unlink()
    out["encrypted.zip"] = "a password-protected zip of a pickle"


def _artifact(folder: Path, out: dict[str, str]) -> None:
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    import modelsafe as ms

    X = np.random.default_rng(0).normal(size=(40, 3))
    ms.save(LogisticRegression().fit(X, X[:, 0] > 0), folder / "model.msafe", sample=X[:4])
    out["model.msafe"] = "modelsafe artifact"


def build(folder: Path) -> dict[str, str]:
    """Write the benign set into ``folder``; return ``{name: what it is}``."""
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, str] = {}
    for part in (_sklearn, _torch, _arrays_and_keras, _small, _artifact):
        part(folder, out)
    return out


OLD_SKLEARN = """
import pickle, warnings, numpy as np
from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.linear_model import PoissonRegressor
warnings.simplefilter("ignore")
X = np.abs(np.random.default_rng(0).normal(size=(80, 4))) + 0.1
y = (X[:, 0] > 1).astype(int)
for name, model, target in (("hgb_classifier", HistGradientBoostingClassifier(max_iter=5), y),
                            ("hgb_regressor", HistGradientBoostingRegressor(max_iter=5), X[:, 0]),
                            ("gradient_boosting", GradientBoostingClassifier(n_estimators=5), y),
                            ("poisson", PoissonRegressor(), X[:, 0])):
    pickle.dump(model.fit(X, target), open(f"old_sklearn_{name}.pkl", "wb"), protocol=4)
"""


def build_old_sklearn(folder: Path, python: Path) -> dict[str, str]:
    """Pickles written by an older scikit-learn (``python``: its interpreter), whose Cython losses
    pickle through ``__pyx_unpickle_<Type>`` reconstructors."""
    subprocess.run([str(python), "-c", OLD_SKLEARN], cwd=folder, check=True, capture_output=True)
    version = subprocess.run([str(python), "-c", "import sklearn; print(sklearn.__version__)"], check=True,
                             capture_output=True, text=True).stdout.strip()
    return {p.name: f"{p.stem[12:]} pickled by scikit-learn {version}" for p in sorted(folder.glob("old_sklearn_*.pkl"))}
