"""The one compiled module; everything else about the package is in pyproject.toml.

``modelsafe._native`` holds two loops: the async checkpoint snapshot's copy with
streaming stores, and the bounds check of scikit-learn tree nodes. It is optional:
without a C compiler the install still succeeds, and both run in numpy instead (same
results; the snapshot copy and a forest's tree check each about 1.5-2x slower).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("modelsafe._native", ["src/modelsafe/_native.c"], optional=True)])
