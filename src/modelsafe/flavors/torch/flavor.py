"""PyTorch flavor: weights as safetensors, architecture as importable class + constructor arguments.

Saving an ``nn.Module`` stores

* its state dict (parameters and persistent buffers) as safetensors members, streamed and
  hashed while written (two members for large models, so two cores can verify them), tied
  weights once, with their ties recorded; non-persistent buffers in a small extra member;
* its architecture: the class path and the constructor arguments (see
  :mod:`modelsafe.flavors.torch.arch`), checked at save to rebuild the same keys and shapes
  and, with a sample, the same outputs. Classes from ``__main__``, notebooks and local
  modules are bundled by :mod:`modelsafe.code.bundle` (``SavedComponent.refs``);
* optionally (``export=True`` with a sample) a ``torch.export`` program that runs without
  the class (:mod:`modelsafe.flavors.torch.export`).

``DataParallel``/``DistributedDataParallel``/``torch.compile`` wrappers are unwrapped, so
keys carry no ``module.``/``_orig_mod.`` prefix. A bare state dict, a tensor, or a
checkpoint dict is stored *weights-only* (:mod:`modelsafe.flavors.torch.tree`).

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
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from modelsafe.errors import FormatError, SaveError, UnsupportedModelError
from modelsafe.flavors._base import (
    ComponentSource,
    ComponentStore,
    Flavor,
    LoadOptions,
    SavedComponent,
)
from modelsafe.flavors.torch.arch import capture
from modelsafe.flavors.torch.args import LiveDecoder, install_recorder, unwrap
from modelsafe.flavors.torch.load import (
    BUFFERS,
    PartialLoadWarning,
    ProgramFallbackWarning,
    _all_tensors,
    _audit_module,
    _load_module,
    _mmap,
    _read_weights,
    _set_tensor,
    load_report,
)
from modelsafe.flavors.torch.run import (
    DeviceChangedWarning,
    _call,
    _module_device,
    _run,
    _type_name,
    eval_mode,
    flatten_outputs,
    model_inputs,
    resolve_device,
    to_numpy,
)
from modelsafe.flavors.torch.tensors import split_for_hashing, write_tensors
from modelsafe.flavors.torch.tensors_read import read_header

if TYPE_CHECKING:
    import torch

__all__ = ["TorchFlavor", "DeviceChangedWarning", "PartialLoadWarning", "ProgramFallbackWarning", "load_report",
           "write_weights", "strip_prefixes"]


install_recorder()


class TorchFlavor(Flavor):
    name = "torch"
    version = 1
    positional_inputs = True  # a tuple (a, b) is forward(a, b)
    #: ``init_args=``: the module's constructor arguments; ``export=True``: add a torch.export program.
    save_options = frozenset({"init_args", "export"})
    #: ``mmap=False``: read the weights into memory; ``program=``: use the exported program (see load).
    load_options = frozenset({"mmap", "program"})

    def can_embed(self, obj: Any) -> bool:
        import torch

        return isinstance(obj, (torch.nn.Module, torch.Tensor))

    # -- save -------------------------------------------------------------------------
    def save(self, obj: Any, store: ComponentStore, options: Mapping[str, Any]) -> SavedComponent:
        import torch

        if isinstance(obj, torch.nn.Module):
            return _save_module(obj, store, options)
        from modelsafe.flavors import holds_tensors

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
            from modelsafe.flavors.torch.tree import decode

            tensors = _read_weights(source, data, device, _mmap(options))
            return decode(data["tree"], tensors)
        if "program" in source.cache:
            from modelsafe.flavors.torch.export import load_program

            return load_program(source, data["export"], source.cache["program"], device)
        return _load_module(source, data, options, device)

    # -- running ----------------------------------------------------------------------
    def predict(self, obj: Any, x: Any) -> Any:
        return to_numpy(_run(obj, x))

    def transform(self, obj: Any, x: Any) -> Any:
        return self.predict(obj, x)

    def outputs(self, obj: Any, x: Any) -> dict[str, Any]:
        return flatten_outputs(to_numpy(_run(obj, x)))

    def replay_context(self, obj: Any) -> contextlib.AbstractContextManager[None]:
        return _one_intra_op_thread()

    def to_onnx(self, obj: Any, schema: Mapping[str, Any] | None, sample: Any) -> Any:
        """The module as an ONNX graph, by torch.onnx's dynamo exporter (see :mod:`modelsafe.flavors.torch.onnx`)."""
        from modelsafe.flavors.torch.onnx import to_onnx

        with _one_intra_op_thread():
            return to_onnx(obj, schema, sample)

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
    sample = _head(options.get("sample"))
    if sample is not None:
        with _one_intra_op_thread():  # a few rows, like the verification replay
            _check_rebuild(model, arch, sample)
    if options.get("export"):
        data["export"] = _export(model, sample, store)
    modules = {"torch"} | {m for m, _ in arch.refs}
    return SavedComponent(data=data, modules=modules, type_name=_type_name(model), refs=set(arch.refs))


def _head(sample: Any, rows: int = 32) -> Any:
    """The first rows of a sample (array, tensor, or a dict / tuple of them) for save-time checks."""
    if sample is None:
        return None
    if isinstance(sample, Mapping):
        return {k: _head(v, rows) for k, v in sample.items()}
    if isinstance(sample, (tuple, list)) and sample and all(hasattr(v, "shape") for v in sample):
        return type(sample)(_head(v, rows) for v in sample)
    return sample[:rows] if hasattr(sample, "shape") and len(sample.shape) > 0 else sample


def write_weights(store: ComponentStore, tensors: Mapping[str, "torch.Tensor"]) -> dict[str, Any]:
    """Write a state dict as one or two safetensors members; return the flavor's record of it."""
    groups, aliases, total = split_for_hashing(tensors)
    groups = groups or [{}]
    members = [write_tensors(store, f"weights-{i}.safetensors", group)["member"] for i, group in enumerate(groups)]
    return {"members": members, "aliases": aliases, "keys": list(tensors), "tensors": sum(map(len, groups)),
            "bytes": total}


def _save_state(obj: Any, store: ComponentStore, options: Mapping[str, Any]) -> SavedComponent:
    from modelsafe.flavors.torch.tree import encode

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
def _one_intra_op_thread() -> Iterator[None]:
    """One intra-op thread while a few sample rows run (the pool's hand-offs cost more than the work);
    the previous count is restored after. torch sets it per process, not per call: another thread
    running torch meanwhile runs on one thread for those milliseconds, and computes the same."""
    import torch

    threads = torch.get_num_threads()
    if threads > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if threads > 1:
            torch.set_num_threads(threads)


def _check_rebuild(model: Any, arch: Any, sample: Any) -> None:
    """At save: the recorded architecture, given the model's own tensors, must predict the same."""
    import torch

    from modelsafe.checks.verify import compare_output, default_tolerance

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

    from modelsafe.checks.verify import compare_output, default_tolerance
    from modelsafe.flavors.torch.export import export_program

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
