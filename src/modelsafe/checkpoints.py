"""``ms.Checkpointer``: training checkpoints that are snapshots, survive crashes and resume exactly.

Every checkpoint is a modelsafe artifact (``step-0000000120.msafe``) in one directory, next
to an index (``checkpoints.json``); see :mod:`modelsafe._checkpoint_index` for the layout,
:mod:`modelsafe._checkpoint_write` for what an artifact holds and
:mod:`modelsafe._checkpoint_state` for the training state. Nothing is pickled.

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

from modelsafe import _checkpoint_index as idx
from modelsafe.errors import FormatError, SaveError

if TYPE_CHECKING:
    import os

    import numpy as np

__all__ = ["Checkpointer", "CheckpointInfo", "Restored", "MetricWarning"]


class MetricWarning(UserWarning):
    """The monitored metric is missing or NaN, so the checkpoint cannot become 'best'."""


@dataclass(frozen=True)
class CheckpointInfo:
    """One checkpoint on disk: its step, metrics, artifact path, save time and size in bytes."""

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
        Where checkpoints go (created at the first save).
    monitor
        The metric (a key of ``metrics``) that ranks checkpoints; None keeps only the last ones.
    mode
        ``"min"`` (a loss) or ``"max"`` (an accuracy): which values of ``monitor`` are better.
    keep_best, keep_last
        How many of the best and of the most recent checkpoints to keep (each at least 1).
        Older ones are deleted; the newest and the best never are.
    async_save
        Copy the state to host memory and write in a background thread: ``save`` returns
        once the copy is made. At most one write is pending; errors surface on the next call.

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

    def __init__(self, directory: str | os.PathLike[str], *, monitor: str | None = None, mode: str = "min",
                 keep_best: int = 1, keep_last: int = 1, async_save: bool = False) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"Invalid `mode`: expected 'min' or 'max'. Received: mode={mode!r}")
        for name, value in (("keep_best", keep_best), ("keep_last", keep_last)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Invalid `{name}`: expected an integer of at least 1 (the newest and the best "
                                 f"checkpoint are always kept). Received: {name}={value!r}")
        if monitor is not None and not isinstance(monitor, str):
            raise ValueError(f"Invalid `monitor`: expected a metric name (str) or None. Received: monitor={monitor!r}")
        self.directory = Path(directory)
        self.monitor, self.mode = monitor, mode
        self.keep_best, self.keep_last = keep_best, keep_last
        self.async_save = bool(async_save)
        self._lock = idx.DirectoryLock(self.directory)
        weakref.finalize(self, self._lock.release)
        self._context = _write().SaveContext()
        self._buffers: dict[str, np.ndarray] = {}
        self._pending: threading.Thread | None = None
        self._error: BaseException | None = None
        self._reserved = 0
        if self.directory.is_dir() and self._lock.acquire():  # nobody writes here: repair what a crash left
            try:
                self._repair()
            finally:
                self._lock.release()
        _LIVE.add(self)

    def __repr__(self) -> str:
        return (f"<modelsafe.Checkpointer {str(self.directory)!r} monitor={self.monitor!r} mode={self.mode!r} "
                f"keep_best={self.keep_best} keep_last={self.keep_last} async_save={self.async_save}>")

    # -- saving -------------------------------------------------------------------------
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
        self._take_directory()
        entry = self._reserve(step, values)
        parts = {"optimizer": optimizer, "scheduler": scheduler, "scaler": scaler}
        facts = {"step": step, "seq": entry.seq, "time": entry.time, "metrics": idx.encode_metrics(values),
                 "monitor": self.monitor, "mode": self.mode}
        capture = self._capturer(model, parts, extra, facts)
        path = self.directory / entry.file
        write = _write()
        if not self.async_save:
            with _WriteFailure(self, entry):
                write.write_now(path, capture)
                self._commit(entry)
            return CheckpointInfo.of(self.directory, self._sized(entry))
        snap, prepared = write.snapshot(self._buffers, capture)
        self._pending = threading.Thread(target=self._write_in_background, args=(entry, snap, prepared),
                                         name=f"modelsafe-checkpoint-{step}", daemon=False)
        self._pending.start()
        return CheckpointInfo.of(self.directory, replace_size(entry, snap.nbytes))

    def _capturer(self, model: Any, parts: Mapping[str, Any], extra: Any, facts: Mapping[str, Any]) -> Any:
        from modelsafe.flavors import detect_flavor

        if detect_flavor(model) == "keras":
            from modelsafe import _checkpoint_keras as state_module
        else:
            from modelsafe import _checkpoint_state as state_module  # type: ignore[no-redef]
        state = state_module.training_state(model, parts, extra)  # RNG and references taken now, at the call
        write = _write()
        return lambda target: write.prepare(target, model, lambda store: state_module.write_state(store, state),
                                            facts, self._context)

    def _write_in_background(self, entry: idx.Entry, snap: Any, prepared: Any) -> None:
        try:
            with _WriteFailure(self, entry, background=True):
                _write().write_snapshot(self.directory / entry.file, snap, prepared)
                self._commit(entry)
        except BaseException as exc:  # noqa: BLE001 - handed to the next call on the training thread
            self._error = exc

    def wait(self) -> None:
        """Wait for a pending background write; raise its error if it failed (once)."""
        pending = self._pending
        if pending is not None:
            pending.join()
            self._pending = None
        error, self._error = self._error, None
        if error is not None:
            raise error

    def close(self) -> None:
        """Flush the pending write and let other processes write to the directory."""
        try:
            self.wait()
        finally:
            self._lock.release()

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
        return [CheckpointInfo.of(self.directory, e) for e in sorted(self._entries(), key=lambda e: e.seq)]

    @property
    def latest(self) -> CheckpointInfo | None:
        """The most recently saved checkpoint, or None."""
        self.wait()
        entry = idx.latest(self._entries())
        return None if entry is None else CheckpointInfo.of(self.directory, entry)

    @property
    def best(self) -> CheckpointInfo | None:
        """The checkpoint with the best finite ``monitor`` value, or None (no monitor, or none yet)."""
        self.wait()
        entry = idx.best(self._entries(), self.monitor, self.mode)
        return None if entry is None else CheckpointInfo.of(self.directory, entry)

    # -- restoring ----------------------------------------------------------------------
    def restore(self, *, model: Any, optimizer: Any = None, scheduler: Any = None, scaler: Any = None,
                which: str | int = "latest", device: Any = None) -> Restored:
        """Restore ``model`` (and whatever else is given) from a checkpoint; return its step and metrics.

        ``which`` is ``"latest"``, ``"best"`` or a step number. The weights are copied into
        the given objects (an optimizer built over the model's parameters stays valid), the
        Python, numpy and torch RNG states are put back, and ``device`` (e.g. ``"cuda"``)
        moves the model there first. Everything is checked before anything changes.
        """
        self.wait()
        entry = self._pick(which)
        path = self.directory / entry.file
        from modelsafe import _checkpoint_restore

        extra = _checkpoint_restore.restore(path, entry.step, model, {"optimizer": optimizer, "scheduler": scheduler,
                                                                      "scaler": scaler}, device)
        info = CheckpointInfo.of(self.directory, entry)
        return Restored(step=info.step, metrics=info.metrics, path=info.path, time=info.time, extra=extra)

    def _pick(self, which: str | int) -> idx.Entry:
        entries = self._entries()
        if not entries:
            state = "does not exist" if not self.directory.exists() else "holds no checkpoints"
            raise FormatError(
                f"No checkpoint to restore: {str(self.directory)!r} {state}. Nothing can be restored from it. Check "
                "the directory (it is the one given to Checkpointer), or start training from scratch and save "
                "there first.", path=str(self.directory), which=which)
        if which == "latest":
            return idx.latest(entries)  # type: ignore[return-value]
        if which == "best":
            return self._pick_best(entries)
        if isinstance(which, str) or isinstance(which, bool):
            raise ValueError(f"Invalid `which`: expected 'latest', 'best' or a step number. Received: which={which!r}")
        step = operator.index(which)
        matching = [e for e in entries if e.step == step]
        if not matching:
            steps = sorted({e.step for e in entries})
            raise FormatError(
                f"No checkpoint of step {step} in {str(self.directory)!r}; the steps on disk are {steps}. Older "
                "checkpoints are deleted as keep_best/keep_last say. Pick one of those steps, 'latest' or 'best'.",
                path=str(self.directory), which=step, steps=steps)
        return idx.latest(matching)  # type: ignore[return-value]

    def _pick_best(self, entries: list[idx.Entry]) -> idx.Entry:
        if self.monitor is None:
            raise ValueError("Invalid `which`: 'best' needs a metric to rank by, but this Checkpointer has "
                             "monitor=None. Pass monitor='<metric name>' (and mode) to Checkpointer, or restore "
                             "which='latest'.")
        found = idx.best(entries, self.monitor, self.mode)
        if found is None:
            names = sorted({k for e in entries for k in e.metrics})
            raise FormatError(
                f"No checkpoint in {str(self.directory)!r} has a finite {self.monitor!r} metric (metrics recorded: "
                f"{names or 'none'}), so none is 'best'. Restore which='latest', or pass monitor= one of the "
                "recorded metrics.", path=str(self.directory), monitor=self.monitor)
        return found

    # -- the directory and its index ----------------------------------------------------
    def _take_directory(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SaveError(f"Cannot create the checkpoint directory {str(self.directory)!r}: {exc}. No checkpoint "
                            "can be written there. Choose a writable directory.", path=str(self.directory)) from exc
        if self._lock.held:
            return
        if not self._lock.acquire():
            raise SaveError(
                f"{self._lock.holder()} is writing checkpoints to {str(self.directory)!r}. Two writers would delete "
                "each other's checkpoints and temporaries. Use another directory for this run, or stop the other "
                "one (its lock is released when it ends or calls close()).", path=str(self.directory))
        if self._lock.first_holder:
            self._repair()

    def _repair(self) -> None:
        with self._lock.index_lock:
            index, repair = self._read(clean=True)
            if repair.adopted or repair.lost:
                idx.write_index(self.directory, index)

    def _read(self, *, clean: bool = False) -> tuple[idx.Index, idx.Repair]:
        try:
            index = idx.read_index(self.directory)
        except idx.IndexDamaged as exc:
            warnings.warn(f"{exc}; it is rebuilt from the checkpoint files themselves.", RuntimeWarning, stacklevel=4)
            index = None
        return idx.reconcile(self.directory, index, clean=clean)

    def _entries(self) -> list[idx.Entry]:
        if not self.directory.is_dir():
            return []
        with self._lock.index_lock:
            return list(self._read()[0].entries)

    def _reserve(self, step: int, metrics: Mapping[str, float]) -> idx.Entry:
        with self._lock.index_lock:
            index = self._read()[0]
            seq = max(index.next_seq, self._reserved + 1)
            self._reserved = seq
            name = idx.artifact_name(step, seq, [e.file for e in index.entries] + _names(self.directory))
        return idx.Entry(step=step, seq=seq, file=name, time=idx.now(), metrics=dict(metrics))

    def _sized(self, entry: idx.Entry) -> idx.Entry:
        return replace_size(entry, (self.directory / entry.file).stat().st_size)

    def _commit(self, entry: idx.Entry) -> None:
        """Add the written checkpoint to the index (atomically), then delete what retention drops."""
        with self._lock.index_lock:
            index = self._read()[0].without({entry.seq}).with_entry(self._sized(entry))
            keep = {e.seq for e in idx.retained(list(index.entries), monitor=self.monitor, mode=self.mode,
                                                 keep_best=self.keep_best, keep_last=self.keep_last)}
            dropped = [e for e in index.entries if e.seq not in keep]
            idx.write_index(self.directory, index.without({e.seq for e in dropped}))
            for old in dropped:
                try:
                    (self.directory / old.file).unlink(missing_ok=True)
                except OSError as exc:
                    warnings.warn(f"Could not delete the old checkpoint {old.file}: {exc}. It is no longer listed; "
                                  "delete it by hand to free the space.", RuntimeWarning, stacklevel=2)

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


class _WriteFailure:
    """Turns an OS error during a write into a SaveError that says the older checkpoints are intact."""

    def __init__(self, checkpointer: Checkpointer, entry: idx.Entry, *, background: bool = False) -> None:
        self.checkpointer, self.entry, self.background = checkpointer, entry, background

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc is None or not isinstance(exc, OSError):
            return
        ck, entry = self.checkpointer, self.entry
        with ck._lock.index_lock:
            entries = ck._read()[0].entries
        newest = idx.latest(entries)
        intact = (f"the {len(entries)} checkpoint(s) already there are intact (latest: step {newest.step}, "
                  f"{newest.file})" if newest else "no earlier checkpoint exists")
        full = getattr(exc, "errno", None) in (28, 27, 122)  # ENOSPC, EFBIG, EDQUOT
        fix = ("Free disk space (or raise the quota / file-size limit)" if full else
               "Fix the directory's permissions or choose a writable directory")
        raise SaveError(
            f"Checkpoint step {entry.step} could not be written{' (in the background)' if self.background else ''} "
            f"to {str(ck.directory / entry.file)!r}: "
            f"{exc.strerror or exc} (errno {exc.errno}). Nothing was half-written: its temporary file was removed and "
            f"{intact}. {fix}, then save again.", path=str(ck.directory / entry.file), step=entry.step,
            errno=exc.errno, latest=None if newest is None else newest.step, background=self.background) from exc


def replace_size(entry: idx.Entry, size: int) -> idx.Entry:
    return idx.Entry(entry.step, entry.seq, entry.file, entry.time, entry.metrics, size)


def _names(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir()] if directory.is_dir() else []


def _write() -> Any:
    from modelsafe import _checkpoint_write

    return _checkpoint_write


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
