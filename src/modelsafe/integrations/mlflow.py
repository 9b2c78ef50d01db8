"""``modelsafe.mlflow.log_model``: log a modelsafe artifact to MLflow tracking as a first-class MLflow model.

The logged model is the folder :mod:`modelsafe.integrations.mlflow_export` writes (``MLmodel``
with modelsafe as the ``python_function`` loader, the ``.msafe`` artifact as its data), so
``mlflow.pyfunc.load_model("models:/name/1")``, ``mlflow models serve`` and the model registry
work as with any flavor, and every load runs modelsafe's checks. MLflow is imported when called.
"""

from __future__ import annotations

import os
from typing import Any

from modelsafe.integrations.mlflow_pyfunc import load_pyfunc

__all__ = ["log_model", "load_pyfunc"]


def log_model(artifact: str | os.PathLike[str], name: str, **mlflow_kwargs: Any) -> Any:
    """Log the artifact at ``artifact`` to the active MLflow run (or a new one) as the model ``name``.

    Parameters
    ----------
    artifact
        A modelsafe artifact (``.msafe`` file, folder, or URL). It is loaded with every check of
        ``ms.load`` before anything is logged.
    name
        The model's name in the run (MLflow's ``name``).
    **mlflow_kwargs
        MLflow's ``log_model`` keywords: ``registered_model_name``, ``tags``, ``params``,
        ``metadata``, ``run_id``, ``signature`` and ``input_example`` (default: from the
        artifact's verification sample; ``False`` for none), ``pip_requirements`` (default: the
        recorded requirements plus modelsafe), ``extra_pip_requirements``, ``await_registration_for``,
        ``validate_serving_input``... ``ms.load``'s keywords (``trust_code``, ``trusted``, ``env``,
        ``device``, ``trusted_keys``, ``storage_options``) apply to the check before logging.

    Returns
    -------
    mlflow.models.model.ModelInfo
        MLflow's record of the logged model (``model_uri``, ``registered_model_version``...).

    Examples
    --------
    >>> import mlflow, modelsafe.mlflow                                   # doctest: +SKIP
    >>> with mlflow.start_run():                                          # doctest: +SKIP
    ...     info = modelsafe.mlflow.log_model("churn.msafe", "churn", registered_model_name="churn")
    >>> mlflow.pyfunc.load_model("models:/churn/1").predict(rows)        # doctest: +SKIP
    """
    from mlflow.models import Model

    from modelsafe.integrations import mlflow_export

    artifact = os.fspath(artifact) if isinstance(artifact, os.PathLike) else artifact
    return Model.log(None, flavor=mlflow_export, name=name, artifact=artifact, **mlflow_kwargs)


#: What MLflow calls on the ``loader_module`` an exported ``MLmodel`` names.
_load_pyfunc = load_pyfunc
