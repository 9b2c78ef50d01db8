"""The MLflow model folder of an artifact: ``ms.export(path, folder, to="mlflow")`` and the flavor
:func:`modelsafe.mlflow.log_model` logs with (MLflow's ``Model.log`` calls :func:`save_model`).

The folder is what ``mlflow.pyfunc.save_model`` writes with a ``loader_module`` (no pickled
``PythonModel``): ``MLmodel`` with a ``python_function`` flavor whose loader is
:mod:`modelsafe.mlflow` and whose data is the artifact itself (``data/<name>.msafe``, byte for
byte, so its manifest's digests still vouch for it), ``requirements.txt``, ``python_env.yaml`` and
``conda.yaml`` from the environment the artifact recorded (its Python version and requirements,
plus modelsafe), the MLflow ``signature`` inferred from the verification sample (the rows the
input schema was recorded from; the ``method`` parameter picks ``predict_proba`` and the others)
and that sample as the ``input_example``. The artifact is loaded first with every check of
``ms.load``, so nothing unverified is exported.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

from modelsafe._version import __version__
from modelsafe.errors import SaveError
from modelsafe.integrations.mlflow_pyfunc import LOAD_DEFAULTS

if TYPE_CHECKING:
    from modelsafe.artifact.manifest import Manifest
    from modelsafe.checks.verify import Sample

__all__ = ["LOADER_MODULE", "export_mlflow", "save_model"]

#: The ``loader_module`` every exported ``MLmodel`` names (see :mod:`modelsafe.integrations.mlflow_pyfunc`).
LOADER_MODULE = "modelsafe.mlflow"


def export_mlflow(path: str | os.PathLike[str], destination: str | os.PathLike[str], *, overwrite: bool = False,
                  signature: Any = None, input_example: Any = None, pip_requirements: Sequence[str] | None = None,
                  extra_pip_requirements: Sequence[str] | None = None, metadata: Mapping[str, Any] | None = None,
                  **load_options: Any) -> Path:
    """Write the MLflow model folder of the artifact at ``path`` to ``destination``; return it.

    ``signature`` and ``input_example`` are MLflow's (``None``: from the verification sample;
    ``False``: none); ``load_options`` are ``ms.load``'s keywords for the check before writing
    (``trust_code=``, ``trusted=``, ``env=``, ``trusted_keys=``). An existing MLflow model folder is
    replaced only with ``overwrite=True``; the folder appears complete or not at all.

    Examples
    --------
    >>> import modelsafe as ms
    >>> ms.export("model.msafe", "model-mlflow", to="mlflow")   # doctest: +SKIP
    PosixPath('model-mlflow')
    """
    destination = Path(destination)
    _check_destination(destination, overwrite)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        save_model(staging / "model", artifact=path, signature=signature, input_example=input_example,
                   pip_requirements=pip_requirements, extra_pip_requirements=extra_pip_requirements,
                   metadata=metadata, **load_options)
        if destination.exists():
            shutil.rmtree(destination)
        os.replace(staging / "model", destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return destination


def save_model(path: str | os.PathLike[str], mlflow_model: Any = None, *, artifact: Any, signature: Any = None,
               input_example: Any = None, pip_requirements: Sequence[str] | None = None,
               extra_pip_requirements: Sequence[str] | None = None, metadata: Mapping[str, Any] | None = None,
               validate_serving_input: bool = True, **load_options: Any) -> None:
    """Write the MLflow model folder of ``artifact`` at ``path`` (MLflow's flavor ``save_model`` contract).

    ``validate_serving_input`` is read by MLflow's ``Model.log`` (which passes it on here too).
    """
    import mlflow.pyfunc
    from mlflow.models import Model

    from modelsafe._api import load

    del validate_serving_input
    with _local(artifact, load_options.get("storage_options")) as local:
        with load(local, **load_options) as bundle:  # every check of ms.load before anything leaves
            manifest, sample = bundle.manifest, bundle.sample()
        if signature is None:
            signature = _signature(sample)
        if input_example is None:
            input_example = _example(sample)
        mlflow_model = Model() if mlflow_model is None else mlflow_model
        mlflow.pyfunc.save_model(
            os.fspath(path), loader_module=LOADER_MODULE, data_path=str(local), mlflow_model=mlflow_model,
            signature=None if signature is False else signature,
            input_example=None if input_example is False else input_example,
            pip_requirements=_requirements(manifest, pip_requirements, extra_pip_requirements),
            metadata=dict(metadata) if metadata else None, model_config=dict(LOAD_DEFAULTS))
    _record_python(Path(path), mlflow_model, manifest)


@contextlib.contextmanager
def _local(artifact: Any, storage_options: Mapping[str, Any] | None) -> Iterator[Path]:
    """The artifact as a local path (a URL is copied to a private temporary folder first)."""
    from modelsafe.artifact.location import is_url

    if not is_url(artifact):
        yield Path(artifact)
        return
    from modelsafe._staging import staged

    with staged(artifact, storage_options) as local:
        yield local


def _check_destination(destination: Path, overwrite: bool) -> None:
    if not (destination.exists() or destination.is_symlink()):
        destination.parent.mkdir(parents=True, exist_ok=True)
        return
    if not overwrite:
        raise SaveError(f"{str(destination)!r} already exists and overwrite=False: exporting would replace it. "
                        "Pass overwrite=True to replace it, or choose a new folder.", path=str(destination))
    if not (destination / "MLmodel").is_file():
        raise SaveError(f"{str(destination)!r} exists and is not an MLflow model folder (it has no MLmodel file); "
                        "overwrite=True only replaces MLflow model folders, so nothing was deleted. Choose another "
                        "folder.", path=str(destination))


def _requirements(manifest: "Manifest", given: Sequence[str] | None, extra: Sequence[str] | None) -> list[str]:
    """``requirements.txt``: the recorded requirements and modelsafe (or the caller's), then ``extra``."""
    if given is not None:
        return [*given, *(extra or ())]
    recorded = [str(r) for r in manifest.environment.get("requirements", ())]
    if not any(_name(r) == "modelsafe" for r in recorded):
        recorded.append(f"modelsafe=={__version__}")
    return [*recorded, *(extra or ())]


def _name(requirement: str) -> str:
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        return Requirement(requirement).name.lower()
    except InvalidRequirement:
        return requirement.lower()


def _record_python(path: Path, mlflow_model: Any, manifest: "Manifest") -> None:
    """The Python version the artifact was saved with, in ``MLmodel``, ``python_env.yaml`` and ``conda.yaml``
    (MLflow writes the exporting interpreter's)."""
    import yaml
    from mlflow.utils.environment import _PythonEnv

    version = (manifest.environment.get("python") or {}).get("version")
    if not version:
        return
    mlflow_model.flavors["python_function"]["python_version"] = version
    mlflow_model.save(str(path / "MLmodel"))
    python_env = path / "python_env.yaml"
    if python_env.is_file():
        recorded = _PythonEnv.from_yaml(str(python_env))
        _PythonEnv(python=version, build_dependencies=recorded.build_dependencies,
                   dependencies=recorded.dependencies).to_yaml(str(python_env))
    conda = path / "conda.yaml"
    if conda.is_file():
        env = yaml.safe_load(conda.read_text(encoding="utf-8")) or {}
        env["dependencies"] = [f"python={version}" if isinstance(d, str) and d.startswith("python=") else d
                               for d in env.get("dependencies", [])]
        conda.write_text(yaml.safe_dump(env, default_flow_style=False, sort_keys=False), encoding="utf-8")


def _signature(sample: "Sample | None") -> Any:
    """MLflow's signature of the sample's inputs and recorded ``predict`` outputs, with the ``method`` param."""
    example = _example(sample)
    if example is None or sample is None:
        return None
    from mlflow.models import infer_signature

    outputs = sample.outputs.get("predict")
    if outputs is None and sample.outputs:
        outputs = next(iter(sample.outputs.values()))
    with warnings.catch_warnings():  # the schema already says which columns hold missing values
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
        return infer_signature(example, outputs, params={"method": "predict"})


def _example(sample: "Sample | None") -> Any:
    """The sample's inputs as MLflow takes them (a frame, an array, a dict of arrays, a list of texts), or None
    when MLflow has no form for them (positional inputs of a multi-input model)."""
    if sample is None:
        return None
    return _mlflow_value(sample.inputs)


def _mlflow_value(value: Any) -> Any:
    import numpy as np

    if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch tensor (torch is not imported here)
        return value.detach().cpu().numpy()
    if isinstance(value, dict):
        converted = {k: _mlflow_value(v) for k, v in value.items()}
        return converted if all(isinstance(v, np.ndarray) for v in converted.values()) else None
    if isinstance(value, (list, tuple)):
        return list(value) if all(isinstance(v, str) for v in value) else None
    return value
