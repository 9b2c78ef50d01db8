"""The public verbs. ``save`` and ``load`` are pipelines of named steps in their own
modules (:mod:`modelsafe._save`, :mod:`modelsafe._load`); this module adds the verbs
that read an artifact without loading it, and ``verify``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Mapping

from modelsafe._bundle import Bundle
from modelsafe._keywords import checked
from modelsafe._load import load
from modelsafe._save import save
from modelsafe.artifact.manifest import Manifest
from modelsafe.artifact.reader import manifest_of, read_manifest

if TYPE_CHECKING:
    from modelsafe.checks.environment import EnvReport
    from modelsafe.checks.verify import VerifyReport

__all__ = ["save", "load", "inspect", "verify", "check_env", "Bundle", "read_manifest"]

PathLike = str | os.PathLike[str]


@checked("inspect")
def inspect(path: PathLike, *, storage_options: Mapping[str, Any] | None = None) -> Manifest:
    """Read the manifest only: imports no framework and runs nothing from the artifact.

    ``path`` may be an fsspec URL (``s3://bucket/model.msafe``; ``storage_options`` for its
    store): only the zip's end records and the manifest are read, with range requests.

    Examples
    --------
    >>> import modelsafe as ms
    >>> ms.inspect("/tmp/doc-model.msafe").components["model"].flavor
    'sklearn'
    """
    return manifest_of(path, storage_options)


def verify(path: PathLike, **load_kwargs: Any) -> "VerifyReport":
    """Load ``path`` (integrity, audit, environment) and return the verification report.

    Every member is hashed again, even in an unchanged file the verified-hash cache knows.
    ``path`` may be an fsspec URL (pass ``storage_options=`` for its store, as to :func:`load`).

    Examples
    --------
    >>> import modelsafe as ms
    >>> ms.verify("/tmp/doc-model.msafe").ok
    True
    """
    load_kwargs["verify"] = False
    load_kwargs["hash_cache"] = False
    bundle = load(path, **load_kwargs)
    try:
        return bundle.verify()
    finally:
        bundle.close()


@checked("check_env")
def check_env(path: PathLike, *, storage_options: Mapping[str, Any] | None = None) -> "EnvReport":
    """Compare the environment recorded in ``path`` with this one; imports no framework.

    Like :func:`inspect`, reads only the manifest (range requests for a URL).

    Examples
    --------
    >>> import modelsafe as ms
    >>> ms.check_env("/tmp/doc-model.msafe").ok
    True
    """
    from modelsafe.checks.environment import manifest_environment

    return manifest_environment(inspect(path, storage_options=storage_options).environment, str(path))
