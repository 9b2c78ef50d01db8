"""Shared pieces of the portable-member tests: data, a crafted-member writer, the frameworks a runtime must not import."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

#: Modules an ONNX load must never import.
FRAMEWORKS = ("sklearn", "xgboost", "lightgbm", "torch", "keras", "tensorflow", "skl2onnx", "onnxmltools", "onnx")


@pytest.fixture(scope="session")
def frameworks() -> tuple[str, ...]:
    return FRAMEWORKS


@pytest.fixture(scope="session")
def frame():
    import pandas as pd

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"income": rng.normal(50, 10, 400), "age": rng.integers(18, 80, 400),
                       "city": rng.choice(["paris", "lyon", "nice"], 400)})
    y = ((df["income"] > 50) & (df["city"] != "nice")).astype(int)
    return df, y


@pytest.fixture(scope="session")
def numbers():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(400, 4))
    y = (X[:, 0] + 0.5 * X[:, 1] - X[:, 2] > 0).astype(int)
    return X, y


def replace_member(folder: Path, member: str, data: bytes) -> None:
    """Write ``data`` as ``member`` of the folder artifact and record its hash: an artifact made that way on purpose
    (a hostile producer), not a corrupted one."""
    (folder / member).parent.mkdir(parents=True, exist_ok=True)
    (folder / member).write_bytes(data)
    manifest = json.loads((folder / "modelsafe.json").read_text())
    manifest["members"][member] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (folder / "modelsafe.json").write_text(json.dumps(manifest))


def edit_manifest(folder: Path, change) -> None:
    manifest = json.loads((folder / "modelsafe.json").read_text())
    change(manifest)
    (folder / "modelsafe.json").write_text(json.dumps(manifest))


@pytest.fixture
def replace():
    return replace_member


@pytest.fixture
def manifest_edit():
    return edit_manifest
