"""A ``save_pretrained`` folder, described without importing anything: for ``ms.convert`` and ``ms.doctor``.

:func:`read_folder` reads only JSON (``config.json``, the shard indexes, the tokenizer and
processor configs) and file names: which weight files there are (safetensors or pickled
``.bin``, sharded or not), which classes the config names, whether a tokenizer, a processor
or a generation config is there, and whether loading needs ``trust_remote_code`` (an
``auto_map`` in a config, or Python files in the folder). :func:`diagnose_folder` turns that,
and the scan of the folder's pickles, into the doctor's problems.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelsafe._reports import Problem

if TYPE_CHECKING:
    from modelsafe.security.scanner import ScanReport

__all__ = ["DATA_SUFFIXES", "PretrainedFolder", "diagnose_folder", "is_pretrained_folder", "read_folder", "reader_vetted",
           "tensor_global"]

SAFETENSORS, SAFETENSORS_INDEX = "model.safetensors", "model.safetensors.index.json"
BIN, BIN_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model",
                   "sentencepiece.bpe.model", "tokenizer.model")
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
#: Files read only as data (text, JSON, sentencepiece models), never unpickled or run.
DATA_SUFFIXES = (".json", ".txt", ".model", ".jinja", ".vocab", ".tiktoken")
#: Configs that may carry an ``auto_map`` (classes from the folder's own Python files).
_CONFIGS = ("config.json", "tokenizer_config.json", "preprocessor_config.json", "processor_config.json")
#: Globals a pickled state dict needs: torch's tensor rebuild helpers, storages, OrderedDict.
_TENSOR_GLOBALS = re.compile(r"^(torch\._utils\._rebuild_\w+|torch\._tensor\._rebuild_from_type_v2|torch\.\w+Storage|"
                             r"torch\.storage\.UntypedStorage|torch\.nn\.parameter\.Parameter|torch\.(Tensor|Size|"
                             r"device|float\w*|bfloat16|half|double|u?int\d*|long|short|bool)|"
                             r"collections\.OrderedDict|_codecs\.encode)$")


@dataclass(frozen=True)
class PretrainedFolder:
    """What a ``save_pretrained`` folder holds (file names relative to ``path``)."""

    path: Path
    config: dict[str, Any]
    safetensors: tuple[str, ...]
    bins: tuple[str, ...]
    missing: tuple[str, ...]
    tokenizer: tuple[str, ...]
    processor: tuple[str, ...]
    generation_config: bool
    remote_code: dict[str, str]
    code_files: tuple[str, ...]

    @property
    def architectures(self) -> list[str]:
        found = self.config.get("architectures") or []
        return [str(a) for a in found] if isinstance(found, list) else []


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def is_pretrained_folder(path: Path) -> bool:
    """A folder with a ``config.json`` and model weights, as ``save_pretrained`` writes it."""
    path = Path(path)
    return path.is_dir() and (path / "config.json").is_file() and any(
        (path / name).is_file() for name in (SAFETENSORS, SAFETENSORS_INDEX, BIN, BIN_INDEX))


def _shards(path: Path, single: str, index: str) -> tuple[list[str], list[str]]:
    """The weight files (one, or the shards an index names) and the shards that are missing."""
    if (path / single).is_file():
        return [single], []
    mapping = _json(path / index) if (path / index).is_file() else None
    if not isinstance(mapping, dict) or not isinstance(mapping.get("weight_map"), dict):
        return [], [index] if (path / index).is_file() else []
    names = sorted({str(v) for v in mapping["weight_map"].values()})
    safe = [n for n in names if "/" not in n and "\\" not in n and n not in (".", "..")]
    return [n for n in safe if (path / n).is_file()], [n for n in names if n not in safe or not (path / n).is_file()]


def read_folder(path: str | Path) -> PretrainedFolder | None:
    """The description of the ``save_pretrained`` folder at ``path``, or None if it is not one."""
    path = Path(path)
    if not is_pretrained_folder(path):
        return None
    config = _json(path / "config.json")
    safetensors, missing_safe = _shards(path, SAFETENSORS, SAFETENSORS_INDEX)
    bins, missing_bins = _shards(path, BIN, BIN_INDEX)
    remote: dict[str, str] = {}
    for name in _CONFIGS:
        auto_map = (_json(path / name) or {}).get("auto_map") if (path / name).is_file() else None
        if isinstance(auto_map, dict):
            for key, value in auto_map.items():
                remote[f"{name}:{key}"] = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
    # Shards missing from the format that is used (a folder with safetensors needs no .bin).
    missing = missing_safe if safetensors else missing_bins if bins else missing_safe + missing_bins
    return PretrainedFolder(
        path=path, config=config if isinstance(config, dict) else {}, safetensors=tuple(safetensors),
        bins=tuple(bins), missing=tuple(missing),
        tokenizer=tuple(n for n in TOKENIZER_FILES if (path / n).is_file()),
        processor=tuple(n for n in PROCESSOR_FILES if (path / n).is_file()),
        generation_config=(path / "generation_config.json").is_file(), remote_code=remote,
        code_files=tuple(sorted(p.name for p in path.glob("*.py"))))


def reader_vetted(name: str) -> bool:
    """A file the folder's reader (:mod:`.convert`) deals with itself, so the scan need not vouch for it.

    JSON, vocabulary and sentencepiece files are read as data by the tokenizer and processor
    loaders; a Python file makes the reader refuse the whole folder (it would need
    ``trust_remote_code``), naming it, before anything is read.
    """
    return "/" not in name and name.lower().endswith((*DATA_SUFFIXES, ".py"))


def tensor_global(name: str) -> bool:
    """Whether a pickled state dict needs global ``name`` (tensor rebuild helpers, storages, dtypes)."""
    return bool(_TENSOR_GLOBALS.match(name))


# ---------------------------------------------------------------------------------------
# the doctor
# ---------------------------------------------------------------------------------------


def diagnose_folder(path: Path, report: "ScanReport", facts: dict[str, Any]) -> list[Problem]:
    """Why a ``save_pretrained`` folder won't load here, from its files and the scan of its pickles."""
    folder = read_folder(path)
    if folder is None:
        return []
    saved = folder.config.get("transformers_version")
    facts["format"] = "Hugging Face save_pretrained folder"
    names = sorted(p.name for p in folder.path.iterdir() if p.is_file())
    facts["files"] = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
    facts["model type"] = folder.config.get("model_type", "not recorded")
    facts["classes"] = ", ".join(folder.architectures) or "not recorded"
    facts["transformers (saved)"] = saved or "not recorded"
    weights = folder.safetensors or folder.bins
    facts["weights"] = ", ".join(weights) if weights else "none found"
    parts = ["tokenizer"] * bool(folder.tokenizer) + ["processor"] * bool(folder.processor) + \
        ["generation config"] * folder.generation_config
    facts["with it"] = ", ".join(parts) or "no tokenizer or processor"
    installed = _installed("transformers")
    facts["transformers (installed)"] = installed or "not installed"
    problems: list[Problem] = []
    if not installed:
        pin = f"=={saved}" if saved else ""
        problems.append(Problem(
            what="the folder is a Hugging Face transformers model and transformers is not installed here",
            why="from_pretrained, and modelsafe's conversion, need transformers to build the model from its config",
            fix=f"pip install 'transformers{pin}' (or pip install 'modelsafe[transformers]')", subject="transformers"))
    if folder.missing:
        problems.append(Problem(
            what=f"weight files named by the folder are missing: {', '.join(folder.missing)}",
            why="from_pretrained fails with OSError, or builds a model whose missing weights are random",
            fix="copy the folder again completely (every shard the index lists)", subject=folder.missing[0]))
    if folder.remote_code or folder.code_files:
        where = "; ".join(f"{k} -> {v}" for k, v in sorted(folder.remote_code.items())) or \
            ", ".join(folder.code_files)
        problems.append(Problem(
            what=f"the model needs trust_remote_code=True: its classes come from Python code, not from "
                 f"transformers ({where})",
            why="from_pretrained refuses without trust_remote_code=True, and with it runs that code (and may "
                "download more) with your privileges",
            fix="read the code first; if you trust it, load with trust_remote_code=True in a sandbox and "
                "ms.save(model, 'model.msafe'): the classes are bundled and loading them again needs trust_code=True",
            subject="trust_remote_code"))
    problems += _pickled_weights(folder, report)
    problems += _data_files(report)
    if installed and not (folder.remote_code or folder.code_files):
        problems += _unknown_classes(folder, installed, saved)
    if not folder.architectures:
        problems.append(Problem(
            what="config.json names no model class (no 'architectures')",
            why="AutoModel can build the base model, but not the head it was trained with, from this folder",
            fix="load it with the model class it was saved from (e.g. BertForSequenceClassification.from_pretrained)",
            severity="warning", subject="architectures"))
    return problems


def _data_files(report: "ScanReport") -> list[Problem]:
    """The scan cannot analyse JSON, vocabulary or sentencepiece files; here they are known data, said once.

    A subject the scan gave only to such files is covered by this fact (the doctor then leaves
    out the scan's generic "cannot analyse" error for it).
    """
    unknown = [f for f in report.findings if f.kind == "unknown-format"]
    data = {f.subject: [] for f in unknown}
    for f in unknown:
        data[f.subject].append(f.location if "/" not in f.location and f.location.lower().endswith(DATA_SUFFIXES)
                               else None)
    return [Problem(
        what=f"{', '.join(sorted(names))}: the tokenizer's and processor's configuration and vocabulary",
        why="transformers reads these files as data (JSON, text, sentencepiece models); nothing in them is run",
        fix="", severity="info", subject=subject)
        for subject, names in data.items() if names and None not in names]


def _unknown_classes(folder: PretrainedFolder, installed: str, saved: str | None) -> list[Problem]:
    """The config's model type and classes, looked up in the installed transformers (nothing is built)."""
    from modelsafe.flavors.transformers.hub import import_transformers

    transformers = import_transformers()
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    known = set(dir(transformers))
    model_type = folder.config.get("model_type")
    unknown = [str(model_type)] if model_type and model_type not in CONFIG_MAPPING_NAMES else []
    unknown += [name for name in folder.architectures if name not in known]
    if not unknown:
        return []
    return [Problem(
        what=f"transformers {installed} does not know {', '.join(unknown)} (the folder was saved with transformers "
             f"{saved or 'of an unrecorded version'})",
        why="from_pretrained cannot build the model: it raises ValueError or KeyError for an unknown model type or "
            "class",
        fix=f"pip install 'transformers=={saved}'" if saved else "pip install -U transformers",
        subject=unknown[0])]


def _installed(distribution: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _pickled_weights(folder: PretrainedFolder, report: "ScanReport") -> list[Problem]:
    problems: list[Problem] = []
    for name in folder.bins:
        extra = sorted({g.name for s in report.streams if s.location.split("!")[0] == name for g in s.globals
                        if not tensor_global(g.name)})
        if extra:
            problems.append(Problem(
                what=f"{name} holds more than a state dict: it names {', '.join(extra)}",
                why="a weights file needs only tensors; these globals are imported and called when it is unpickled, "
                    "so torch's weights-only loader refuses it and a full unpickle could run code",
                fix="do not load it unless you made it; ms.convert refuses it for the same reason (a safetensors copy "
                    "from the original source is safe)", subject=name))
    if folder.bins and not folder.safetensors:
        problems.append(Problem(
            what=f"the weights are pickled ({', '.join(folder.bins)}), with no safetensors copy",
            why="transformers reads .bin files with torch.load, which can run code hidden in a crafted file (recent "
                "transformers versions refuse .bin files altogether under torch < 2.6)",
            fix="ms.convert(folder, 'model.msafe') reads them without running anything (only tensors are accepted) "
                "and stores them as safetensors", severity="warning", subject="pytorch_model.bin"))
    return problems
