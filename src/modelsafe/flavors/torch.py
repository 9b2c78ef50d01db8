"""PyTorch flavor: weights as safetensors, architecture as importable class + constructor arguments.

Saving an ``nn.Module`` stores

* its state dict (parameters and persistent buffers) as safetensors members, streamed and
  hashed while written (two members for large models, so two cores can verify them), tied
  weights once, with their ties recorded; non-persistent buffers in a small extra member;
* its architecture: the class path and the constructor arguments (see
  :mod:`modelsafe.flavors.torch_arch`), checked at save to rebuild the same keys and shapes
  and, with a sample, the same outputs. Classes from ``__main__``, notebooks and local
  modules are bundled by :mod:`modelsafe._code` (``SavedComponent.refs``);
* optionally (``export=True`` with a sample) a ``torch.export`` program that runs without
  the class (:mod:`modelsafe.flavors.torch_export`).

``DataParallel``/``DistributedDataParallel``/``torch.compile`` wrappers are unwrapped, so
keys carry no ``module.``/``_orig_mod.`` prefix. A bare state dict, a tensor, or a
checkpoint dict is stored *weights-only* (:mod:`modelsafe.flavors.torch_tree`).

Loading builds the class on the ``meta`` device (nothing allocated, torch's RNG untouched),
compares every key and shape with the saved ones (a strict load raises
:class:`~modelsafe.errors.ArchitectureMismatchError` with a per-key table and rename
suggestions), reads the tensors straight into their final memory and assigns them, restores
ties, moves the model to the requested device and calls ``eval()``. ``load(..., program=)``
picks ``"class"``, ``"exported"`` or ``"auto"`` (the class; the program when the class's
module is not available).
"""

from __future__ import annotations

import contextlib
import warnings
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from modelsafe.errors import (ArchitectureMismatchError, EnvironmentMismatchError, FlavorError, FormatError,
                              ModelsafeError, SaveError, UnsupportedModelError)
from modelsafe.flavors._base import ComponentSource, ComponentStore, Flavor, LoadOptions, SavedComponent
from modelsafe.flavors.torch_arch import Decoder, LiveDecoder, audit_refs, capture, describe, install_recorder, unwrap
from modelsafe.flavors.torch_report import WeightsReport, compare, shapes_of
from modelsafe.flavors.torch_tensors import Header, read_header, read_tensors, shard, split_aliases, write_tensors

if TYPE_CHECKING:
    import torch

#: Weights at least this large are split into two members, hashed on two cores.
SHARD_BYTES = 64 << 20
BUFFERS = "buffers.safetensors"
PROGRAM_CHOICES = ("auto", "class", "exported")
_REPORTS: "weakref.WeakKeyDictionary[Any, WeightsReport]" = weakref.WeakKeyDictionary()

install_recorder()


class DeviceChangedWarning(UserWarning):
    """The model was saved on another device (e.g. a GPU) than the one it is loaded on."""


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


class TorchFlavor(Flavor):
    name = "torch"
    version = 1

    def can_embed(self, obj: Any) -> bool:
        import torch

        return isinstance(obj, (torch.nn.Module, torch.Tensor))

    # -- save -------------------------------------------------------------------------
    def save(self, obj: Any, store: ComponentStore, options: Mapping[str, Any]) -> SavedComponent:
        import torch

        if isinstance(obj, torch.nn.Module):
            return _save_module(obj, store, options)
        from modelsafe.flavors.torch_tree import holds_tensors

        if holds_tensors(obj):
            return _save_state(obj, store, options)
        raise UnsupportedModelError(
            f"The torch flavor saves nn.Module objects, tensors and dicts of tensors; got {_type_name(obj)}. "
            "Pass the module (or its state_dict()).", type_name=_type_name(obj))

    # -- load -------------------------------------------------------------------------
    def audit(self, source: ComponentSource, data: Mapping[str, Any], options: LoadOptions) -> None:
        kind = data.get("kind")
        if kind not in ("module", "state"):
            raise FormatError(f"Unknown torch component kind {kind!r}: the artifact was written by a newer modelsafe. "
                              "Upgrade with: pip install -U modelsafe", kind=kind)
        source.cache["headers"] = {m: read_header(source, m) for m in data["weights"]["members"]}
        if data.get("buffers"):
            source.cache["headers"][BUFFERS] = read_header(source, BUFFERS)
        if kind == "module":
            _audit_module(source, data, options)

    def load(self, source: ComponentSource, data: Mapping[str, Any], options: LoadOptions) -> Any:
        device = resolve_device(options.device, data.get("device"))
        if data.get("kind") == "state":
            from modelsafe.flavors.torch_tree import decode

            tensors = _read_weights(source, data, device, _mmap(options))
            return decode(data["tree"], tensors)
        if "program" in source.cache:
            from modelsafe.flavors.torch_export import load_program

            return load_program(source, data["export"], source.cache["program"], device)
        return _load_module(source, data, options, device)

    # -- running ----------------------------------------------------------------------
    def predict(self, obj: Any, x: Any) -> Any:
        return to_numpy(_run(obj, x))

    def transform(self, obj: Any, x: Any) -> Any:
        return self.predict(obj, x)

    def outputs(self, obj: Any, x: Any) -> dict[str, Any]:
        return flatten_outputs(to_numpy(_run(obj, x)))

    def device_info(self, obj: Any) -> dict[str, Any]:
        import torch

        if not isinstance(obj, torch.nn.Module):
            return {}
        device = _module_device(unwrap(obj)[0])
        info: dict[str, Any] = {"torch_device": str(device)}
        if device.type == "cuda":
            with contextlib.suppress(Exception):
                info["torch_gpu"] = torch.cuda.get_device_name(device)
        return info


# ---------------------------------------------------------------------------------------
# save
# ---------------------------------------------------------------------------------------


def _type_name(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _module_device(model: Any) -> "torch.device":
    import torch

    for tensor in _tensors_of(model):
        return tensor.device
    return torch.device("cpu")


def _tensors_of(model: Any) -> Iterator["torch.Tensor"]:
    yield from model.parameters()
    yield from (b for b in model.buffers() if b is not None)


def _save_module(obj: Any, store: ComponentStore, options: Mapping[str, Any]) -> SavedComponent:
    model, wrappers = unwrap(obj)
    arch = capture(model, options.get("init_args"))
    state = model.state_dict()
    odd = {k: _type_name(v) for k, v in state.items() if not hasattr(v, "shape")}
    if odd:
        raise SaveError(
            f"The state dict of {_type_name(model)} holds non-tensor entries {odd} (extra state from "
            "get_extra_state), which can only be stored with pickle. Keep that state in tensors or in constructor "
            "arguments.", keys=sorted(odd))
    nonpersistent = {n: b for n, b in model.named_buffers() if n not in state and b is not None}
    data: dict[str, Any] = {
        "kind": "module",
        "architecture": arch.to_data(),
        "weights": write_weights(store, state),
        "buffers": write_tensors(store, BUFFERS, nonpersistent)["member"] if nonpersistent else None,
        "device": str(_module_device(model)),
        "parameters": sum(p.numel() for p in model.parameters()),
        "wrappers": wrappers,
    }
    sample = options.get("sample")
    if sample is not None:
        _check_rebuild(model, arch, sample)
    if options.get("export"):
        data["export"] = _export(model, sample, store)
    modules = {"torch"} | {m for m, _ in arch.refs}
    return SavedComponent(data=data, modules=modules, type_name=_type_name(model), refs=set(arch.refs))


def write_weights(store: ComponentStore, tensors: Mapping[str, "torch.Tensor"]) -> dict[str, Any]:
    """Write a state dict as one or two safetensors members; return the flavor's record of it."""
    unique, aliases = split_aliases(tensors)
    total = sum(t.numel() * t.element_size() for t in unique.values())
    groups = shard(unique, 2 if total >= SHARD_BYTES else 1) or [{}]
    members = [write_tensors(store, f"weights-{i}.safetensors", group)["member"] for i, group in enumerate(groups)]
    return {"members": members, "aliases": aliases, "keys": list(tensors), "tensors": len(unique), "bytes": total}


def _save_state(obj: Any, store: ComponentStore, options: Mapping[str, Any]) -> SavedComponent:
    from modelsafe.flavors.torch_tree import encode

    for option in ("init_args", "export"):
        if options.get(option):
            raise SaveError(f"{option}= applies to an nn.Module, but a weights-only object ({_type_name(obj)}) was "
                            "given. Save the module itself to record its architecture.", option=option)
    if options.get("sample") is not None:
        raise SaveError(
            f"A {_type_name(obj)} of tensors has no forward() to run on the sample, so nothing can be verified. "
            "Save the module itself (ms.save(model, ...)) to verify predictions, or pass sample=None.")
    obj, stripped = strip_prefixes(obj)
    encoded = encode(obj)
    data = {"kind": "state", "tree": encoded.tree, "weights": write_weights(store, encoded.tensors),
            "stripped_prefix": stripped}
    return SavedComponent(data=data, modules={"torch"}, type_name=_type_name(obj))


def strip_prefixes(obj: Any) -> tuple[Any, str]:
    """A state dict whose every key starts with ``module.`` or ``_orig_mod.`` loses the prefix."""
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(k, str) for k in obj):
        return obj, ""
    stripped = ""
    for prefix in ("module.", "_orig_mod."):
        while all(k.startswith(prefix) for k in obj):
            obj = type(obj)((k[len(prefix):], v) for k, v in obj.items()) if isinstance(obj, dict) else \
                {k[len(prefix):]: v for k, v in obj.items()}
            stripped += prefix
    return obj, stripped


@contextlib.contextmanager
def eval_mode(model: Any) -> Iterator[None]:
    """Run ``model`` in eval mode, restoring its mode afterwards (dropout off for reference outputs)."""
    training = getattr(model, "training", False)
    try:
        if training:
            model.eval()
    except NotImplementedError:  # exported programs have no train/eval switch
        training = False
    try:
        yield
    finally:
        if training:
            model.train()


def _check_rebuild(model: Any, arch: Any, sample: Any) -> None:
    """At save: the recorded architecture, given the model's own tensors, must predict the same."""
    import torch

    from modelsafe._verify import compare_output, default_tolerance

    try:
        rebuilt = LiveDecoder().construct(arch.to_data(), "meta")
        rebuilt.load_state_dict(model.state_dict(), strict=True, assign=True)
        for name, buffer in model.named_buffers():
            _set_tensor(rebuilt, name, buffer)
        if any(t.is_meta for t in _all_tensors(rebuilt)):
            return  # tensors outside the state dict: the structure check at save is what we can do
        rebuilt.to(_module_device(model))
    except Exception:  # noqa: BLE001 - the structure check already passed; behaviour is checked at load
        return
    with eval_mode(model), torch.inference_mode():
        expected = flatten_outputs(to_numpy(_call(model, sample)))
        actual = flatten_outputs(to_numpy(_call(rebuilt.eval(), sample)))
    for name, value in expected.items():
        check = compare_output(name, value, actual.get(name), default_tolerance(value.dtype))
        if not check.ok:
            raise SaveError(
                f"The recorded architecture {arch.describe()} (arguments {arch.source}) rebuilds a model that predicts "
                f"differently on the sample:\n{check.describe()}\nLoading it elsewhere would give these wrong "
                "predictions. Pass the exact constructor arguments with init_args={...}.", cls=arch.module)


def _export(model: Any, sample: Any, store: ComponentStore) -> dict[str, Any]:
    import torch

    from modelsafe._verify import compare_output, default_tolerance
    from modelsafe.flavors.torch_export import export_program

    if sample is None:
        raise SaveError("export=True needs a sample (ms.save(model, path, sample=x, export=True)): torch.export traces "
                        "the model on it, and the program is verified against it. Pass a few rows of model input.")
    args, kwargs = model_inputs(model, sample)
    with eval_mode(model), torch.no_grad():
        expected = flatten_outputs(to_numpy(model(*args, **kwargs)))

        def check(program: Any) -> None:
            actual = flatten_outputs(to_numpy(program(*args, **kwargs)))
            for name, value in expected.items():
                result = compare_output(name, value, actual.get(name), default_tolerance(value.dtype))
                if not result.ok:
                    raise SaveError(f"export=True: the exported program does not reproduce the model on the sample:\n"
                                    f"{result.describe()}\nSave without export=True.")

        return export_program(model, args, kwargs, store, check)


# ---------------------------------------------------------------------------------------
# audit and load
# ---------------------------------------------------------------------------------------

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
    from modelsafe.flavors.torch_export import read_program

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


def resolve_device(requested: Any, saved: str | None = None) -> str:
    """The device to load on: None -> CPU; "auto" -> best available; else the one asked for, if present."""
    import torch

    if requested is None or str(requested) == "auto":
        device = _best_device() if requested is not None else "cpu"
    else:
        try:
            parsed = torch.device(str(requested))
        except (RuntimeError, TypeError) as exc:
            raise FlavorError(f"Invalid device {requested!r} ({exc}). Use 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'.",
                              device=str(requested)) from None
        _check_available(parsed)
        device = str(parsed)
    if saved and not saved.startswith(device.split(":")[0]):
        hint = "device='auto' or device='cuda'" if torch.cuda.is_available() else "a machine with that device"
        warnings.warn(f"The model was saved on {saved} and is loaded on {device}"
                      f"{' (device=None means CPU)' if requested is None else ''}. Its outputs are verified on this "
                      f"device; to load it on {saved.split(':')[0]}, use {hint}.", DeviceChangedWarning, stacklevel=5)
    return device


def _best_device() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def _check_available(device: "torch.device") -> None:
    import torch

    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (device.index is not None and device.index >= count):
            raise FlavorError(
                f"device={str(device)!r} was asked, but this machine has {count} CUDA device(s) (torch "
                f"{torch.__version__}, CUDA {torch.version.cuda or 'not built in'}). The model cannot be placed there. "
                "Use device='auto' (the best available) or device='cpu'.", device=str(device))
    if device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise FlavorError("device='mps' was asked, but Apple's MPS backend is not available here. Use "
                              "device='auto' or device='cpu'.", device="mps")


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


# ---------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------


def model_inputs(model: Any, x: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Positional and keyword inputs for ``model``: numpy or tensors, on its device, floats in its dtype."""
    import numpy as np
    import torch

    device, float_dtype = torch.device("cpu"), None
    for tensor in _tensors_of(model):
        device = tensor.device
        if tensor.is_floating_point():
            float_dtype = tensor.dtype
            break

    def one(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            if value.dtype.hasobject or value.dtype.kind in "USM":
                raise FlavorError(f"A torch model takes numbers, but got an array of {value.dtype}. Convert the "
                                  "input to numbers first (a tokenizer or encoder as preprocess=...).")
            value = torch.from_numpy(np.ascontiguousarray(value))
        if isinstance(value, torch.Tensor):
            if value.is_floating_point() and float_dtype is not None and value.dtype != float_dtype:
                value = value.to(float_dtype)
            return value.to(device)
        return value

    if isinstance(x, Mapping):
        return (), {str(k): one(v) for k, v in x.items()}
    if isinstance(x, tuple):
        return tuple(one(v) for v in x), {}
    return (one(x),), {}


def _call(model: Any, x: Any) -> Any:
    args, kwargs = model_inputs(model, x)
    return model(*args, **kwargs)


def _run(obj: Any, x: Any) -> Any:
    import torch

    if not callable(obj):
        raise FlavorError(
            f"This artifact holds weights only ({_type_name(obj)}): there is no model to run. Load them into your "
            "model with model.load_state_dict(bundle.model), or save the module itself to get predictions.")
    with eval_mode(obj), torch.inference_mode():  # outputs are what the loaded (eval) model gives
        return _call(obj, x)


def to_numpy(value: Any) -> Any:
    """Tensors (also inside tuples, lists and dicts) as numpy arrays on the CPU."""
    import torch

    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.float()
        return tensor.numpy()
    if isinstance(value, Mapping):
        return {k: to_numpy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_numpy(v) for v in value) if isinstance(value, tuple) and not hasattr(value, "_fields") \
            else [to_numpy(v) for v in value]
    return value


def flatten_outputs(value: Any, name: str = "predict") -> dict[str, Any]:
    """``{"predict": array}``, or one entry per element of tuple/dict outputs (``predict.0``, ``predict.logits``)."""
    import numpy as np

    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten_outputs(item, f"{name}.{key}"))
        return out
    if isinstance(value, (list, tuple)) and value and not all(np.isscalar(v) for v in value):
        out = {}
        for i, item in enumerate(value):
            out.update(flatten_outputs(item, f"{name}.{i}"))
        return out
    return {name: np.asarray(value)}
