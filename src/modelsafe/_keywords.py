"""Keyword arguments: what each verb takes beyond its signature, and the check that refuses the rest.

A verb with ``**options`` (``save``, ``load``, ``convert``, ``export``) would otherwise
accept a misspelled keyword without a word, and a misspelled safety option would give no
safety. So every keyword is declared somewhere:

* in the verb's signature;
* in :data:`VERB_KEYWORDS` below, for keywords the verb itself reads from ``**options``
  (a capability that adds a keyword to a verb adds it there, with what it is for);
* by a flavor, as ``Flavor.save_options`` / ``Flavor.load_options`` (checked against the
  flavor actually used: see :mod:`modelsafe.flavors.keywords`).

:func:`check_keywords` raises :class:`~modelsafe.errors.UnknownKeywordError` (a
``TypeError``) naming every unknown keyword, with a "did you mean" when an accepted name is
close. :func:`checked` gives a verb with a fixed signature the same error.
"""

from __future__ import annotations

import difflib
import functools
from typing import Any, Callable, Collection, Iterable, Mapping, TypeVar

from modelsafe.errors import UnknownKeywordError

__all__ = ["VERB_KEYWORDS", "INTERNAL", "check_keywords", "checked", "declared", "signature_names"]

#: Keywords a verb reads from its ``**options``, with what each is for. Names marked
#: :data:`INTERNAL` are passed by modelsafe itself (the CLI, ``verify``, ``convert``): they
#: are accepted, and left out of the list a message shows.
INTERNAL = "internal"
VERB_KEYWORDS: dict[str, dict[str, str]] = {
    "save": {
        "training_data": "the data whose ranges the input guard records",
        "progress": INTERNAL,  # a callback counting the bytes written (the CLI's progress bar)
        "source": INTERNAL,  # where ms.convert read the model from (the manifest's provenance)
        "provenance": "what produced the model (git commit, datasets, free-form fields): modelsafe.signing",
        "portable": "'onnx' or 'try-onnx': add an ONNX member, checked on the sample with onnxruntime (modelsafe.portable)",
    },
    "load": {
        "progress": INTERNAL,  # a callback counting the bytes hashed
        "hash_cache": INTERNAL,  # False: hash every member again (ms.verify)
        "signature": "'auto', 'require' or 'ignore': check the signature beside the artifact (modelsafe.signing)",
        "trusted_keys": "the public keys (or root certificates) whose signatures are trusted (modelsafe.signing)",
        "runtime": "'native', 'onnx' or 'auto': run the framework, the portable ONNX member, or the member when the "
                   "framework cannot load here (modelsafe.portable)",
        "isolate": "True, or an environment's path: the model runs in a worker process inside the environment "
                   "recreated from the artifact's recorded requirements (modelsafe.envs)",
    },
    # predict_file, modelsafe.dask.predict and modelsafe.spark.udf pass the rest of their keywords to load,
    # checked against load's and the artifact's flavors' before any row is read (modelsafe.batch).
    "predict_file": {
        "progress": INTERNAL,  # a callback (rows done, rows in all or None): the CLI's progress bar
    },
}

F = TypeVar("F", bound=Callable[..., Any])


def signature_names(func: Callable[..., Any]) -> frozenset[str]:
    """The names a plain function or method accepts as keywords (not ``self``, nor its ``**kwargs``).

    Read from the code object: :mod:`inspect` would cost the import of a verb its import time.
    """
    code = func.__code__
    names = code.co_varnames[code.co_posonlyargcount : code.co_argcount + code.co_kwonlyargcount]
    return frozenset(name for name in names if name != "self")


def declared(verb: str) -> frozenset[str]:
    """The keywords ``verb`` reads from its ``**options`` (see :data:`VERB_KEYWORDS`)."""
    return frozenset(VERB_KEYWORDS.get(verb, ()))


def check_keywords(verb: str, given: Iterable[str], accepted: Collection[str], *,
                   owners: Mapping[str, str] | None = None, used: str = "") -> None:
    """Raise UnknownKeywordError unless every name in ``given`` is in ``accepted``.

    ``owners`` maps keywords that another flavor reads to that flavor's name, and ``used``
    names the flavor(s) actually used, so the message can say the keyword applies elsewhere.
    """
    unknown = [name for name in given if name not in accepted]
    if not unknown:
        return
    owners = {name: owners[name] for name in unknown if owners and name in owners}
    shown = sorted(name for name in accepted if not _internal(verb, name))
    suggestions = {name: _closest(name, accepted) for name in unknown if name not in owners}
    parts = []
    strangers = [name for name in unknown if name not in owners]
    if strangers:
        listed = ", ".join(repr(n) for n in strangers)
        hints = "; ".join(f"did you mean {s!r} instead of {n!r}?" for n, s in suggestions.items() if s)
        parts.append(f"{verb}() got unexpected keyword argument{'s' if len(strangers) > 1 else ''} {listed}"
                     + (f" ({hints})" if hints else ""))
    for name, flavor in owners.items():
        parts.append(f"{verb}() got {name!r}, an option of the {flavor} flavor, but {used or 'another flavor'} "
                     "is used here, which does not read it")
    fix = "Correct the spelling, or remove the argument" if strangers else \
        "Remove it, or check that this is the model you meant"
    raise UnknownKeywordError(
        f"{'. '.join(parts)}. modelsafe refuses keywords it would not use: a misspelled option would be ignored "
        f"silently, and a misspelled safety option would give no safety. {verb}() accepts: {', '.join(shown)}. "
        f"{fix}.",
        verb=verb, keywords=unknown, suggestions=suggestions, owners=owners, accepted=shown)


def _internal(verb: str, name: str) -> bool:
    return VERB_KEYWORDS.get(verb, {}).get(name) == INTERNAL


def _closest(name: str, accepted: Collection[str]) -> str | None:
    found = difflib.get_close_matches(name, sorted(accepted), n=1, cutoff=0.6)
    return found[0] if found else None


def checked(verb: str) -> Callable[[F], F]:
    """Give a verb with a fixed signature the same error as the others for an unknown keyword.

    Python's own ``TypeError`` names the keyword but offers no close match; this one does,
    and it is a ModelsafeError too. Positional arguments are left to Python.
    """

    def decorate(func: F) -> F:
        names = signature_names(func)

        @functools.wraps(func)
        def call(*args: Any, **kwargs: Any) -> Any:
            if not names.issuperset(kwargs):
                check_keywords(verb, kwargs, names)
            return func(*args, **kwargs)

        return call  # type: ignore[return-value]

    return decorate
