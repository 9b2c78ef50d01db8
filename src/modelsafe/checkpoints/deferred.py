"""State copied after an async save has returned, while nothing may change it.

An async checkpoint is a snapshot: it holds the state at the call, whatever the training
loop does next. The optimizer's per-parameter state (Adam's two moments: two thirds of a
checkpoint with Adam) is changed by ``optimizer.step()`` and, rarely, by the loop's own
code. :class:`Deferral` leaves those bytes for the background thread to copy, and until
they are copied:

* a step pre-hook (``Optimizer.register_step_pre_hook``) holds the optimizer's next
  ``step()``, from any thread;
* a torch function mode on the thread that saved holds every torch call that reaches that
  state's memory (``opt.state[p]["exp_avg"].zero_()``, ``.copy_()``, ``.numpy()``,
  ``load_state_dict``), reads included.

Module parameters and buffers change in place in more places (``p.add_()`` under
``no_grad``, a weight clip, a BatchNorm's running statistics inside the forward pass), and
the forward pass reads them, so they are normally copied before ``save`` returns: into
buffers already made, that copy runs at memory speed. The first snapshot of a run has no
buffers yet, and the first touch of fresh memory costs several times the copy (seconds for
a few GiB), so it also defers the *parameters* (``parameters=True``; buffers are still
copied at once). The mode then also holds every call that may *write* to a parameter's
memory (an in-place method or operator, ``out=``, an op whose schema writes, ``.numpy()``,
``data_ptr()``, storage access), while reads (the forward pass) go on; and each parameter's
version counter, which every in-place change through torch bumps, is compared once the copy
is made: a parameter changed by a path the mode does not see (another thread, a compiled
kernel) makes that checkpoint fail with a :class:`~modelsafe.errors.SaveError` naming it,
rather than hold a state that never existed.

Training goes on meanwhile: forward, backward, ``zero_grad``, a scheduler step. The mode is
left at the next step or Checkpointer call, once it is on top of the thread's stack again
(until then it only passes calls on). Not held, so landing in the checkpoint if made
before the copy ends (``Checkpointer.wait()`` returns after it): a change of the
optimizer's state by another thread other than through ``step()``, and a change through
memory taken before ``save`` (a NumPy view of the state kept from earlier, a raw pointer
in an extension, a parameter's ``.data`` alias taken before ``save``, whose version
counter is its own). Nothing is deferred, so all of the state is copied before ``save``
returns, when the optimizer is not a ``torch.optim.Optimizer``, when a torch function mode
is active at ``save`` (inside ``with torch.device(...)``, after ``torch.set_default_device``:
leaving that mode would take ours off the stack instead), and for state tensors that share
memory with the module's.
"""

from __future__ import annotations

import bisect
import sys
import threading
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    import numpy as np

__all__ = ["Deferral"]


def _ranges(tensors: Iterable[Any]) -> list[tuple[int, int]]:
    """The [start, end) host addresses of the storages of the CPU tensors in ``tensors``, merged and sorted."""
    spans = sorted({(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
                    for t in tensors if t.device.type == "cpu" and t.untyped_storage().nbytes()})
    merged: list[tuple[int, int]] = []
    for start, size in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], start + size))
        else:
            merged.append((start, start + size))
    return merged


def _overlaps(span: tuple[int, int], spans: list[tuple[int, int]]) -> bool:
    """Whether ``span`` overlaps one of the sorted, disjoint ``spans``."""
    i = bisect.bisect_right(spans, (span[1],))  # the spans that start before span ends
    return i > 0 and spans[i - 1][1] > span[0]


class _Spans:
    """Sorted, disjoint address ranges, asked whether they hold an address range."""

    def __init__(self, ranges: list[tuple[int, int]]) -> None:
        self._starts = [start for start, _ in ranges]
        self._ends = [end for _, end in ranges]

    def hold(self, start: int, size: int) -> bool:
        i = bisect.bisect_right(self._starts, start) - 1
        return i >= 0 and start + size <= self._ends[i]


def _function_modes() -> int | None:
    """How many torch function modes are active on this thread (None: this torch does not say)."""
    count = getattr(sys.modules["torch"]._C, "_len_torch_function_stack", None)
    return None if count is None else count()


#: Calls that write without an in-place name, or hand out a parameter's memory beyond torch's sight: held like
#: writes. (Setting ``.grad`` or ``.data`` rebinds the attribute and leaves the parameter's memory as it was.)
_ESCAPES = frozenset({"numpy", "__array__", "__dlpack__", "data_ptr", "untyped_storage", "storage",
                      "_typed_storage", "__setitem__"})
#: The in-place operators (``p += x``, ``p *= x``, ...).
_INPLACE_OPERATORS = frozenset(f"__i{op}__" for op in ("add", "sub", "mul", "matmul", "truediv", "floordiv", "mod",
                                                        "pow", "lshift", "rshift", "and", "xor", "or"))


def _writes(func: Any, kwargs: dict) -> bool:
    """Whether ``func`` may write to (or expose for writing) the memory of a tensor it is given."""
    if "out" in kwargs:
        return True
    name = getattr(func, "__name__", "")
    if name in _ESCAPES or name in _INPLACE_OPERATORS or (name.endswith("_") and not name.endswith("__")):
        return True  # numpy, __setitem__; __iadd__, __imul__; add_, copy_, _foreach_mul_
    schema = getattr(func, "_schema", None)  # torch.ops.aten.* overloads say which arguments they write
    return schema is not None and any(a.alias_info is not None and a.alias_info.is_write for a in schema.arguments)


def _guard(held: _Spans, written: _Spans | None, copied: threading.Event) -> Any:
    """A torch function mode that holds, until ``copied`` is set, every torch call reaching ``held``
    and every call that may write to ``written``."""
    import torch
    from torch.overrides import TorchFunctionMode

    def reaches(spans: _Spans, value: Any) -> bool:
        for item in value if isinstance(value, (list, tuple)) else (value,):  # foreach ops take lists
            if isinstance(item, torch.Tensor) and item.device.type == "cpu" and item.layout == torch.strided:
                storage = item.untyped_storage()
                if spans.hold(storage.data_ptr(), 1):
                    return True
        return False

    class HoldUntilCopied(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            if not copied.is_set():
                values = (*args, *kwargs.values())
                if (any(reaches(held, value) for value in values)
                        or written is not None and _writes(func, kwargs) and any(reaches(written, v) for v in values)):
                    copied.wait()
            return func(*args, **kwargs)

    return HoldUntilCopied()


class Deferral:
    """The optimizer state bytes a snapshot may copy after ``save`` returns, and what waits for them.

    :meth:`covers` tells the snapshot which pieces to leave for later; :meth:`hold` (before
    ``save`` returns) registers the step pre-hook and enters the function mode;
    :meth:`release` (the background thread, once the copy is made, or failed) lets them
    go; :meth:`remove` (the training thread, at the Checkpointer's next call) leaves the
    mode, as the hook does at a step, and then unregisters the hook (which stays, to leave
    the mode at a later step, while a mode entered after ``save`` is above ours).
    """

    def __init__(self, optimizer: Any, ranges: list[tuple[int, int]],
                 parameters: list[tuple[str, Any]] | None = None) -> None:
        self._optimizer = optimizer
        own = _ranges(p for _, p in parameters or ())
        self._state = _Spans(ranges)  # held at every call that reaches it
        self._written = _Spans(own) if own else None  # held at every call that may write to it
        self._spans = _Spans(sorted(ranges + own))  # what the snapshot leaves for the background copy
        #: The deferred parameters, by name, with their version counters at the call.
        self._versions = [(name, p, p._version) for name, p in parameters or ()]
        self._copied = threading.Event()
        self._changed: list[str] = []
        self._handle: Any = None
        self._mode: Any = None
        self._thread: int | None = None

    @classmethod
    def of(cls, model: Any, optimizer: Any, *, parameters: bool = False) -> "Deferral | None":
        """The deferral of ``optimizer``'s state (and, with ``parameters``, of the module's parameters), or
        None when all of it is copied at once (see the module)."""
        torch = sys.modules.get("torch")  # a Keras run does not import torch for this
        if torch is None or not isinstance(optimizer, torch.optim.Optimizer) or _function_modes() != 0:
            return None
        state = [value for per_param in optimizer.state.values() if isinstance(per_param, dict)
                 for value in per_param.values() if isinstance(value, torch.Tensor) and value.layout == torch.strided]
        module = list(model.parameters()) + list(model.buffers()) if isinstance(model, torch.nn.Module) else []
        own = _ranges(module)
        ranges = [span for span in _ranges(state) if not _overlaps(span, own)]
        deferred = None
        if parameters and isinstance(model, torch.nn.Module):
            buffers = _ranges(model.buffers())  # a parameter sharing memory with a buffer is copied at once
            deferred = [(name, p) for name, p in model.named_parameters()
                        if p.device.type == "cpu" and p.layout == torch.strided
                        and not any(_overlaps(span, buffers) for span in _ranges([p]))]
        return cls(optimizer, ranges, deferred) if ranges or deferred else None

    def covers(self, array: "np.ndarray") -> bool:
        """Whether all of ``array``'s bytes lie in the deferred state (memory that waits for the copy)."""
        return self._spans.hold(array.__array_interface__["data"][0], array.nbytes)

    def hold(self) -> None:
        """Hold the optimizer's next ``step()`` and this thread's torch calls on its state until :meth:`release`."""
        copied, leave = self._copied, self._leave

        def wait_for_the_checkpoint_copy(optimizer: Any, args: Any, kwargs: Any) -> None:
            copied.wait()
            leave()

        self._handle = self._optimizer.register_step_pre_hook(wait_for_the_checkpoint_copy)
        self._mode = _guard(self._state, self._written, copied)
        self._mode.__enter__()
        self._thread = threading.get_ident()

    def release(self) -> None:
        """The copy is made (or failed): let what waits go, after reading which parameters changed before."""
        self._changed = self.changed()
        self._copied.set()

    def changed(self) -> list[str]:
        """The deferred parameters changed in place between the call and :meth:`release` (their copy may then
        not be their state at the call); before the release, those changed so far."""
        if self._copied.is_set():
            return self._changed
        return [name for name, p, version in self._versions if p._version != version]

    def remove(self) -> None:
        self._leave()
        if self._mode is None and self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _leave(self) -> None:
        """Take the mode off this thread's stack when it is on top there (a mode entered later stays above it)."""
        mode = self._mode
        if mode is None or threading.get_ident() != self._thread or not self._copied.is_set():
            return
        torch = sys.modules["torch"]
        depth = torch._C._len_torch_function_stack()
        if depth and torch._C._get_function_stack_at(depth - 1) is mode:
            mode.__exit__(None, None, None)
            self._mode = None
