"""``ms.doctor``: why won't this file load here (a path), or why won't this object save.

For a path nothing is loaded (:mod:`modelsafe.diagnosis`). For an object, a dry-run ``save`` into
a temporary folder finds everything that would stop it, each attribute by its path; it lives
here, beside the other verbs, because it runs one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from modelsafe._keywords import checked
from modelsafe._reports import Problem
from modelsafe.artifact.location import is_url
from modelsafe.code.diagnose import type_name
from modelsafe.diagnosis.report import DoctorReport
from modelsafe.errors import SaveError, UnsavableObjectError

__all__ = ["doctor", "DoctorReport", "Problem", "diagnose_object"]


@checked("doctor")
def doctor(target: Any, *, storage_options: Mapping[str, Any] | None = None) -> DoctorReport:
    """Explain why a model file won't load here, or why an object won't save.

    Parameters
    ----------
    target
        A path (any model file or folder: pickle, joblib, torch, Keras, modelsafe artifact):
        nothing in it is loaded or imported. Or a Python object: the problems that would
        stop ``ms.save`` are listed, each attribute by its path. A URL (``s3://...``) is
        copied to a private temporary folder first, and diagnosed there.
    storage_options
        For a URL: options of the store's fsspec filesystem (credentials, ``endpoint_url``...).

    Returns
    -------
    DoctorReport
        ``ok`` when nothing stops it; otherwise each problem with what, why and how to fix.

    Raises
    ------
    FormatError
        The path does not exist or cannot be read.

    Examples
    --------
    >>> import pickle, modelsafe as ms
    >>> with open("/tmp/doc-doctor.pkl", "wb") as f:
    ...     pickle.dump({"weights": [1.0, 2.0]}, f)
    >>> ms.doctor("/tmp/doc-doctor.pkl").ok
    True
    >>> import threading
    >>> ms.doctor({"lock": threading.Lock()}).ok
    False
    """
    if isinstance(target, (str, os.PathLike)):
        from modelsafe.diagnosis.files import diagnose_path

        if is_url(target):  # read as a local file is: a private copy, removed afterwards (see _staging)
            import dataclasses

            from modelsafe._staging import staged

            with staged(target, storage_options) as local:
                return dataclasses.replace(diagnose_path(local), target=str(target))
        return diagnose_path(Path(target))
    return _doctor_object(target)


def _doctor_object(obj: Any) -> DoctorReport:
    """Everything that would stop ``ms.save(obj)``, each attribute named by its path."""
    cls = type(obj)
    problems = [
        Problem(what=f"{path} ({type_name}) cannot be stored", why=reason,
                fix="drop or replace this attribute before saving (implement __getstate__ to leave it out, "
                    "reopen connections and files after loading, use a named function instead of a lambda)",
                subject=path)
        for path, type_name, reason in diagnose_object(obj)
    ]
    return DoctorReport(target=f"{cls.__module__}.{cls.__qualname__}", kind="object", problems=tuple(problems))


def diagnose_object(obj: Any, **save_options: Any) -> list[tuple[str, str, str]]:
    """Everything that would stop ``ms.save(obj, ...)``, found by a save into a temporary folder.

    Returns ``(attribute path, type name, reason)`` triples, ``[]`` when the object saves. Nothing
    is left on disk.
    """
    import shutil
    import tempfile

    from modelsafe._save import save

    folder = Path(tempfile.mkdtemp(prefix="modelsafe-doctor-"))
    try:
        save(obj, folder / "artifact", **save_options)
    except UnsavableObjectError as exc:
        return list(exc.problems)
    except SaveError as exc:
        return [("<root>", type_name(obj), str(exc))]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return []
