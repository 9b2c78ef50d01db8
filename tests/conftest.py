"""Shared fixtures: fresh-process runs, small data sets, Keras environment."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import zipfile
from pathlib import Path

import pytest

# Keras must never touch the user's home and must use TensorFlow.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("KERAS_HOME", tempfile.mkdtemp(prefix="modelsafe-keras-home-"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The verified-hash cache goes to a folder of this run, never the user's ~/.cache.
os.environ.setdefault("MODELSAFE_CACHE_DIR", tempfile.mkdtemp(prefix="modelsafe-cache-"))

REPO = Path(__file__).resolve().parents[1]


class FreshProcess:
    """Run Python code in a new interpreter, the way a user moves a model to a service."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd

    def __call__(self, code: str, *, check: bool = True, cwd: Path | None = None,
                 env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, **(env or {})}
        full_env.pop("PYTHONPATH", None)
        proc = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            cwd=str(cwd or self.cwd), env=full_env, capture_output=True, text=True, timeout=timeout,
        )
        return self._checked(proc, check)

    def script(self, filename: str, code: str, *, check: bool = True, cwd: Path | None = None,
               timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """Write ``code`` to ``filename`` and run it as ``__main__``, the way ``python train.py`` does."""
        folder = cwd or self.cwd
        path = folder / filename
        path.write_text(textwrap.dedent(code))
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        proc = subprocess.run([sys.executable, str(path)], cwd=str(folder), env=env, capture_output=True,
                              text=True, timeout=timeout)
        return self._checked(proc, check)

    @staticmethod
    def _checked(proc: subprocess.CompletedProcess[str], check: bool) -> subprocess.CompletedProcess[str]:
        if check and proc.returncode != 0:
            raise AssertionError(
                f"fresh process failed (exit {proc.returncode}):\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
            )
        return proc


@pytest.fixture
def fresh(tmp_path: Path) -> FreshProcess:
    """``fresh(code)`` runs ``code`` in a new interpreter with ``tmp_path`` as working dir."""
    return FreshProcess(tmp_path)


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "modelsafe", *args], capture_output=True, text=True,
                          cwd=str(cwd) if cwd else None, timeout=600)


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope="session")
def classification_data():
    import numpy as np

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5))
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)
    return X, y


def _flip_byte(path: Path, member: str) -> None:
    if path.is_dir():
        target = path / member
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0xFF
        target.write_bytes(bytes(data))
        return
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
    raw = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(_local_extra(raw, info))
    raw[start + info.file_size // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


def _local_extra(raw: bytearray, info: zipfile.ZipInfo) -> bytes:
    import struct

    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26 : info.header_offset + 30])
    start = info.header_offset + 30 + name_len
    return bytes(raw[start : start + extra_len])


@pytest.fixture
def flip_byte():
    """``flip_byte(artifact, member)`` inverts one byte in the middle of a member, in place."""
    return _flip_byte

