"""The one compiled module; everything else about the package is in pyproject.toml.

``modelsafe._streamcopy`` is the async checkpoint snapshot's copy with streaming stores.
It is optional: without a C compiler the install still succeeds, and the snapshot is
copied with numpy instead (correct, about 1.5x slower).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("modelsafe._streamcopy", ["src/modelsafe/_streamcopy.c"], optional=True)])
