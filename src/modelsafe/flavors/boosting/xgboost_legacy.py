"""Legacy XGBoost pickles: which XGBoost wrote them, and how to get them out.

XGBoost does not promise that a pickled model loads in another version: the booster
inside the pickle is XGBoost's internal serialization, and a different version refuses
it ("please export the model by calling ``Booster.save_model`` from that version
first") or misreads it. That serialization carries the version that wrote it: a
``"version"`` entry in its configuration, as UBJSON (XGBoost 1.6 and later) or as JSON
text (1.0 to 1.5). This module finds it by reading the file's bytes, never by
unpickling: the objects the pickle names come from :func:`modelsafe.scan`, and the
bytes are streamed (through the scanner's decompressors for compressed joblib files)
in bounded memory. Importing it imports no framework.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from importlib import metadata
from typing import Any, BinaryIO, Iterable

__all__ = ["XGBoostPickle", "diagnose_xgboost_pickle", "writer_version"]

_CHUNK = 1 << 20
_OVERLAP = 128
#: ``"version": [1, 5, 2]`` in the JSON configuration of XGBoost 1.0-1.5.
_JSON_VERSION = re.compile(rb'"version"\s*:\s*\[\s*(\d{1,3})\s*,\s*(\d{1,3})\s*,\s*(\d{1,3})\s*\]')
#: The UBJSON key ``version`` followed by an array, in XGBoost 1.6 and later.
_UBJ_VERSION = re.compile(rb"version\[")
_UBJ_INTS = {b"i": (1, True), b"U": (1, False), b"I": (2, True), b"l": (4, True), b"L": (8, True)}


@dataclass(frozen=True)
class XGBoostPickle:
    """What a pickle or joblib file holding XGBoost objects says about itself.

    Attributes: ``path``; ``objects``, the XGBoost classes it names; ``written_by``, the
    XGBoost version whose serialization is inside (None when no version marker was found);
    ``installed``, the XGBoost version here (None when it is not installed).
    """

    path: str
    objects: tuple[str, ...]
    written_by: str | None
    installed: str | None

    @property
    def same_version(self) -> bool:
        return self.written_by is not None and self.written_by == self.installed

    def problem(self) -> str:
        what = ", ".join(self.objects)
        who = (f"by XGBoost {self.written_by}" if self.written_by else
               "by an XGBoost older than 1.0 (its booster carries no version marker), or it is damaged")
        here = f"this environment has XGBoost {self.installed}" if self.installed else "XGBoost is not installed here"
        return f"{self.path} is a pickle of {what} written {who}; {here}."

    @property
    def why(self) -> str:
        common = "XGBoost loads a pickled model only in the version that wrote it"
        if self.same_version:
            return (f"The versions match, so it can load here; but {common}, so it breaks anywhere else, and "
                    "unpickling runs whatever code the file names.")
        return f"{common}: another version refuses it or can misread it, and unpickling runs whatever code the file names."

    def fix(self) -> str:
        version = self.written_by or "<the version that wrote it>"
        wrapper = next((o.rpartition(".")[2] for o in self.objects if ".sklearn." in o), None)
        reload = f"xgboost.{wrapper}().load_model('model.json')" if wrapper else "xgboost.Booster(model_file='model.json')"
        steps = (f"In an environment with xgboost=={version}, load the file (only if you trust its source) and export "
                 "it in XGBoost's own format with model.save_model('model.json'), which every later XGBoost reads; "
                 f"then here rebuild it with {reload} and save it with ms.save.")
        if any(o.endswith("XGBoostLabelEncoder") for o in self.objects):
            steps += (" save_model does not keep the string labels of that version's label encoder: note "
                      "model.classes_ there and map predictions back yourself.")
        if self.written_by is None or tuple(int(p) for p in self.written_by.split(".")[:2]) >= (1, 6):
            steps += (f" Or run `modelsafe convert {self.path} model.msafe` in that environment, which keeps the "
                      "scikit-learn wrapper's state too.")
        return steps

    def __str__(self) -> str:
        return f"{self.problem()} {self.why}\nHow to fix: {self.fix()}"

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "objects": list(self.objects), "written_by": self.written_by,
                "installed": self.installed, "same_version": self.same_version,
                "problem": self.problem(), "why": self.why, "fix": self.fix()}


def diagnose_xgboost_pickle(path: str | os.PathLike[str], names: Iterable[str] | None = None) -> XGBoostPickle | None:
    """Describe a pickle/joblib file that holds XGBoost objects; None when it holds none.

    Parameters
    ----------
    path
        The file. It is read as bytes, never unpickled.
    names
        The globals its pickle streams name, if the caller scanned it already
        (e.g. ``ms.scan(path).globals()``); otherwise it is scanned here.

    Examples
    --------
    >>> import pickle
    >>> from modelsafe.flavors.boosting.xgboost_legacy import diagnose_xgboost_pickle
    >>> with open("/tmp/doc-plain.pkl", "wb") as f:
    ...     pickle.dump({"weights": [1.0, 2.0]}, f)
    >>> diagnose_xgboost_pickle("/tmp/doc-plain.pkl") is None   # no XGBoost inside
    True
    """
    if names is None:
        from modelsafe.security.scanner import scan

        names = scan(path).globals()
    objects = tuple(sorted({n for n in names if n.split(".")[0] == "xgboost"}))
    if not objects:
        return None
    return XGBoostPickle(path=str(path), objects=objects, written_by=writer_version(path),
                         installed=_installed())


def _installed() -> str | None:
    try:
        return metadata.version("xgboost")
    except metadata.PackageNotFoundError:
        return None


def writer_version(path: str | os.PathLike[str]) -> str | None:
    """The XGBoost version recorded in the first booster serialization in the file, or None."""
    from modelsafe.security._compressed import (
        Decompressed,
        ExpansionLimit,
        compression_of,
    )

    with open(path, "rb") as raw:
        head = raw.read(8)
        raw.seek(0)
        kind = compression_of(head)
        stream: BinaryIO = Decompressed(raw, kind, os.fstat(raw.fileno()).st_size) if kind else raw  # type: ignore[assignment]
        try:
            return _search(stream)
        except (EOFError, ExpansionLimit):
            return None


def _search(stream: BinaryIO) -> str | None:
    tail = b""
    while True:
        chunk = stream.read(_CHUNK)
        if not chunk:
            return None
        window = tail + chunk
        found = _find(window)
        if found is not None:
            return found
        tail = window[-_OVERLAP:]


def _find(window: bytes) -> str | None:
    match = _JSON_VERSION.search(window)
    if match is not None:
        return ".".join(str(int(g)) for g in match.groups())
    for match in _UBJ_VERSION.finditer(window):
        parsed = _ubj_triplet(window, match.end())
        if parsed is not None:
            return ".".join(map(str, parsed))
    return None


def _ubj_int(buf: bytes, at: int, marker: bytes) -> tuple[int, int] | None:
    spec = _UBJ_INTS.get(marker)
    if spec is None or at + spec[0] > len(buf):
        return None
    size, signed = spec
    return int.from_bytes(buf[at : at + size], "big", signed=signed), at + size


def _ubj_triplet(buf: bytes, at: int) -> tuple[int, int, int] | None:
    """Three integers of a UBJSON array starting at ``at`` (just after ``[``)."""
    typed = None
    if buf[at : at + 1] == b"$":
        typed, at = buf[at + 1 : at + 2], at + 2
    if buf[at : at + 1] == b"#":
        count = _ubj_int(buf, at + 2, buf[at + 1 : at + 2])
        if count is None or count[0] != 3:
            return None
        at = count[1]
    values = []
    for _ in range(3):
        marker = typed
        if marker is None:
            marker, at = buf[at : at + 1], at + 1
        value = _ubj_int(buf, at, marker)
        if value is None or not 0 <= value[0] < 1000:
            return None
        values.append(value[0])
        at = value[1]
    return values[0], values[1], values[2]
