"""The pending write of an asynchronous Checkpointer: its thread, the optimizer step it holds, its error.

``save`` captures a :class:`~modelsafe.checkpoints.snapshot.HostSnapshot` on the training
thread and hands it here. The thread first copies what the snapshot left for later (the
optimizer's state, and a new run's parameters at its first save, see :mod:`.deferred`) and
then lets the held ``optimizer.step()`` go; a deferred parameter changed meanwhile by a path
nothing held fails that checkpoint. Then it writes the artifact and updates the index. Its error is given to the training
thread by :meth:`BackgroundWrite.join`, at the Checkpointer's next call.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelsafe.checkpoints import index as idx
    from modelsafe.checkpoints.deferred import Deferral
    from modelsafe.checkpoints.snapshot import HostSnapshot

__all__ = ["BackgroundWrite"]


class BackgroundWrite:
    """Write ``snap`` as checkpoint ``entry`` of ``directory`` in a thread started at once."""

    def __init__(self, directory: Any, entry: "idx.Entry", snap: "HostSnapshot", prepared: Any,
                 deferral: "Deferral | None") -> None:
        self._directory, self._entry = directory, entry
        self._snap, self._prepared, self._deferral = snap, prepared, deferral
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"modelsafe-checkpoint-{entry.step}", daemon=False)
        if deferral is not None:
            deferral.hold()  # before save returns: the next optimizer.step() waits for the copy
        self._thread.start()

    def _run(self) -> None:
        from modelsafe.checkpoints.write import write_snapshot

        try:
            with self._directory.failures(self._entry, background=True):
                try:
                    self._snap.copy_deferred()
                finally:  # copied, or failed (the error comes at the next call): training goes on
                    if self._deferral is not None:
                        self._deferral.release()
                if self._deferral is not None:
                    _refuse_changed(self._deferral.changed(), self._entry.step)
                write_snapshot(self._directory.path / self._entry.file, self._snap, self._prepared)
                self._directory.commit(self._entry)
        except BaseException as exc:  # noqa: BLE001 - handed to the next call on the training thread
            self._error = exc

    def join(self) -> BaseException | None:
        """Wait for the write (on the training thread); remove the step hook; return its error, if any."""
        self._thread.join()
        if self._deferral is not None:
            self._deferral.remove()
        return self._error


def _refuse_changed(names: list[str], step: int) -> None:
    """A deferred parameter changed before its copy was made, by a path nothing held: the snapshot is not
    the state at the call, so it is not written."""
    if names:
        from modelsafe.errors import SaveError

        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise SaveError(
            f"The checkpoint of step {step} was not written: parameter(s) {shown} changed in place after save() "
            "returned and before their background copy was made, by a path modelsafe cannot hold (another thread, "
            "a compiled kernel, or a .data alias taken before save). It would not hold the state at the call. The "
            "checkpoints already on disk are unchanged. Call Checkpointer.wait() before changing parameters that "
            "way after a save, and save again.", step=step)
