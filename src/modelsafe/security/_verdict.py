"""The one verdict on a global, and on a finding, that ``scan`` and ``doctor`` both use.

A global is rated by its canonical name (:func:`._allowlist.canonical`): *safe*, *dangerous*
or *unknown*. Its severity follows from the rating and from how the stream uses it:

* dangerous (runs commands or code, reaches files or the network): **critical**;
* unknown and **called** while loading: **critical** too, since unpickling runs it
  before anyone can look at it, and nothing vouches for what it does;
* unknown and only referenced as a value: **high** (it runs only if the model calls it).

Every finding blocks: a file with any finding is not ``ok`` for :func:`modelsafe.scan`, and
:func:`modelsafe.doctor` reports each one as an error ("it will not load here, not safely").
:func:`blocks` is that rule, in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelsafe.security._allowlist import canonical, verdict

#: Globals of a TorchScript archive's pickles that name the archive's own TorchScript classes
#: (compiled from its ``code/`` members, whose source the scanner checks) and TorchScript's helpers.
TORCHSCRIPT_PREFIXES = ("__torch__.",)
TORCHSCRIPT_HELPERS = frozenset(f"torch.jit._pickle.{n}" for n in (
    "build_intlist", "build_tensorlist", "build_doublelist", "build_boollist", "build_tensor_from_id",
    "restore_type_tag"))


@dataclass(frozen=True)
class GlobalVerdict:
    """How one global is judged: its canonical name, rating and (unless safe) severity."""

    module: str
    qualname: str
    rating: str
    severity: str | None

    @property
    def kind(self) -> str:
        """The finding kind for this global ("dangerous-global", "unknown-global"), or "" when safe."""
        return "" if self.rating == "safe" else f"{self.rating}-global"


def judge_global(module: str, name: str, invoked: bool, *, container: str = "",
                 format_globals: frozenset[str] = frozenset()) -> GlobalVerdict:
    """The verdict on ``module.name`` as a stream uses it (``container``: the archive flavor it is in)."""
    written = f"{module}.{name}"
    if written in format_globals:
        return GlobalVerdict(module, written, "safe", None)
    if container == "torchscript" and (written.startswith(TORCHSCRIPT_PREFIXES) or written in TORCHSCRIPT_HELPERS):
        return GlobalVerdict(module, written, "safe", None)  # resolved by TorchScript, never imported by Python
    canon_module, canon_name = canonical(module, name)
    rating = verdict(module, name, invoked=invoked)
    return GlobalVerdict(canon_module, f"{canon_module}.{canon_name}", rating, severity(rating, invoked))


def severity(rating: str, invoked: bool) -> str | None:
    if rating == "dangerous" or (rating == "unknown" and invoked):
        return "critical"
    return "high" if rating == "unknown" else None


def blocks(finding: object) -> bool:
    """Whether a finding stops the file from being ``ok`` (for scan) and loading here (for doctor): all do."""
    return getattr(finding, "severity", None) in ("critical", "high", "medium")
