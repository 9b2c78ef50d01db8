"""``ms.Checkpointer``: training checkpoints that are snapshots, survive crashes and resume exactly.

Every checkpoint is a modelsafe artifact (``step-0000000120.msafe``) in one directory, next
to an index (``checkpoints.json``); see :mod:`modelsafe.checkpoints.index` for the layout,
:mod:`modelsafe.checkpoints.write` for what an artifact holds and
:mod:`modelsafe.checkpoints.state` for the training state. Nothing is pickled.

Works from callbacks too: call ``ck.save`` where the framework reports the end of an epoch
or a validation run, and ``ck.restore`` before training starts. Lightning-style::

    class SaveEveryEpoch(lightning.Callback):
        def __init__(self, ck): self.ck = ck
        def on_validation_end(self, trainer, module):
            self.ck.save(trainer.global_step, model=module, optimizer=trainer.optimizers[0],
                         metrics={k: float(v) for k, v in trainer.callback_metrics.items()})

Keras-style (``keras.callbacks.Callback``)::

    class SaveEveryEpoch(keras.callbacks.Callback):
        def __init__(self, ck): super().__init__(); self.ck = ck
        def on_epoch_end(self, epoch, logs=None):
            self.ck.save(epoch, model=self.model, metrics=logs)
"""

from __future__ import annotations

import atexit
import dataclasses
import datetime as _dt
import math
import operator
import sys
import threading
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from modelsafe._keywords import checked
from modelsafe.checkpoints import index as idx
from modelsafe.checkpoints.remote import directory_at
from modelsafe.errors import SaveError

if TYPE_CHECKING:
    import os

    import numpy as np

__all__ = ["Checkpointer", "CheckpointInfo", "Restored", "MetricWarning"]


class MetricWarning(UserWarning):
    """The monitored metric is missing or NaN, so the checkpoint cannot become 'best'."""


@dataclass(frozen=True)
class CheckpointInfo:
    """One checkpoint: its step, metrics, artifact path (a RemotePath in a URL directory), save time and size."""

    step: int
    metrics: Mapping[str, float]
    path: Path
    time: _dt.datetime
    size: int = 0

    @classmethod
    def of(cls, directory: Path, entry: idx.Entry) -> "CheckpointInfo":
        return cls(entry.step, dict(entry.metrics), directory / entry.file, _dt.datetime.fromisoformat(entry.time),
                   entry.size)

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "metrics": idx.encode_metrics(self.metrics), "path": str(self.path),
                "time": self.time.isoformat(), "size": self.size}


@dataclass(frozen=True)
class Restored:
    """What :meth:`Checkpointer.restore` brought back: the step, its metrics and ``extra``."""

    step: int
    metrics: Mapping[str, float]
    path: Path
    time: _dt.datetime
    extra: Any = field(default=None, compare=False)


class Checkpointer:
    """Save and restore training checkpoints in ``directory``.

    Parameters
    ----------
    directory
        Where checkpoints go (created at the first save): a folder, or a URL (see :mod:`.checkpoints.remote`).
    monitor
        The metric (a key of ``metrics``) that ranks checkpoints; None keeps only the last ones, or,
        in a directory whose index records a monitor (and mode), ranks and keeps by that one.
    mode
        ``"min"`` (a loss) or ``"max"`` (an accuracy): which values of ``monitor`` are better.
    keep_best, keep_last
        How many of the best and of the most recent checkpoints to keep (each at least 1).
        Older ones are deleted; the newest and the best never are.
    async_save
        Copy the state to host memory and write in a background thread: ``save`` returns
        once the module's tensors are copied (a PyTorch optimizer's state is copied in the
        background, and its next ``step()`` waits for that copy; see :mod:`.deferred`).
        At most one write is pending; errors surface on the next call.
        The host buffers (one checkpoint's size) are kept for the next save until :meth:`close`;
        in a directory that holds a checkpoint (a resumed run) they are made off the training
        thread at once, the size of the latest one's members, so the first save copies into
        memory already touched.
    storage_options
        Credentials and endpoint for a URL ``directory`` (``key``, ``secret``, ``endpoint_url``...).

    Notes
    -----
    Each checkpoint is a modelsafe artifact: ``ms.inspect(ck.best.path)`` shows its step and
    metrics (``manifest.metadata["modelsafe.checkpoint"]``), and ``ms.load(ck.best.path)``
    gives the model back, rebuilt from its recorded class and constructor arguments (a
    PyTorch module whose arguments cannot be recorded is checkpointed as weights only, with
    a warning: ``ms.load`` then gives its state dict). Restoring never runs code from the
    checkpoint: weights are safetensors or ``.npy``, everything else JSON.

    Writes are atomic (temporary file beside the target, fsync, rename) and the index is
    replaced atomically after the artifact is complete, so a crash at any moment leaves the
    latest and the best checkpoint intact; a new Checkpointer removes what a killed write
    left behind. One process writes a directory at a time (in distributed training, save
    from rank 0 only); any process may read it.

    Keras models: the model's variables and its compiled optimizer's are saved and restored
    (``scheduler`` and ``scaler`` apply to PyTorch only; ``extra`` must be JSON-able).

    Examples
    --------
    >>> import torch, tempfile, modelsafe as ms
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.1), torch.nn.Linear(8, 1))
    >>> opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    >>> ck = ms.Checkpointer(tempfile.mkdtemp(), monitor="val_loss", keep_best=2, keep_last=1)
    >>> for step in range(3):
    ...     loss = model(torch.randn(16, 4)).pow(2).mean(); opt.zero_grad(); loss.backward(); opt.step()
    ...     _ = ck.save(step, model=model, optimizer=opt, metrics={"val_loss": 1.0 / (step + 1)})
    >>> [c.step for c in ck.list()], ck.best.step
    ([1, 2], 2)
    >>> ck.restore(model=model, optimizer=opt, which="best").step
    2
    """

    @checked("Checkpointer")
    def __init__(self, directory: str | os.PathLike[str], *, monitor: str | None = None, mode: str = "min",
                 keep_best: int = 1, keep_last: int = 1, async_save: bool = False,
                 storage_options: Mapping[str, Any] | None = None) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"Invalid `mode`: expected 'min' or 'max'. Received: mode={mode!r}")
        for name, value in (("keep_best", keep_best), ("keep_last", keep_last)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Invalid `{name}`: expected an integer of at least 1 (the newest and the best "
                                 f"checkpoint are always kept). Received: {name}={value!r}")
        if monitor is not None and not isinstance(monitor, str):
            raise ValueError(f"Invalid `monitor`: expected a metric name (str) or None. Received: monitor={monitor!r}")
        self._dir = directory_at(directory, storage_options, monitor, mode, keep_best, keep_last)
        self.monitor, self.mode = monitor, mode
        self.keep_best, self.keep_last = keep_best, keep_last
        self.async_save = bool(async_save)
        self.directory = self._dir.path
        weakref.finalize(self, self._dir.release)
        self._context = _write().SaveContext()
        self._buffers: dict[str, np.ndarray] = {}
        self._pending: Any = None  # the BackgroundWrite of the last async save, until joined
        self._dir.repair_if_free()  # nobody writes here: remove what a crash left
        latest = idx.latest(self._dir.entries()) if self.async_save else None
        #: A resumed run's host buffers, made and touched off the training thread (see snapshot.preallocate).
        self._prefetch = (None if latest is None
                          else _snapshot().preallocate_like(self._buffers, self.directory / latest.file))
        self._warm = _snapshot().warm_in_background() if self.async_save else None
        _LIVE.add(self)

    def __repr__(self) -> str:
        return (f"<modelsafe.Checkpointer {str(self.directory)!r} monitor={self.monitor!r} mode={self.mode!r} "
                f"keep_best={self.keep_best} keep_last={self.keep_last} async_save={self.async_save}>")

    # -- saving -------------------------------------------------------------------------
    @checked("Checkpointer.save")
    def save(self, step: int, *, model: Any, optimizer: Any = None, scheduler: Any = None, scaler: Any = None,
             metrics: Mapping[str, Any] | None = None, extra: Any = None) -> CheckpointInfo:
        """Save a checkpoint of the state at this moment; later training never changes it.

        Returns where it is (with ``async_save`` the file appears when the background write
        ends; :meth:`wait` waits for it). Raises SaveError when it cannot be written; the
        checkpoints already on disk are then left as they were.
        """
        self.wait()
        step = _check_step(step)
        values = _check_metrics(metrics)
        self._warn_unrankable(step, values)
        self._dir.take()
        entry = self._dir.reserve(step, values)
        parts = {"optimizer": optimizer, "scheduler": scheduler, "scaler": scaler}
        monitor, mode = (self.monitor, self.mode) if self.monitor is not None else self._dir.ranking(self._dir.index())
        facts = {"step": step, "seq": entry.seq, "time": entry.time, "metrics": idx.encode_metrics(values),
                 "monitor": monitor, "mode": mode}
        capture = self._capturer(model, parts, extra, facts)
        path = self.directory / entry.file
        write = _write()
        if not self.async_save:
            with self._dir.failures(entry):
                write.write_now(path, capture)
                self._dir.commit(entry)
            return CheckpointInfo.of(self.directory, self._dir.sized(entry))
        self._join_prefetch()
        from modelsafe.checkpoints.background import BackgroundWrite
        from modelsafe.checkpoints.deferred import Deferral

        # What only optimizer.step() changes is copied in the background; the parameters too when the host
        # buffers are still to be made (a new run's first save: see .deferred).
        deferral = Deferral.of(model, optimizer, parameters=not self._buffers)
        snap, prepared = write.snapshot(self._buffers, capture, None if deferral is None else deferral.covers)
        self._pending = BackgroundWrite(self._dir, entry, snap, prepared, deferral if snap.deferred_nbytes else None)
        return CheckpointInfo.of(self.directory, dataclasses.replace(entry, size=snap.nbytes))

    def _capturer(self, model: Any, parts: Mapping[str, Any], extra: Any, facts: Mapping[str, Any]) -> Any:
        from modelsafe.flavors import detect_flavor

        if detect_flavor(model) == "keras":
            from modelsafe.checkpoints import keras as state_module
        else:
            from modelsafe.checkpoints import state as state_module  # type: ignore[no-redef]
        state = state_module.training_state(model, parts, extra)  # RNG and references taken now, at the call
        write = _write()
        return lambda target: write.prepare(target, model, lambda store: state_module.write_state(store, state),
                                            facts, self._context)

    def _join_prefetch(self) -> None:
        """Wait for what is made ready off the training thread: the host buffers of a resumed run, and what
        any first snapshot reads (only a snapshot or close needs them)."""
        for thread in (self._prefetch, self._warm):
            if thread is not None:
                thread.join()
        self._prefetch = self._warm = None

    def wait(self) -> None:
        """Wait for a pending background write; raise its error if it failed (once)."""
        error = None
        if self._pending is not None:
            error = self._pending.join()
            self._pending = None  # after the join: interrupted (Ctrl-C), the next call waits again
        self._dir.finish_deleting()
        if error is not None:
            raise error

    def close(self) -> None:
        """Flush the pending write, free the host buffers and let other processes write to the directory."""
        try:
            self.wait()
        finally:
            self._join_prefetch()
            self._buffers.clear()
            self._dir.release()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
            return
        try:  # an exception is already on its way: flush, and report a failed write without masking it
            self.close()
        except SaveError as error:
            warnings.warn(str(error), RuntimeWarning, stacklevel=2)

    # -- what is on disk ----------------------------------------------------------------
    def list(self) -> list[CheckpointInfo]:
        """Every checkpoint on disk, oldest save first (waits for a pending write)."""
        self.wait()
        return [CheckpointInfo.of(self.directory, e) for e in self._dir.entries()]

    @property
    def latest(self) -> CheckpointInfo | None:
        """The most recently saved checkpoint, or None."""
        self.wait()
        entry = idx.latest(self._dir.entries())
        return None if entry is None else CheckpointInfo.of(self.directory, entry)

    @property
    def best(self) -> CheckpointInfo | None:
        """The checkpoint with the best finite ``monitor`` value, or None (no monitor, or none yet).

        Without a ``monitor`` of its own, the Checkpointer ranks by the one the directory's index
        records (the one the checkpoints were saved with), in any process.
        """
        self.wait()
        entry = self._dir.best()
        return None if entry is None else CheckpointInfo.of(self.directory, entry)

    # -- restoring ----------------------------------------------------------------------
    @checked("Checkpointer.restore")
    def restore(self, *, model: Any, optimizer: Any = None, scheduler: Any = None, scaler: Any = None,
                which: str | int = "latest", device: Any = None) -> Restored:
        """Restore ``model`` (and whatever else is given) from a checkpoint; return its step and metrics.

        ``which`` is ``"latest"``, ``"best"`` or a step number. The weights are copied into
        the given objects (an optimizer built over the model's parameters stays valid), the
        Python, numpy and torch RNG states are put back, and ``device`` (e.g. ``"cuda"``)
        moves the model there first. Everything is checked before anything changes.
        """
        self.wait()
        entry = self._dir.pick(which)
        path = self.directory / entry.file
        from modelsafe.checkpoints import restore as _checkpoint_restore
        extra = _checkpoint_restore.restore(path, entry.step, model, {"optimizer": optimizer, "scheduler": scheduler,
                                                                      "scaler": scaler}, device)
        info = CheckpointInfo.of(self.directory, entry)
        return Restored(step=info.step, metrics=info.metrics, path=info.path, time=info.time, extra=extra)

    def _warn_unrankable(self, step: int, values: Mapping[str, float]) -> None:
        if self.monitor is None:
            return
        value = values.get(self.monitor)
        if value is None:
            problem = f"is not among its metrics ({', '.join(sorted(values)) or 'none given'})"
        elif math.isnan(value):
            problem = "is NaN"
        else:
            return
        warnings.warn(f"The monitored metric {self.monitor!r} of checkpoint step {step} {problem}, so this checkpoint "
                      f"can never be the best one (it is kept only among the last {self.keep_last}). Pass "
                      f"metrics={{{self.monitor!r}: value}} to save, or set monitor= to a metric you report.",
                      MetricWarning, stacklevel=3)


def _write() -> Any:
    from modelsafe.checkpoints import write as _checkpoint_write
    return _checkpoint_write


def _snapshot() -> Any:
    from modelsafe.checkpoints import snapshot as _checkpoint_snapshot
    return _checkpoint_snapshot


def _check_step(step: Any) -> int:
    try:
        value = operator.index(step)
    except TypeError:
        value = -1
    if isinstance(step, bool) or value < 0:
        raise ValueError(f"Invalid `step`: expected a non-negative integer (the training step or epoch). "
                         f"Received: step={step!r}")
    return value


def _check_metrics(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    if metrics is None:
        return {}
    if not isinstance(metrics, Mapping):
        raise ValueError(f"Invalid `metrics`: expected a mapping of names to numbers. Received: metrics={metrics!r}")
    values = {}
    for name, value in metrics.items():
        try:
            values[str(name)] = float(value.item() if hasattr(value, "item") else value)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"Invalid `metrics`: expected numbers, but {name!r} is {value!r}. Pass floats (e.g. "
                             f"float(loss)); put other values in extra=.") from None
    return values


# ---------------------------------------------------------------------------------------
# process exit flushes pending writes
# ---------------------------------------------------------------------------------------

_LIVE: "weakref.WeakSet[Checkpointer]" = weakref.WeakSet()


def _flush_at_exit() -> None:
    for checkpointer in list(_LIVE):
        try:
            checkpointer.close()
        except Exception as exc:  # noqa: BLE001 - nobody is left to catch it: say it
            sys.stderr.write(f"modelsafe: the last checkpoint was not written: {exc}\n")


def _register_exit_hook() -> None:
    """Flush before the interpreter stops thread pools (the artifact writer hashes on one).

    ``threading._register_atexit`` hooks run at the start of interpreter shutdown, in reverse
    order of registration, before non-daemon threads are joined; ``concurrent.futures``
    registers there the hook that refuses new work, so ours (registered after it) runs first.
    Plain ``atexit`` hooks would run only after that.
    """
    import concurrent.futures.thread  # noqa: F401 - its shutdown hook must be registered before ours

    register = getattr(threading, "_register_atexit", None)
    if register is None:  # pragma: no cover - not CPython 3.9+
        atexit.register(_flush_at_exit)
    else:
        register(_flush_at_exit)


_register_exit_hook()
