"""Loading a torch module: audit, build on ``meta``, compare key by key, assign the weights.

The class is built on the ``meta`` device (nothing allocated, torch's RNG untouched), every
saved key and shape is compared with the model's (a strict load raises the report as
:class:`~modelsafe.errors.ArchitectureMismatchError`), the tensors are mapped (or read) and
assigned without a copy, ties are restored, and the model goes to its device in ``eval()``.
A ``strict=False`` load, or a class keeping tensors outside its state dict, builds the model
for real and assigns what fits.
"""

from __future__ import annotations

import contextlib
import warnings
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from modelsafe.errors import (
    ArchitectureMismatchError,
    EnvironmentMismatchError,
    FormatError,
    ModelsafeError,
)
from modelsafe.flavors._base import ComponentSource, LoadOptions
from modelsafe.flavors.torch.arch import describe
from modelsafe.flavors.torch.args import Decoder, audit_refs
from modelsafe.flavors.torch.report import WeightsReport, compare, shapes_of
from modelsafe.flavors.torch.run import _tensors_of
from modelsafe.flavors.torch.tensors import Header
from modelsafe.flavors.torch.tensors_read import read_header, read_tensors

if TYPE_CHECKING:
    import torch


#: The member holding non-persistent buffers (they are not part of the state dict).
BUFFERS = "buffers.safetensors"
PROGRAM_CHOICES = ("auto", "class", "exported")
_REPORTS: "weakref.WeakKeyDictionary[Any, WeightsReport]" = weakref.WeakKeyDictionary()


class ProgramFallbackWarning(UserWarning):
    """The model's class is not available, so the exported program stored with it is used."""


class PartialLoadWarning(UserWarning):
    """``strict=False`` loaded only the weights that fit the current model."""


def load_report(model: Any) -> WeightsReport | None:
    """The key-by-key report of a ``strict=False`` load that did not match fully, if any."""
    try:
        return _REPORTS.get(model)
    except TypeError:
        return None


def _mmap(options: LoadOptions) -> bool:
    """``load(..., mmap=False)`` reads the weights into private memory instead of mapping the file."""
    value = options.extra.get("mmap", True)
    if not isinstance(value, bool):
        raise ValueError(f"Invalid `mmap`: expected True or False. Received: mmap={value!r}")
    return value


def _program_choice(options: LoadOptions) -> str:
    choice = options.extra.get("program", "auto")
    if choice not in PROGRAM_CHOICES:
        raise ValueError(f"Invalid `program`: expected one of {', '.join(map(repr, PROGRAM_CHOICES))}. "
                         f"Received: program={choice!r}")
    return choice


def _audit_module(source: ComponentSource, data: Mapping[str, Any], options: LoadOptions) -> None:
    from modelsafe.flavors.torch.export import read_program

    choice = _program_choice(options)
    export = data.get("export")
    if choice == "exported":
        if not export:
            raise FormatError("program='exported' was asked, but this artifact holds no exported program. Load it "
                              "with its class (program='class'), or re-save with export=True.")
        source.cache["program"] = read_program(source, export, options)
        return
    try:
        audit_refs(data["architecture"], options)
    except EnvironmentMismatchError as exc:
        if choice == "class" or not export:
            raise
        source.cache["program"] = read_program(source, export, options)
        warnings.warn(f"{exc} Using the exported program stored with the model instead (it runs without the class).",
                      ProgramFallbackWarning, stacklevel=5)


def _headers(source: ComponentSource, data: Mapping[str, Any]) -> dict[str, Header]:
    cached = source.cache.get("headers")
    return cached if cached is not None else {m: read_header(source, m) for m in data["weights"]["members"]}


def _read_weights(source: ComponentSource, data: Mapping[str, Any], device: str,
                  mmap: bool) -> dict[str, "torch.Tensor"]:
    """Every saved tensor (mapped, or members read in parallel), ties restored, in the saved key order."""
    weights = data["weights"]
    headers = _headers(source, data)
    members = list(weights["members"])

    def read(member: str) -> dict[str, Any]:
        return read_tensors(source, member, device, header=headers[member], mmap=mmap)

    if len(members) > 1 and not mmap:
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="modelsafe-read") as pool:
            parts = list(pool.map(read, members))
    else:
        parts = [read(m) for m in members]
    tensors: dict[str, Any] = {}
    for part in parts:
        tensors.update(part)
    for alias, target in weights.get("aliases", {}).items():
        if target in tensors:
            tensors[alias] = tensors[target]
    order = weights.get("keys") or list(tensors)
    return {k: tensors[k] for k in order if k in tensors} | {k: v for k, v in tensors.items() if k not in order}


def _saved_shapes(source: ComponentSource, data: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for header in _headers(source, data).values():
        shapes.update({name: entry.shape for name, entry in header.entries.items()})
    for alias, target in data["weights"].get("aliases", {}).items():
        if target in shapes:
            shapes[alias] = shapes[target]
    order = data["weights"].get("keys") or list(shapes)
    return {k: shapes[k] for k in order if k in shapes}


def _construct(decoder: Decoder, arch: Mapping[str, Any], device: str, code_changes: tuple[str, ...]) -> Any:
    try:
        return decoder.construct(arch, device)
    except ModelsafeError:
        raise
    except Exception as exc:  # noqa: BLE001 - the class no longer accepts its saved arguments
        changed = f" Local module(s) changed since saving: {', '.join(code_changes)}." if code_changes else ""
        raise ArchitectureMismatchError(
            f"Cannot rebuild the model: {describe(arch)} raised {type(exc).__name__}: {exc}.{changed} The class no "
            "longer accepts the arguments it was saved with, so the saved weights cannot be placed in it. Use the "
            "class as it was when the model was saved (code='bundled' with trust_code=True uses the copy bundled "
            "with the artifact), or re-export the model.",
            missing=[], unexpected=[], mismatched={}, code_changes=list(code_changes)) from exc


def _load_module(source: ComponentSource, data: Mapping[str, Any], options: LoadOptions, device: str) -> Any:
    arch = data["architecture"]
    decoder = Decoder(options)
    model = _construct(decoder, arch, "meta", options.code_changes)
    report = compare(_saved_shapes(source, data), shapes_of(model.state_dict()),
                     model=".".join(arch["class"]), saved_with=describe(arch), code_changes=options.code_changes,
                     strict=options.strict)
    if not report.ok and options.strict:
        report.raise_if_failed()
    tensors = _read_weights(source, data, "cpu", _mmap(options))
    buffers = read_tensors(source, BUFFERS, "cpu", header=_headers(source, data).get(BUFFERS)) \
        if data.get("buffers") else {}
    if report.ok:
        model = _fill(model, tensors, buffers, data)
    if not report.ok or any(t.is_meta for t in _all_tensors(model)):
        model = _construct(decoder, arch, "cpu", options.code_changes)
        model = _fill(model, _fitting(tensors, model), buffers, data)
    if device != "cpu":
        model = model.to(device)
    model.eval()
    if not report.ok:
        _REPORTS[model] = report
        warnings.warn(f"strict=False: {report.matched} tensors loaded; the rest keep their initial values.\n{report}",
                      PartialLoadWarning, stacklevel=5)
    return model


def _fitting(tensors: Mapping[str, Any], model: Any) -> dict[str, Any]:
    current = shapes_of(model.state_dict())
    return {k: v for k, v in tensors.items() if k in current and tuple(v.shape) == current[k]}


def _fill(model: Any, tensors: Mapping[str, Any], buffers: Mapping[str, Any], data: Mapping[str, Any]) -> Any:
    """Assign saved tensors to ``model`` (no copy), then re-tie the weights that were tied at save."""
    model.load_state_dict(tensors, strict=False, assign=True)
    for name, tensor in buffers.items():
        _set_tensor(model, name, tensor)
    for alias, target in data["weights"].get("aliases", {}).items():
        _tie(model, alias, target)
    return model


def _owner(model: Any, name: str) -> tuple[Any, str]:
    path, _, attr = name.rpartition(".")
    return (model.get_submodule(path) if path else model), attr


def _set_tensor(model: Any, name: str, tensor: Any) -> None:
    owner, attr = _owner(model, name)
    if attr in owner._buffers:
        owner._buffers[attr] = tensor


def _tie(model: Any, alias: str, target: str) -> None:
    with contextlib.suppress(AttributeError, KeyError):
        target_owner, target_attr = _owner(model, target)
        alias_owner, alias_attr = _owner(model, alias)
        if target_attr in target_owner._parameters and alias_attr in alias_owner._parameters:
            alias_owner._parameters[alias_attr] = target_owner._parameters[target_attr]
        elif target_attr in target_owner._buffers and alias_attr in alias_owner._buffers:
            alias_owner._buffers[alias_attr] = target_owner._buffers[target_attr]


def _all_tensors(model: Any) -> Iterator["torch.Tensor"]:
    import torch

    yield from _tensors_of(model)
    for module in model.modules():
        yield from (v for v in vars(module).values() if isinstance(v, torch.Tensor))
