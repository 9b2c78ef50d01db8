"""``ms.convert`` of an MLflow model: a folder with an ``MLmodel`` file, or a ``models:/`` / ``runs:/`` URI.

The pipeline: resolve a URI through the MLflow client (the tracking URI must be set) into a
private download -> read ``MLmodel`` and pick the native flavor (:mod:`modelsafe.diagnosis.mlflow_folder`,
doctor's reading too) -> refuse what blocks a safe conversion -> read the one model file as
``convert`` reads a legacy file: scanned first, pickles (scikit-learn, LightGBM, PyTorch) only
through the restricted unpickler with the caller's ``trusted``, Keras files through the Keras
reader; skops files through skops's audited loader with only the types modelsafe allows or the
caller trusts, then once more through the restricted unpickler (which checks every decision
tree); XGBoost and LightGBM native files through their own loaders after (LightGBM) or before
any prediction (XGBoost) modelsafe checks every tree -> ``ms.save`` with the MLflow input example
as the verification sample (typed by the signature) unless ``sample=`` is given -> verify.
``mlflow.*.load_model`` never runs: it would unpickle the file.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Collection, Iterator, Mapping

from modelsafe.artifact.location import is_url
from modelsafe.diagnosis.mlflow_folder import XGBOOST_CLASSES, MlflowModel, read_mlflow_model, skops_untrusted
from modelsafe.errors import FormatError, UnsupportedModelError, UntrustedContentError

if TYPE_CHECKING:
    from modelsafe.artifact.manifest import Manifest

__all__ = ["convert_mlflow"]

_URI_SCHEMES = ("models:/", "runs:/")


def convert_mlflow(src: Any, dst: Any, *, trusted: Collection[str] = (), sample: Any = None, overwrite: bool = False,
                   trust_code: bool = False, storage_options: Mapping[str, Any] | None = None,
                   **options: Any) -> "Manifest":
    """The MLflow branch of :func:`modelsafe.convert` (same arguments; see its docstring)."""
    from modelsafe import _convert
    from modelsafe._api import save

    _convert._check_keywords(options)
    trusted = tuple(trusted)
    with _local_model(src) as folder:
        model = read_mlflow_model(folder)
        _refuse_blockers(model)
        obj = _read(model, folder / str(model.file), trusted, trust_code)
        if sample is None:
            sample = _input_example(folder)
        manifest = save(obj, dst, sample=sample, overwrite=overwrite, storage_options=storage_options,
                        source=_source(src, folder, model, trusted), **options)
    if sample is not None and is_url(dst):
        from modelsafe._api import verify

        verify(dst, trusted=trusted, env="ignore", trust_code=trust_code,
               storage_options=storage_options).raise_if_failed()
    elif sample is not None:
        _convert._verify(Path(dst), trusted, trust_code)  # removes the artifact if it does not replay
    return manifest


@contextlib.contextmanager
def _local_model(src: Any) -> Iterator[Path]:
    """The model folder: ``src`` itself, or a URI downloaded through the MLflow client into a private folder."""
    text = os.fspath(src) if isinstance(src, os.PathLike) else str(src)
    if not text.startswith(_URI_SCHEMES):
        yield Path(text)
        return
    import mlflow.artifacts

    if not _tracking_uri_set():
        raise FormatError(
            f"Cannot resolve {text!r}: no MLflow tracking URI is set, so there is no server or store to ask which "
            "model it names; nothing was read. Set MLFLOW_TRACKING_URI (or call mlflow.set_tracking_uri) to the "
            "tracking server, or convert a downloaded model folder.", path=text)
    with tempfile.TemporaryDirectory(prefix="modelsafe-mlflow-") as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=text, dst_path=tmp)
        except Exception as exc:  # noqa: BLE001 - MLflow's errors (not found, refused) become one of ours
            raise FormatError(f"Cannot download {text!r} from the MLflow tracking server "
                              f"{mlflow.get_tracking_uri()}: {exc}. Nothing was read. Check the model's name and "
                              "version (or the run id and path) and the tracking URI.", path=text) from exc
        yield Path(local)


def _tracking_uri_set() -> bool:
    try:
        from mlflow.tracking._tracking_service.utils import is_tracking_uri_set
    except ImportError:  # a later MLflow moved it: the environment variable is the documented way
        return bool(os.environ.get("MLFLOW_TRACKING_URI"))
    return bool(is_tracking_uri_set())


def _refuse_blockers(model: MlflowModel) -> None:
    """Raise doctor's first error about the folder (or its only finding when it has no native flavor)."""
    blocking = [p for p in model.blockers if p.severity == "error" or model.flavor is None]
    if not blocking:
        return
    lines = "\n".join(f"  - {p.what}: {p.why}" for p in blocking)
    raise (UnsupportedModelError if model.flavor is None or model.format == "pt2" else FormatError)(
        f"Cannot convert the MLflow model {str(model.path)!r}:\n{lines}\nNothing was read. Fix: {blocking[0].fix}.",
        path=str(model.path), type_name=model.flavor or "python_function", problems=blocking)


def _read(model: MlflowModel, file: Path, trusted: tuple[str, ...], trust_code: bool) -> Any:
    if model.format == "skops":
        return _read_skops(file, trusted)
    if model.format == "xgboost":
        return _read_xgboost(file, str(model.config.get("model_class")))
    if model.format == "lightgbm-text":
        return _read_lightgbm_text(file)
    from modelsafe import _convert
    from modelsafe.security.scanner import scan

    report = scan(file)  # pickle (scikit-learn, LightGBM), torch.save (PyTorch), Keras: as convert reads them
    family = _convert._family(report)
    _convert._refuse_main_globals(report)
    _convert._refuse_findings(report, family, trusted, trust_code)
    return _convert._read(file, family, trusted, trust_code)


def _read_skops(file: Path, trusted: tuple[str, ...]) -> Any:
    """skops's audited loader, only for types modelsafe allows or the caller trusts; then the restricted
    unpickler over the built graph, which validates what native code indexes (decision-tree nodes)."""
    import pickle

    from modelsafe.security import restricted_loads

    _refuse_archive(file)
    try:
        from skops.io import get_untrusted_types, load
    except ImportError as exc:
        from modelsafe.errors import FlavorNotInstalledError

        raise FlavorNotInstalledError(
            f"{str(file)!r} is in skops format (MLflow's default for scikit-learn) and skops is not installed: "
            "nothing was read. Install it with: pip install 'modelsafe[mlflow]' (or pip install skops)",
            flavor="skops", hint="pip install 'modelsafe[mlflow]'",
            name="skops") from exc
    refused = skops_untrusted(file, trusted)
    if refused:
        raise UntrustedContentError(
            f"Refusing to convert {str(file)!r}: it names {len(refused)} type(s) that are not on modelsafe's "
            f"allowlist: {', '.join(refused)}. Building them could run code nobody has vetted; nothing was built. "
            "If you trust the model's source, pass trusted=[...] with exactly these names.",
            globals=refused, path=str(file))
    built = load(file, trusted=get_untrusted_types(file=file))
    return restricted_loads(pickle.dumps(built, protocol=5), trusted=trusted)


def _refuse_archive(file: Path) -> None:
    """The skops zip's container checks (traversal, bombs, symlinks); its JSON is skops's to audit."""
    from modelsafe.security.scanner import scan

    report = scan(file)
    bad = [f for f in report.findings if not (f.kind == "unknown-format" and str(f.location).endswith("schema.json"))]
    if bad:
        from modelsafe.errors import UnsafeArchiveError

        lines = "\n".join(f"  - {f.describe()}" for f in bad)
        raise UnsafeArchiveError(f"Refusing to convert {str(file)!r}: the scan found {len(bad)} problem(s):\n{lines}\n"
                                 "Nothing was built. Run `modelsafe doctor` on the model folder for details.",
                                 path=str(file), member=bad[0].location)


def _read_xgboost(file: Path, model_class: str) -> Any:
    """XGBoost's own loader for the class ``MLmodel`` names (from a fixed table), every tree checked after."""
    import xgboost

    from modelsafe.flavors.boosting.xgboost_trees import check_booster

    if model_class not in XGBOOST_CLASSES:  # read_mlflow_model's blockers refuse it first
        raise UnsupportedModelError(f"MLmodel names the XGBoost class {model_class!r}, not one of "
                                    f"{', '.join(XGBOOST_CLASSES)}: nothing was read.", type_name=model_class)
    model = getattr(xgboost, model_class.rpartition(".")[2])()  # a name from the fixed table, never the file's path
    model.load_model(str(file))
    check_booster(model if isinstance(model, xgboost.Booster) else model.get_booster())
    return model


def _read_lightgbm_text(file: Path) -> Any:
    """The model text checked by modelsafe (every tree's indices) before LightGBM parses it."""
    import lightgbm

    from modelsafe.flavors.boosting.lightgbm_text import check_model_text

    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"{str(file)!r} is not UTF-8 LightGBM model text ({exc}): nothing was read. Copy the model "
                          "folder again from its source.", path=str(file)) from exc
    return lightgbm.Booster(model_str=check_model_text(text))


def _input_example(folder: Path) -> Any:
    """The folder's input example (JSON data, read by MLflow's reader), typed by its signature, or None."""
    from mlflow.models import Model

    meta = Model.load(str(folder / "MLmodel"))
    if not meta.saved_input_example_info:
        return None
    example = meta.load_input_example(str(folder))
    return _typed(example, meta.signature)


def _typed(example: Any, signature: Any) -> Any:
    """The example's columns (or array) in the dtypes the signature records: JSON has only int64 and float64."""
    import numpy as np
    import pandas as pd

    inputs = getattr(signature, "inputs", None)
    if inputs is None:
        return example
    if isinstance(example, pd.DataFrame) and not inputs.is_tensor_spec() and inputs.has_input_names():
        dtypes = {spec.name: spec.type.to_numpy() for spec in inputs.inputs
                  if spec.name in example.columns and hasattr(spec.type, "to_numpy")}
        return example.astype({k: v for k, v in dtypes.items() if v != np.dtype(object)})
    if isinstance(example, np.ndarray) and inputs.is_tensor_spec() and len(inputs.inputs) == 1:
        return example.astype(inputs.inputs[0].type)
    return example


def _source(src: Any, folder: Path, model: MlflowModel, trusted: tuple[str, ...]) -> dict[str, Any]:
    """The manifest's provenance: the MLflow model, its flavor and file, and what the caller trusted."""
    from modelsafe import _convert

    file = folder / str(model.file)
    meta = model.mlmodel
    return {"path": os.fspath(src) if not str(src).startswith(_URI_SCHEMES) else str(src),
            "kind": f"mlflow:{model.flavor}", "size": _convert._size(file), "sha256": _convert._sha256(file),
            "trusted": list(trusted), "converted": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "mlflow": {"flavor": model.flavor, "format": model.format, "file": model.file,
                       "mlflow_version": meta.get("mlflow_version"), "run_id": meta.get("run_id"),
                       "model_uuid": meta.get("model_uuid"), "signature": meta.get("signature")}}
