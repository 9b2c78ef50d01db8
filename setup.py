"""The one compiled module; everything else about the package is in pyproject.toml.

``modelsafe._native`` holds three loops: the async checkpoint snapshot's copy with
streaming stores, the bounds check of scikit-learn tree nodes, and the fast path of the
pickle-opcode reader (``_native_pickle.c``). It is optional: without a C compiler the
install still succeeds, the first two run in numpy instead (same results; the snapshot
copy and a forest's tree check each about 1.5-2x slower) and the opcode reader in pure
Python (same results; a scikit-learn forest's stream is read about 70x slower, and load's
audit of it, which also replays it in CPython's unpickler, about 10x slower).
"""

from setuptools import Extension, setup

_SOURCES = ["src/modelsafe/_native.c", "src/modelsafe/_native_pickle.c"]

setup(ext_modules=[Extension("modelsafe._native", _SOURCES, optional=True)])
