"""MLflow model folders: what their ``MLmodel`` says, which file ``ms.convert`` would read, and what blocks it.

Shared by ``doctor`` (:func:`diagnose_mlflow_folder`) and the MLflow branch of ``convert``
(:mod:`modelsafe.integrations.mlflow_convert`), so both give one verdict. ``MLmodel`` is read as
YAML data (``yaml.safe_load``); nothing in the folder is imported, and the model file itself is
only scanned here. Of a folder's flavors, the native one is picked (scikit-learn, XGBoost,
LightGBM, PyTorch, Keras/TensorFlow): ``python_function`` alone is a loader name, and a pickled
``PythonModel`` is code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection, Mapping

from modelsafe._reports import Problem
from modelsafe.diagnosis.report import DoctorReport
from modelsafe.errors import FormatError

__all__ = ["MlflowModel", "NATIVE_FLAVORS", "READ_AS_DATA", "XGBOOST_CLASSES", "LIGHTGBM_CLASSES", "is_mlflow_model",
           "read_mlflow_model", "diagnose_mlflow_folder", "skops_untrusted"]

#: Native flavors convert reads, in the order they are preferred when a folder has several.
NATIVE_FLAVORS = ("sklearn", "xgboost", "lightgbm", "pytorch", "keras", "tensorflow")
#: The classes an XGBoost / LightGBM ``model_class`` may name (a class path from the file is never imported).
XGBOOST_CLASSES = ("xgboost.sklearn.XGBClassifier", "xgboost.sklearn.XGBRegressor", "xgboost.sklearn.XGBRanker",
                   "xgboost.sklearn.XGBRFClassifier", "xgboost.sklearn.XGBRFRegressor", "xgboost.core.Booster")
LIGHTGBM_CLASSES = ("lightgbm.sklearn.LGBMClassifier", "lightgbm.sklearn.LGBMRegressor",
                    "lightgbm.sklearn.LGBMRanker", "lightgbm.basic.Booster")
_KERAS_FILES = ("model.keras", "model.h5", "model")
#: Model files that are data, not pickles: what reads them (the scanner has nothing to say about them).
READ_AS_DATA = {
    "xgboost": "XGBoost's own model loader (JSON/UBJSON, no pickle); modelsafe checks every tree before a prediction",
    "lightgbm-text": "modelsafe's check of the LightGBM model text (every tree's indices), then LightGBM's parser",
}


@dataclass(frozen=True)
class MlflowModel:
    """An MLflow model folder as its ``MLmodel`` describes it.

    ``flavor`` is the native flavor picked (or None), ``format`` how its file is stored
    (``pickle``, ``skops``, ``xgboost``, ``lightgbm-text``, ``torch``, ``pt2``, ``keras``),
    ``file`` the one file convert reads (relative to ``path``), ``blockers`` what stops a safe
    conversion (as doctor states it).
    """

    path: Path
    mlmodel: Mapping[str, Any]
    flavor: str | None
    format: str | None
    file: str | None
    config: Mapping[str, Any] = field(default_factory=dict)
    blockers: tuple[Problem, ...] = ()

    @property
    def flavors(self) -> list[str]:
        return sorted(self.mlmodel.get("flavors") or {})

    def facts(self) -> dict[str, Any]:
        pyfunc = (self.mlmodel.get("flavors") or {}).get("python_function") or {}
        facts = {"format": "MLflow model folder", "mlflow (saved)": self.mlmodel.get("mlflow_version", "not recorded"),
                 "flavors": ", ".join(self.flavors) or "none", "native flavor": self.flavor or "none",
                 "python (saved)": pyfunc.get("python_version", "not recorded"),
                 "signature": "recorded" if self.mlmodel.get("signature") else "none",
                 "input example": (self.mlmodel.get("saved_input_example_info") or {}).get("artifact_path", "none")}
        if self.file:
            facts["model file"] = f"{self.file} ({self.format})"
        return facts


def is_mlflow_model(path: Path) -> bool:
    return path.is_dir() and (path / "MLmodel").is_file()


def read_mlflow_model(path: Path) -> MlflowModel:
    """Read ``path/MLmodel`` and pick the native flavor and its file; raise FormatError if it is not YAML."""
    try:
        import yaml
    except ImportError as exc:  # PyYAML comes with modelsafe[mlflow]
        from modelsafe.errors import FlavorNotInstalledError

        raise FlavorNotInstalledError(
            f"Reading {str(path / 'MLmodel')!r} needs PyYAML, which is not installed: nothing was read. Install it "
            "with: pip install 'modelsafe[mlflow]'", flavor="mlflow", hint="pip install 'modelsafe[mlflow]'",
            name="yaml") from exc
    try:
        mlmodel = yaml.safe_load((path / "MLmodel").read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise FormatError(f"{str(path / 'MLmodel')!r} is not a readable MLmodel file ({exc}): nothing was read. Copy "
                          "the model folder again from its source.", path=str(path)) from exc
    if not isinstance(mlmodel, dict) or not isinstance(mlmodel.get("flavors"), dict):
        raise FormatError(f"{str(path / 'MLmodel')!r} has no flavors mapping, so it is not an MLflow model: nothing "
                          "was read.", path=str(path))
    flavors = mlmodel["flavors"]
    name = next((f for f in NATIVE_FLAVORS if isinstance(flavors.get(f), dict)), None)
    if name is None:
        return MlflowModel(path, mlmodel, None, None, None, blockers=(_no_native(flavors),))
    config = flavors[name]
    fmt, file = _layout(path, name, config)
    return MlflowModel(path, mlmodel, name, fmt, file, config, tuple(_blockers(path, name, config, fmt, file)))


def _layout(path: Path, flavor: str, config: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """How the flavor stores the model, and the file (relative to ``path``)."""
    if flavor == "sklearn":
        fmt = "skops" if config.get("serialization_format") == "skops" else "pickle"
        return fmt, config.get("pickled_model")
    if flavor == "xgboost":
        return "xgboost", config.get("data")
    if flavor == "lightgbm":
        if config.get("model_class") == "lightgbm.basic.Booster":
            return "lightgbm-text", config.get("data")
        return ("skops" if config.get("serialization_format") == "skops" else "pickle"), config.get("data")
    if flavor == "tensorflow" and config.get("saved_model_dir"):
        # mlflow.tensorflow of a tf.Module (model_type tf2-module) or of a SavedModel: the SavedModel folder itself
        return "keras", str(config["saved_model_dir"])
    data = str(config.get("model_data") or config.get("data") or "data")
    if flavor == "pytorch":
        for name, fmt in (("model.pth", "torch"), ("model.pt2", "pt2")):
            if (path / data / name).is_file():
                return fmt, f"{data}/{name}"
        return "torch", f"{data}/model.pth"
    for name in _KERAS_FILES:  # keras, or tensorflow with model_type keras (or a SavedModel folder)
        if (path / data / name).exists():
            return "keras", f"{data}/{name}"
    return "keras", data if (path / data / "saved_model.pb").is_file() else f"{data}/model.keras"


def _blockers(path: Path, flavor: str, config: Mapping[str, Any], fmt: str | None, file: str | None) -> list[Problem]:
    out: list[Problem] = []
    if not file or not (path / file).exists():
        out.append(Problem(what=f"the {flavor} flavor's model file {file or '(not named)'} is missing from the folder",
                           why="there is nothing to convert, and MLflow's own load fails too",
                           fix="download or copy the whole model folder again (mlflow artifacts download)",
                           subject=file or flavor))
    model_class = config.get("model_class")
    known = {"xgboost": XGBOOST_CLASSES, "lightgbm": LIGHTGBM_CLASSES}.get(flavor)
    if known is not None and model_class not in known:
        out.append(Problem(what=f"MLmodel names the model class {model_class!r}, which is not one of {flavor}'s",
                           why="convert builds the model from a fixed list of classes and never imports a class path "
                               "read from a file", fix=f"save the model with one of: {', '.join(known)}",
                           subject=str(model_class)))
    if fmt == "pt2":
        out.append(Problem(
            what=f"{file} is a torch.export program (MLflow's pt2 format), not a module with its class",
            why="modelsafe stores a PyTorch model as its class and constructor arguments plus safetensors weights; a "
                "traced graph has neither, and running the graph deserializer on an untrusted file is not vetted here",
            fix="log the model with mlflow.pytorch.save_model(model, path, serialization_format='pickle') and convert "
                "that, or build the model in Python and ms.save(model, 'model.msafe')", subject=file or "pt2"))
    if config.get("code"):
        out.append(Problem(
            what=f"the folder ships Python code in {config['code']!r} that its model's classes come from",
            why="modelsafe never imports code from a model folder; a class defined there is not importable here",
            fix="import those modules in the converting script (or install them), then convert with trusted=[...] "
                "naming their classes", severity="warning", subject=str(config["code"])))
    return out


def _no_native(flavors: Mapping[str, Any]) -> Problem:
    pyfunc = flavors.get("python_function") or {}
    loader = pyfunc.get("loader_module")
    if loader == "modelsafe.mlflow":
        return Problem(what="the folder is a modelsafe artifact exported for MLflow (its data is "
                            f"{pyfunc.get('data')})",
                       why="there is nothing to convert: the artifact is already there",
                       fix=f"use the artifact itself: ms.load('{pyfunc.get('data')}') inside the folder",
                       severity="warning", subject="modelsafe.mlflow")
    pickled = pyfunc.get("python_model") or loader == "mlflow.pyfunc.model"
    what = ("a custom PythonModel pickled with cloudpickle" if pickled
            else f"a model loaded by {loader!r}" if loader else "no model flavor")
    return Problem(what=f"the folder has no native flavor modelsafe reads ({', '.join(sorted(flavors)) or 'none'}): "
                        f"it holds {what}",
                   why="a PythonModel is Python code (its pickle runs it when loaded), and other loaders are code too; "
                       "convert reads only scikit-learn, XGBoost, LightGBM, PyTorch and Keras/TensorFlow models",
                   fix="load the underlying model in Python and ms.save it, or save it with mlflow.<flavor>.save_model",
                   subject=str(loader or "python_function"))


def diagnose_mlflow_folder(path: Path, diagnose_file: Callable[[Path], DoctorReport]) -> DoctorReport:
    """Why an MLflow model folder won't convert: its flavors and files, then the model file's own diagnosis
    (``diagnose_file``: doctor's diagnosis of one path)."""
    model = read_mlflow_model(path)
    facts = model.facts()
    problems = list(model.blockers)
    present = bool(model.file) and (path / str(model.file)).exists()
    if present and model.format in READ_AS_DATA:
        facts["model file read by"] = READ_AS_DATA[model.format]
    elif present and model.format == "skops":
        problems += _skops_problems(path / str(model.file))
    elif present and model.format != "pt2":
        inner = diagnose_file(path / str(model.file))  # the file convert would read: scanned, never loaded
        facts.update({f"{model.file}: {k}": v for k, v in inner.facts.items()})
        # A SavedModel folder is no blocker here: Keras 3's load_model refuses it, and convert reads it as an
        # inference endpoint (tf.saved_model's serving signature), as it converts any SavedModel.
        if any(p.subject == "SavedModel" for p in inner.problems):
            facts["model file read by"] = "tf.saved_model (its serving signature, as an inference endpoint)"
        problems += [_inside(p, str(model.file)) for p in inner.problems if p.subject != "SavedModel"]
    return DoctorReport(target=str(path), kind=f"mlflow:{model.flavor or 'pyfunc'}", problems=tuple(problems),
                        facts=facts)


def _inside(problem: Problem, file: str) -> Problem:
    return Problem(what=f"{file}: {problem.what}", why=problem.why, fix=problem.fix, severity=problem.severity,
                   subject=problem.subject)


def _skops_problems(file: Path) -> list[Problem]:
    """A skops file (MLflow's default for scikit-learn): its types, as skops's own audit lists them."""
    try:
        unknown = skops_untrusted(file, ())
    except ImportError:
        return [Problem(what=f"{file.name} is in skops format and skops is not installed here",
                        why="convert reads skops files with skops's own audited loader",
                        fix="pip install skops (MLflow's full package installs it)", subject="skops")]
    return [Problem(what=f"{file.name} names {t}, which is not on modelsafe's allowlist", severity="error",
                    why="building it could run code nobody has vetted",
                    fix=f"if you trust the folder's source, convert with trusted=[{t!r}]", subject=t) for t in unknown]


def skops_untrusted(file: Path, trusted: Collection[str]) -> list[str]:
    """The types a skops file names that are neither on modelsafe's allowlist nor in ``trusted`` (read by skops's
    own audit, :func:`skops.io.get_untrusted_types`, which builds nothing). Raises ImportError without skops."""
    from skops.io import get_untrusted_types

    from modelsafe.security import is_allowed

    out = []
    for name in get_untrusted_types(file=file):
        module, _, attr = name.rpartition(".")
        if not is_allowed(module, attr, invoked=True, trusted=trusted):
            out.append(name)
    return out
