"""Doctor checks for PyTorch and Keras files: devices, ``weights_only``, Keras 2 vs 3, SavedModel.

torch is imported only to ask whether CUDA is available and which globals
``torch.load with weights_only=True`` accepts, and only when the file is a torch file
and torch is installed. Keras is never imported: its version comes from metadata.
"""

from __future__ import annotations

import importlib.util
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelsafe._reports import Problem
from modelsafe.diagnosis.checks import cuda_tags, installed_version, zip_member

if TYPE_CHECKING:
    from modelsafe.security.scanner import ScanReport

TORCH_KINDS = ("zip:torch", "zip:torchscript", "torch-legacy", "tar")
_MAP_CPU = ("torch.load with map_location='cpu', or ms.convert(path, 'model.msafe'): modelsafe stores tensors "
            "without a device and maps them at load")


def _is_torch_tar(report: "ScanReport") -> bool:
    return report.kind == "tar" and any(i.kind.startswith("torch-tar-") for i in report.items)


def torch_checks(path: Path, report: "ScanReport", facts: dict[str, Any]) -> list[Problem]:
    if report.kind not in TORCH_KINDS or (report.kind == "tar" and not _is_torch_tar(report)):
        return []
    installed = installed_version("torch")
    facts["torch (installed)"] = installed or "not installed"
    problems: list[Problem] = []
    if not installed:
        problems.append(Problem(what="the file is a PyTorch checkpoint and torch is not installed here",
                                why="torch.load needs torch", fix="pip install torch", subject="torch"))
    tags = cuda_tags(_pickle_bytes(path, report))
    if tags:
        facts["devices (saved)"] = ", ".join(tags)
        if installed and not _cuda_available():
            problems.append(Problem(
                what=f"tensors were saved on {', '.join(tags)} and this machine has no CUDA device",
                why="torch.load restores each tensor to the device it was saved on, so it fails with "
                    "'RuntimeError: Attempting to deserialize object on a CUDA device'",
                fix=_MAP_CPU, subject=tags[0]))
    problems += _weights_only(report)
    return problems


def _pickle_bytes(path: Path, report: "ScanReport") -> bytes:
    """The checkpoint's object pickle (small: tensor data is stored apart)."""
    if report.kind.startswith("zip:"):
        return zip_member(path, "data.pkl") or b""
    if report.kind == "tar":
        try:
            with tarfile.open(path) as tar:
                member = tar.extractfile("pickle")
                return member.read(64 << 20) if member is not None else b""
        except (tarfile.TarError, OSError, KeyError):
            return b""
    size = next((i.facts.get("tensor_data_bytes", 0) for i in report.items if i.kind == "torch-legacy"), 0)
    with open(path, "rb") as f:
        return f.read(min(64 << 20, max(path.stat().st_size - int(size), 0)))


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _weights_only_allowed() -> set[str]:
    """Globals ``torch.load with weights_only=True`` accepts here (modelsafe's torch list without torch)."""
    from modelsafe.security._allowlist import TORCH_SAFE, TORCH_VALUES

    names = set(TORCH_SAFE) | set(TORCH_VALUES) | {"collections.OrderedDict", "builtins.set", "_codecs.encode"}
    if importlib.util.find_spec("torch") is None:
        return names
    try:
        import torch
        from torch import _weights_only_unpickler as wo

        names |= set(wo._get_allowed_globals())
        for obj in torch.serialization.get_safe_globals():
            obj = obj[0] if isinstance(obj, tuple) else obj
            names.add(f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}")
    except (ImportError, AttributeError, TypeError):
        pass
    return names


def _weights_only(report: "ScanReport") -> list[Problem]:
    if _is_torch_tar(report):
        return [Problem(
            what="the checkpoint uses torch's oldest (tar) format",
            why="torch.load with weights_only=True, the default since torch 2.6, refuses this format entirely",
            fix="if you trust the file, ms.convert(path, 'model.msafe', trusted=[...]) reads it without running "
                "code; never torch.load with weights_only=False on a file from an untrusted source",
            subject="legacy tar format")]
    if report.kind == "zip:torchscript":
        return [Problem(
            what="the file is a TorchScript archive (torch.jit.save), not a torch.save checkpoint",
            why="torch.load hands TorchScript archives to torch.jit.load, and refuses them with weights_only=True",
            fix="load it with torch.jit.load(path); its code and pickles were scanned above",
            severity="warning", subject="TorchScript")]
    allowed = _weights_only_allowed()
    blockers = [g for g in report.globals() if g not in allowed]
    if not blockers:
        return []
    # what ms.convert needs trusted is what the scan does not accept (the same verdict convert applies)
    needed = sorted(set(blockers) & set(report.globals("unknown") + report.globals("dangerous")))
    convert = (f"ms.convert(path, 'model.msafe', trusted={needed!r}) reads it without torch.load" if needed else
               "ms.convert(path, 'model.msafe') reads it without torch.load and needs no trusted= (modelsafe's "
               "allowlist accepts these)")
    return [Problem(
        what=f"torch.load with weights_only=True refuses {len(blockers)} global(s) the file names: {', '.join(blockers)}",
        why="weights_only=True (the default since torch 2.6) accepts only tensors, containers and vetted types; "
            "loading these could run code, so torch raises UnpicklingError",
        fix=f"{convert}; or, if you trust the file, torch.serialization.add_safe_globals([...those classes...]); "
            "never weights_only=False on a file from an untrusted source",
        subject=", ".join(blockers))]


# ---------------------------------------------------------------------------------------
# Keras
# ---------------------------------------------------------------------------------------


def _major(version: str | None) -> int | None:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return None


def keras_checks(path: Path, report: "ScanReport", facts: dict[str, Any]) -> list[Problem]:
    installed = installed_version("keras")
    if report.kind == "savedmodel-directory":
        return [_savedmodel(installed)]
    if report.kind == "zip:keras":
        saved = report.facts.get("keras_version")
    elif report.kind == "hdf5":
        saved = report.items[0].facts.get("keras_version") if report.items else None
        if saved is None and not any(i.location.endswith("model_config") for i in report.items):
            return [Problem(what="the HDF5 file holds no Keras model config", why="keras.models.load_model "
                            "cannot build a model from it (it may hold weights only)", fix="build the model in "
                            "code and call model.load_weights(path)", severity="warning", subject="model_config")]
    else:
        return []
    facts["keras (saved)"] = saved or "unknown"
    facts["keras (installed)"] = installed or "not installed"
    if not installed:
        return [Problem(what="the file is a Keras model and keras is not installed here", why="loading needs it",
                        fix=f"pip install 'keras=={saved}'" if saved else "pip install keras", subject="keras")]
    return _keras_versions(report.kind, str(saved) if saved else None, installed)


def _keras_versions(kind: str, saved: str | None, installed: str) -> list[Problem]:
    was, now = _major(saved), _major(installed)
    if was == 3 and now == 2:
        return [Problem(
            what=f"the file was written by Keras {saved}; Keras {installed} is installed",
            why="Keras 2 cannot read Keras 3 files (layer configs and the archive layout changed)",
            fix="pip install 'keras>=3' (with TensorFlow >= 2.16), or re-save from Keras 3 as .h5",
            subject="keras")]
    if was == 2 and now == 3:
        legacy = kind == "hdf5"
        return [Problem(
            what=f"the file was written by Keras {saved} (tf.keras); Keras {installed} is installed",
            why=("Keras 3 reads legacy .h5 files only through its legacy loader: custom layers must be passed as "
                 "custom_objects and Lambda layers need safe_mode=False" if legacy else
                 "Keras 3 reads tf.keras .keras archives, but some layer configs changed and may fail to load"),
            fix="ms.convert(path, 'model.msafe') reads it and checks it; or load it with tf-keras "
                "(pip install tf-keras) and re-save it with Keras 3",
            severity="warning", subject="keras")]
    return []


def _savedmodel(installed: str) -> Problem:
    keras3 = _major(installed) == 3
    return Problem(
        what="this is a TensorFlow SavedModel directory, not a Keras file",
        why=("Keras 3's keras.models.load_model reads only .keras and .h5 files and raises ValueError for "
             "SavedModel folders" if keras3 else
             "keras.models.load_model can read it only with the TensorFlow version that wrote it"),
        fix="for inference use keras.layers.TFSMLayer(path, call_endpoint='serving_default') or "
            "tf.saved_model.load(path); or ms.convert(path, 'model.msafe')",
        severity="error" if keras3 else "warning", subject="SavedModel")
