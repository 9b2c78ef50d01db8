"""Folders for the scanner: modelsafe artifact folders, SavedModels (their graph checked op by op), and
plain folders.

Entries are walked without following symbolic links (a link is a finding), special
files are never opened, and the walk stops at :data:`MAX_MEMBERS` entries.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from modelsafe.security._walk import MAX_MEMBERS, Walker, open_path


#: A SavedModel's own files, read as what they are: the graph (its ops are checked), Keras 2's layer configs.
#: ``fingerprint.pb`` (hashes), ``variables/`` (the checkpoint) and ``assets/`` (vocabularies...) are data.
_SAVEDMODEL_ROLES = {"saved_model.pb": "savedmodel-graph", "keras_metadata.pb": "keras-metadata"}


def scan_directory(w: Walker, root: Path) -> None:
    artifact = (root / "modelsafe.json").is_file()
    saved_model = (root / "saved_model.pb").is_file()
    code = _directory_code(root) if artifact else set()
    count = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in sorted(dirnames + filenames):
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            count += 1
            if count > MAX_MEMBERS:
                w.add("medium", "archive-limit", "", None, "directory", f"the directory holds more than "
                      f"{MAX_MEMBERS} entries; the rest was not read")
                return
            _directory_entry(w, full, rel, artifact, saved_model, code)
    if count == 0:
        w.add("medium", "unknown-format", "", None, "directory", "the directory is empty: there is no model in it")


def _directory_entry(w: Walker, full: Path, rel: str, artifact: bool, saved_model: bool, code: set[str]) -> None:
    st = full.lstat()
    if stat.S_ISLNK(st.st_mode):
        w.add("high", "unsafe-archive", rel, None, rel, f"{rel!r} is a symbolic link to {os.readlink(full)!r}, "
              "which was not followed")
    elif stat.S_ISDIR(st.st_mode):
        return
    elif not stat.S_ISREG(st.st_mode):
        w.add("medium", "unknown-format", rel, None, rel, f"{rel!r} is not a regular file (FIFO, socket or device); "
              "it was not opened")
    elif rel in code:
        w.item(rel, "code", st.st_size)
        w.add("medium", "bundled-code", rel, None, rel, f"bundled Python source {rel!r} is stored in the artifact")
    else:
        try:
            handle = open_path(str(full))
        except OSError as exc:
            w.item(rel, "unreadable", st.st_size)
            w.add("medium", "incomplete", rel, None, rel, f"{rel!r} could not be opened ({exc.strerror})")
            return
        role = _SAVEDMODEL_ROLES.get(rel, "") if saved_model else ""
        raw_ok = artifact or saved_model and (rel.startswith(("variables/", "assets/")) or rel == "fingerprint.pb")
        with handle:
            w.blob(rel, handle, st.st_size, 1, raw_ok=raw_ok, path=str(full), role=role)


def _directory_code(root: Path) -> set[str]:
    try:
        manifest = json.loads((root / "modelsafe.json").read_bytes())
        return {str(r.get("member")) for r in manifest.get("code", ()) if isinstance(r, dict)}
    except (ValueError, OSError, AttributeError):
        return set()
