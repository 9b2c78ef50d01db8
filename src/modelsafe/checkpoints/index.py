"""What a checkpoint directory holds: the index, retention, start-up repair and the writer lock.

Layout of a checkpoint directory::

    checkpoints.json                 the index (written atomically, after the artifact is complete)
    step-0000000120.msafe            one modelsafe artifact per checkpoint, never modified once written
    .modelsafe-checkpoints.lock      held (flock) by the one process that writes here
                                     (see :mod:`modelsafe.checkpoints.directory`)

The index lists every checkpoint with its step, save sequence number, metrics and time, and
the metric that ranks them (``monitor``, ``mode``), so ``Checkpointer(directory).best`` finds the
best one in any process.
Each artifact also records the same facts in its manifest (``metadata["modelsafe.checkpoint"]``),
so a complete artifact that a killed process renamed into place but did not get into the
index yet is found and adopted at start-up (:func:`reconcile`), and temporaries of a
killed write are removed. A directory on a remote store has the same layout, without the
lock file (see :mod:`modelsafe.checkpoints.remote`).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

from modelsafe.artifact.targets import fsync_directory

INDEX_NAME = "checkpoints.json"
LOCK_NAME = ".modelsafe-checkpoints.lock"
INDEX_FORMAT = "modelsafe-checkpoints"
INDEX_VERSION = 1
#: Key of the checkpoint facts in an artifact's manifest metadata.
METADATA_KEY = "modelsafe.checkpoint"
_ARTIFACT = re.compile(r"^step-(\d+)(?:\.(\d+))?\.msafe$")
#: Leftovers of an interrupted write: ArtifactWriter temporaries and index temporaries.
_TEMPORARY = re.compile(r"^\.(step-\d+(?:\.\d+)?\.msafe|checkpoints\.json)\.(tmp|old)-")


@dataclass(frozen=True)
class Entry:
    """One checkpoint as the index records it."""

    step: int
    seq: int
    file: str
    time: str
    metrics: Mapping[str, float] = field(default_factory=dict)
    size: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step, "seq": self.seq, "file": self.file, "time": self.time,
                "metrics": encode_metrics(self.metrics), "size": self.size}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> "Entry":
        step, seq, name, time = raw["step"], raw["seq"], raw["file"], raw["time"]
        if not (isinstance(step, int) and isinstance(seq, int) and isinstance(name, str) and isinstance(time, str)):
            raise ValueError(f"malformed entry {raw!r}")
        if not _ARTIFACT.match(name):
            raise ValueError(f"entry names {name!r}, which is not a checkpoint file name")
        return cls(step=step, seq=seq, file=name, time=time, metrics=decode_metrics(raw.get("metrics") or {}),
                   size=int(raw.get("size") or 0))


def artifact_name(step: int, seq: int, taken: Iterable[str]) -> str:
    """``step-0000000120.msafe``; a step saved again gets the save's sequence number too."""
    plain = f"step-{step:010d}.msafe"
    return plain if plain not in set(taken) else f"step-{step:010d}.{seq}.msafe"


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


# ---------------------------------------------------------------------------------------
# metrics: numbers, with NaN and infinities spelled out (JSON has no literal for them)
# ---------------------------------------------------------------------------------------


def encode_metrics(metrics: Mapping[str, float]) -> dict[str, Any]:
    return {k: (v if math.isfinite(v) else repr(v)) for k, v in metrics.items()}


def decode_metrics(raw: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in raw.items():
        spelled = isinstance(value, str) and value in ("nan", "inf", "-inf")
        if spelled or (isinstance(value, (int, float)) and not isinstance(value, bool)):
            out[str(key)] = float(value)
    return out


def monitored(entry: Entry, monitor: str | None) -> float | None:
    """The entry's value of ``monitor`` when it is a finite number, else None (never 'best')."""
    if monitor is None:
        return None
    value = entry.metrics.get(monitor)
    return value if value is not None and math.isfinite(value) else None


# ---------------------------------------------------------------------------------------
# choosing: latest, best, retention
# ---------------------------------------------------------------------------------------


def latest(entries: Iterable[Entry]) -> Entry | None:
    return max(entries, key=lambda e: e.seq, default=None)


def ranked(entries: Iterable[Entry], monitor: str | None, mode: str) -> list[Entry]:
    """Entries with a finite ``monitor`` value, best first (an earlier save wins a tie)."""
    sign = 1.0 if mode == "min" else -1.0
    scored = [(value, e) for e in entries if (value := monitored(e, monitor)) is not None]
    return [e for _, e in sorted(scored, key=lambda ve: (sign * ve[0], ve[1].seq))]


def best(entries: Iterable[Entry], monitor: str | None, mode: str) -> Entry | None:
    order = ranked(entries, monitor, mode)
    return order[0] if order else None


def retained(entries: list[Entry], *, monitor: str | None, mode: str, keep_best: int, keep_last: int) -> list[Entry]:
    """The entries to keep: the newest ``keep_last`` and the best ``keep_best``, in save order.

    The newest and the current best are always among them (both counts are at least 1).
    """
    newest = sorted(entries, key=lambda e: e.seq)[-max(keep_last, 1):]
    top = ranked(entries, monitor, mode)[: max(keep_best, 1)]
    keep = {e.seq for e in newest} | {e.seq for e in top}
    return [e for e in sorted(entries, key=lambda e: e.seq) if e.seq in keep]


# ---------------------------------------------------------------------------------------
# the index file
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Index:
    entries: tuple[Entry, ...] = ()
    next_seq: int = 1
    #: The metric that ranks the checkpoints, as the last writer's Checkpointer had it (None: not ranked).
    monitor: str | None = None
    mode: str = "min"

    def without(self, seqs: set[int]) -> "Index":
        return replace(self, entries=tuple(e for e in self.entries if e.seq not in seqs))

    def with_entry(self, entry: Entry) -> "Index":
        return replace(self, entries=(*self.entries, entry), next_seq=max(self.next_seq, entry.seq + 1))

    def ranked_by(self, monitor: str | None, mode: str) -> "Index":
        return replace(self, monitor=monitor, mode=mode)


class IndexDamaged(Exception):
    """The index file exists but cannot be read; the caller rebuilds it from the artifacts."""


def read_index(directory: Path) -> Index | None:
    """The index, or None when the directory has none. Raises IndexDamaged for a damaged one."""
    path = directory / INDEX_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise IndexDamaged(f"{path} cannot be read ({exc})") from exc
    return parse_index(data, path)


def parse_index(data: bytes, path: Any) -> Index:
    """The index in ``data``, the bytes of the index file ``path`` (local or remote). Raises IndexDamaged."""
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IndexDamaged(f"{path} cannot be read ({exc})") from exc
    try:
        if raw.get("format") != INDEX_FORMAT or not isinstance(raw.get("checkpoints"), list):
            raise ValueError("it is not a modelsafe checkpoint index")
        if int(raw.get("version", 0)) > INDEX_VERSION:
            raise ValueError(f"it has version {raw.get('version')}, newer than this modelsafe reads")
        entries = tuple(Entry.from_json(e) for e in raw["checkpoints"])
        next_seq = max([int(raw.get("next_seq", 1)), *(e.seq + 1 for e in entries)])
        monitor, mode = ranking(raw)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise IndexDamaged(f"{path} is malformed ({exc})") from exc
    return Index(entries=entries, next_seq=next_seq, monitor=monitor, mode=mode)


def ranking(raw: Mapping[str, Any]) -> tuple[str | None, str]:
    """``(monitor, mode)`` recorded in an index (or in a checkpoint's facts); older indexes have none."""
    monitor, mode = raw.get("monitor"), raw.get("mode", "min")
    if monitor is not None and not isinstance(monitor, str) or mode not in ("min", "max"):
        raise ValueError(f"monitor={monitor!r}, mode={mode!r} is not a metric name and 'min' or 'max'")
    return monitor, mode


def index_bytes(index: Index) -> bytes:
    """The index file's content."""
    body = {"format": INDEX_FORMAT, "version": INDEX_VERSION, "next_seq": index.next_seq,
            "monitor": index.monitor, "mode": index.mode,
            "checkpoints": [e.to_json() for e in sorted(index.entries, key=lambda e: e.seq)]}
    return json.dumps(body, indent=1).encode("utf-8")


def write_index(directory: Path, index: Index) -> None:
    """Replace the index atomically: temporary file in the same folder, fsync, rename, fsync the folder."""
    data = index_bytes(index)
    tmp = directory / f".{INDEX_NAME}.tmp-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    try:
        with open(tmp, "xb") as f:  # permissions from the umask, like any file the user writes
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, directory / INDEX_NAME)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_directory(directory)


# ---------------------------------------------------------------------------------------
# start-up repair
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Repair:
    """What :func:`reconcile` changed: temporaries removed, artifacts adopted, entries whose file is gone."""

    removed: tuple[str, ...] = ()
    adopted: tuple[str, ...] = ()
    lost: tuple[str, ...] = ()
    unreadable: tuple[str, ...] = ()


def remove_temporaries(directory: Path) -> list[str]:
    """Delete what an interrupted write left behind (only names modelsafe itself makes)."""
    removed = []
    for path in directory.iterdir():
        if _TEMPORARY.match(path.name):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            removed.append(path.name)
    return removed


def read_entry(path: Path, size: int | None = None) -> Entry | None:
    """The index entry recorded in an artifact's manifest, or None when it is not a readable checkpoint.
    ``size``: the artifact's size when already known (a remote listing gives it)."""
    from modelsafe.artifact.reader import manifest_of
    from modelsafe.errors import ModelsafeError

    try:
        manifest = manifest_of(path)
        facts = manifest.metadata.get(METADATA_KEY)
        return Entry(step=int(facts["step"]), seq=int(facts["seq"]), file=path.name, time=str(facts["time"]),
                     metrics=decode_metrics(facts.get("metrics") or {}),
                     size=path.stat().st_size if size is None else size)
    except (ModelsafeError, OSError, KeyError, TypeError, ValueError):
        return None


def _recorded_ranking(path: Path) -> tuple[str | None, str]:
    """``(monitor, mode)`` the Checkpointer that wrote the artifact at ``path`` had (None, "min" if unreadable)."""
    from modelsafe.artifact.reader import manifest_of
    from modelsafe.errors import ModelsafeError

    try:
        return ranking(manifest_of(path).metadata.get(METADATA_KEY) or {})
    except (ModelsafeError, OSError, AttributeError, ValueError):
        return None, "min"


def reconcile(directory: Path, index: Index | None, *, clean: bool,
              listing: Mapping[str, int] | None = None) -> tuple[Index, Repair]:
    """Bring the index in line with the folder after a crash.

    Entries whose file is gone are dropped; complete checkpoint artifacts missing from the
    index (renamed into place just before a crash) are adopted; with ``clean`` (only the
    process holding the writer lock) temporaries are removed. ``listing`` (name -> size) is
    what a remote directory holds; without it, the local folder is listed.
    """
    removed = remove_temporaries(directory) if clean else []
    rebuilt = index is None
    index = index or Index()
    present = ({p.name for p in directory.iterdir() if _ARTIFACT.match(p.name) and p.is_file()} if listing is None
               else {name for name in listing if _ARTIFACT.match(name)})
    lost = {e.seq for e in index.entries if e.file not in present}
    kept = index.without(lost)
    known = {e.file for e in kept.entries}
    adopted, unreadable = [], []
    for name in sorted(present - known):
        entry = read_entry(directory / name, None if listing is None else listing[name])
        if entry is None or any(e.seq == entry.seq for e in kept.entries):
            unreadable.append(name)
            continue
        kept = kept.with_entry(entry)
        adopted.append(name)
    if rebuilt and adopted:  # no index to say how they are ranked: the newest checkpoint's facts do
        kept = kept.ranked_by(*_recorded_ranking(directory / max(kept.entries, key=lambda e: e.seq).file))
    lost_files = tuple(e.file for e in index.entries if e.seq in lost)
    return kept, Repair(tuple(removed), tuple(adopted), lost_files, tuple(unreadable))
