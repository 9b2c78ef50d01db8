"""Writing one checkpoint artifact, straight away or from a host-memory snapshot.

A checkpoint is an ordinary modelsafe artifact (``ms.inspect`` reads it; ``ms.load`` gives
the model back):

* ``model/``: the model, saved by its flavor (for PyTorch: safetensors weights plus the
  architecture, so ``ms.load`` rebuilds the module; weights only when the constructor
  arguments cannot be recorded);
* ``checkpoint/``: the training state (:mod:`modelsafe.checkpoints.state`);
* ``code/``: source of custom classes from ``__main__`` or local modules;
* the manifest, whose ``metadata["modelsafe.checkpoint"]`` records step, metrics and time.

Synchronous saves write members with :class:`~modelsafe.artifact.writer.ArtifactWriter` directly
from the live tensors (no copy). Asynchronous saves run the very same code against a
:class:`HostSnapshot`, which copies every member's bytes into reusable host buffers as
they are produced; a background thread later replays them into an ``ArtifactWriter``.
The snapshot itself is :mod:`modelsafe.checkpoints.snapshot`.
"""

from __future__ import annotations

import datetime as _dt
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from modelsafe.artifact.manifest import (
    FORMAT_VERSION,
    Component,
    Manifest,
    MemberRecord,
)
from modelsafe.artifact.writer import ArtifactWriter
from modelsafe.checkpoints.snapshot import HostSnapshot
from modelsafe.errors import SaveError, UnsavableObjectError, UnsupportedModelError
from modelsafe.flavors._base import ComponentStore, SavedComponent

if TYPE_CHECKING:
    import numpy as np

    from modelsafe.artifact.writer import WrittenMember

SUPPORTED_FLAVORS = ("torch", "keras")


class CheckpointWarning(UserWarning):
    """A checkpoint was written, but with less than usual (e.g. weights only, no bundled code)."""


# ---------------------------------------------------------------------------------------
# capturing the members (the same code for both targets)
# ---------------------------------------------------------------------------------------


@dataclass
class Prepared:
    """Everything of the manifest except the member hashes, known once the members are captured."""

    components: dict[str, Component]
    code: list[dict[str, Any]]
    environment: dict[str, Any]
    metadata: dict[str, Any]


@dataclass
class SaveContext:
    """Per-Checkpointer memory: cached environment fingerprints and warnings already given."""

    environments: dict[frozenset[str], dict[str, Any]] = field(default_factory=dict)
    warned: set[str] = field(default_factory=set)

    def warn_once(self, key: str, message: str) -> None:
        if key not in self.warned:
            self.warned.add(key)
            warnings.warn(message, CheckpointWarning, stacklevel=7)  # the caller of Checkpointer.save


def prepare(target: Any, model: Any, write_training: Callable[[ComponentStore], dict[str, Any]],
            facts: Mapping[str, Any], context: SaveContext) -> Prepared:
    """Write the model, the training state and the code into ``target``; return the manifest's parts."""
    from modelsafe.flavors import detect_flavor, get_flavor

    flavor_name = detect_flavor(model)
    if flavor_name not in SUPPORTED_FLAVORS:
        raise UnsupportedModelError(
            f"Checkpointer saves PyTorch modules and Keras models; got a {type(model).__module__}."
            f"{type(model).__qualname__} (flavor {flavor_name!r}). For other models use ms.save(model, path) "
            "at the end of training.", type_name=f"{type(model).__module__}.{type(model).__qualname__}")
    flavor = get_flavor(flavor_name)
    saved, component = _save_model(target, flavor, model, context)
    training = write_training(ComponentStore(target, "checkpoint"))
    code = _bundle(target, saved, context)
    metadata = {"modelsafe.checkpoint": {**facts, "training": training, "model_kind": component.data.get("kind")}}
    return Prepared(components={"model": component}, code=code, environment=_environment(context, saved, flavor, model),
                    metadata=metadata)


def _environment(context: SaveContext, saved: SavedComponent, flavor: Any, model: Any) -> dict[str, Any]:
    """The environment fingerprint (captured once per set of modules: it does not change during a run)."""
    modules = frozenset(saved.modules)
    if modules not in context.environments:
        from modelsafe.checks.environment import capture_environment

        context.environments[modules] = capture_environment(sorted(modules))
    environment = dict(context.environments[modules])
    devices = flavor.device_info(model)
    if devices:
        environment["devices"] = {**environment.get("devices", {}), **devices}
    return environment


def _save_model(target: Any, flavor: Any, model: Any, context: SaveContext) -> tuple[SavedComponent, Component]:
    store = ComponentStore(target, "model")
    try:
        saved = flavor.save(model, store, {})
    except SaveError as exc:
        if flavor.name != "torch" or store.members:  # only a failed architecture capture writes nothing
            raise
        from modelsafe.flavors.torch.args import unwrap

        inner = unwrap(model)[0]
        context.warn_once("weights-only", (
            f"Checkpoints of {type(inner).__qualname__} store its weights only: its constructor arguments could not "
            f"be recorded ({exc.message.split('. ')[0]}). Checkpointer.restore works as usual, but "
            "ms.load(checkpoint) gives the state dict instead of the module. Store the arguments as attributes of "
            "the same names (self.hidden = hidden) to get the module back."))
        store = ComponentStore(target, "model")
        saved = flavor.save(inner.state_dict(), store, {})
    component = Component(flavor=flavor.name, flavor_version=flavor.version, members=tuple(store.members),
                          data=saved.data, type_name=saved.type_name)
    return saved, component


def _bundle(target: Any, saved: SavedComponent, context: SaveContext) -> list[dict[str, Any]]:
    from modelsafe.code.bundle import bundle_code
    from modelsafe.code.modules import CODE_PREFIX
    try:
        return bundle_code(saved.refs, (), ComponentStore(target, CODE_PREFIX))
    except UnsavableObjectError as exc:
        what = "; ".join(f"{path} ({reason})" for path, _, reason in exc.problems[:3])
        context.warn_once("code", (
            f"The source of the model's custom code could not be bundled with the checkpoints: {what}. "
            "Checkpointer.restore is not affected, but ms.load(checkpoint) in another process needs that code "
            "importable there. Define the classes in a module file or a script to have them bundled."))
        return []


def build_manifest(prepared: Prepared, members: Mapping[str, "WrittenMember"]) -> Manifest:
    from modelsafe._version import __version__

    return Manifest(
        format_version=FORMAT_VERSION,
        modelsafe_version=__version__,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        components=prepared.components,
        members={name: MemberRecord(m.size, m.sha256) for name, m in members.items()},
        environment=prepared.environment,
        code=tuple(prepared.code),
        metadata=prepared.metadata,
    )


# ---------------------------------------------------------------------------------------
# writing the artifact
# ---------------------------------------------------------------------------------------


def write_now(path: Path, capture: Callable[[Any], Prepared]) -> Manifest:
    """Write a checkpoint from the live objects: members straight to a temporary file, then rename.

    No early write-back (``writeback=False``): on the machines measured, dropping each 64 MiB
    from the page cache as it was written made a synchronous save 1.3–2 × slower than
    writing everything and fsyncing once.
    """
    with ArtifactWriter(path) as writer:
        prepared = capture(writer)
        manifest = build_manifest(prepared, writer.members)
        writer.commit(manifest.to_json())
    return manifest


def snapshot(buffers: dict[str, "np.ndarray"], capture: Callable[[Any], Prepared],
             defer: Callable[["np.ndarray"], bool] | None = None) -> tuple[HostSnapshot, Prepared]:
    """Copy everything a checkpoint holds into host memory (the only part a training loop waits for),
    except the pieces ``defer`` covers: those are placed, and copied by ``copy_deferred`` later."""
    snap = HostSnapshot(buffers, defer)
    prepared = capture(snap)
    snap.release_unused()
    return snap, prepared


def write_snapshot(path: Path, snap: HostSnapshot, prepared: Prepared) -> Manifest:
    """Write a captured snapshot as the checkpoint artifact at ``path`` (atomically; its deferred
    pieces are copied first, if :meth:`HostSnapshot.copy_deferred` has not run yet)."""
    with ArtifactWriter(path, writeback=True) as writer:
        snap.replay(writer)
        manifest = build_manifest(prepared, writer.members)
        writer.commit(manifest.to_json())
    return manifest
