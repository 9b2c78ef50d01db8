"""MLflow interoperability (extra ``modelsafe[mlflow]``): :func:`log_model`, and the loader MLflow runs.

``modelsafe.mlflow.log_model(artifact, name, ...)`` logs an artifact as an MLflow model whose
``MLmodel`` names this module as its ``python_function`` ``loader_module``; ``mlflow.pyfunc.load_model``
then calls :func:`_load_pyfunc`, which loads the artifact with every check of ``ms.load``.
``ms.export(path, folder, to="mlflow")`` writes the same folder, and ``ms.convert`` reads MLflow
models (see :mod:`modelsafe.integrations`). Importing this module does not import MLflow.
"""

from __future__ import annotations

from modelsafe.integrations.mlflow import _load_pyfunc, log_model  # noqa: F401 - MLflow calls _load_pyfunc

__all__ = ["log_model"]
