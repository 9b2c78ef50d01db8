"""Other tools' model formats: a modelsafe artifact as an MLflow model, and MLflow models into artifacts.

``mlflow_export``: the MLflow model folder of an artifact (``ms.export(to="mlflow")`` and the flavor
``modelsafe.mlflow.log_model`` logs with); ``mlflow_pyfunc``: what ``mlflow.pyfunc.load_model`` runs
(``ms.load`` with every check, then predictions through the input guard); ``mlflow``: ``log_model``;
``mlflow_convert``: ``ms.convert`` of an MLflow model folder or a ``models:/`` / ``runs:/`` URI.
Reading an ``MLmodel`` file (which flavor, which files, what blocks a safe conversion) lives in
:mod:`modelsafe.diagnosis.mlflow_folder`, shared with ``doctor``.

Nothing here imports MLflow until it is called; the public face is :mod:`modelsafe.mlflow`.
"""
