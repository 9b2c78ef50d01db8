"""What the disk refuses becomes a ModelsafeError that is still an OSError, and nothing partial is left.

The refusals are real, not mocked:

* a full disk and a read-only file system: a tiny tmpfs mounted in a private mount namespace
  of the child process (``unshare --mount``, with ``--map-root-user`` when the tests do not
  run as root), so nothing is mounted on the host;
* permission denied: a folder (or member) without write (or read) permission. Root ignores
  permission bits, so as root the child runs without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH
  (``setpriv``), which makes the bits apply to it as to any user.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import modelsafe as ms

#: Saves a 2 MiB object to ``target`` and prints what happened as JSON (run in the child).
_SAVE = """
    import errno, json, os, sys
    import numpy as np, modelsafe as ms
    target = sys.argv[1]
    try:
        ms.save({"weights": np.ones(1 << 18)}, target)
    except OSError as exc:
        folder = os.path.dirname(target)
        print(json.dumps({"type": type(exc).__name__, "modelsafe": isinstance(exc, ms.ModelsafeError),
                          "save_error": isinstance(exc, ms.SaveError), "errno": exc.errno,
                          "name": errno.errorcode.get(exc.errno), "path": getattr(exc, "path", None),
                          "message": str(exc), "left": sorted(os.listdir(folder))}))
    else:
        print(json.dumps({"type": None}))
"""


def _child(code: str, *args: str, wrap: list[str] | None = None) -> dict:
    command = [*(wrap or []), sys.executable, "-c", textwrap.dedent(code), *args]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _in_tmpfs(folder: Path, size: str, *, readonly: bool = False) -> list[str]:
    """A command prefix: run in a private mount namespace with a ``size`` tmpfs on ``folder``."""
    folder.mkdir(exist_ok=True)
    user = [] if os.geteuid() == 0 else ["--map-root-user"]
    remount = f" && mount -o remount,ro {folder}" if readonly else ""
    return ["unshare", *user, "--mount", "--propagation", "private", "sh", "-c",
            f'mount -t tmpfs -o size={size} tmpfs {folder}{remount} && exec "$0" "$@"']


def _without_override() -> list[str]:
    """A command prefix under which permission bits apply (root otherwise bypasses them)."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--inh-caps",
            "-dac_override,-dac_read_search", "--"]


def test_full_disk(tmp_path):
    disk = tmp_path / "disk"
    result = _child(_SAVE, str(disk / "model.msafe"), wrap=_in_tmpfs(disk, "256k"))
    assert result["type"] == "ArtifactWriteError" and result["modelsafe"] and result["save_error"]
    assert result["name"] == "ENOSPC" and result["path"] == str(disk / "model.msafe")
    assert "the disk is full" in result["message"] and "Free space on that disk" in result["message"]
    assert "nothing was left at" in result["message"]
    assert result["left"] == []  # the temporary file is gone too


def test_full_disk_folder_form(tmp_path):
    disk = tmp_path / "disk"
    result = _child(_SAVE, str(disk / "model"), wrap=_in_tmpfs(disk, "256k"))
    assert result["type"] == "ArtifactWriteError" and result["name"] == "ENOSPC" and result["left"] == []


def test_read_only_file_system(tmp_path):
    disk = tmp_path / "disk"
    result = _child(_SAVE, str(disk / "model.msafe"), wrap=_in_tmpfs(disk, "1m", readonly=True))
    assert result["type"] == "ArtifactWriteError" and result["name"] == "EROFS" and result["left"] == []
    assert "read-only file system" in result["message"] and "Save to a writable disk" in result["message"]


@pytest.mark.parametrize("name", ["model.msafe", "model"])
def test_read_only_folder(tmp_path, name):
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        result = _child(_SAVE, str(folder / name), wrap=_without_override())
    finally:
        folder.chmod(0o755)
    assert result["type"] == "ArtifactWriteError" and result["name"] == "EACCES" and result["left"] == []
    assert "permission denied: this user may not write in that folder" in result["message"]


def test_except_oserror_still_catches_it(tmp_path):
    # the same class hierarchy a caller sees in-process: an ArtifactWriteError is an OSError
    assert issubclass(ms.ArtifactWriteError, OSError) and issubclass(ms.ArtifactWriteError, ms.SaveError)
    assert issubclass(ms.ArtifactReadError, OSError) and issubclass(ms.ArtifactReadError, ms.ArtifactError)
    from modelsafe.artifact.disk_errors import write_error

    error = write_error(OSError(28, "No space left on device", str(tmp_path / "x")), str(tmp_path / "m.msafe"))
    assert (error.errno, error.strerror, error.filename) == (28, "No space left on device", str(tmp_path / "x"))
    with pytest.raises(OSError):
        raise error


_LOAD = """
    import errno, json, sys
    import modelsafe as ms
    try:
        ms.load(sys.argv[1])
    except OSError as exc:
        print(json.dumps({"type": type(exc).__name__, "artifact_error": isinstance(exc, ms.ArtifactError),
                          "name": errno.errorcode.get(exc.errno), "member": getattr(exc, "member", None),
                          "message": str(exc)}))
    else:
        print(json.dumps({"type": None}))
"""


@pytest.mark.parametrize("what", ["member", "folder"])
def test_folder_artifact_with_an_unreadable_member(tmp_path, cli, what):
    from sklearn.linear_model import LogisticRegression

    X = [[0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [1.0, 1.0]]
    ms.save(LogisticRegression().fit(X, [0, 1, 0, 1]), tmp_path / "model", sample=X)
    member = next(m for m in ms.inspect(tmp_path / "model").members if m.startswith("model/"))
    if what == "folder":  # the component's folder cannot even be listed
        member = "model"
    (tmp_path / "model" / member).chmod(0)
    result = _child(_LOAD, str(tmp_path / "model"), wrap=_without_override())
    assert result["type"] == "ArtifactReadError" and result["artifact_error"] and result["name"] == "EACCES"
    assert result["member"] == member
    assert result["message"].startswith(f"Cannot read member {member!r} of the artifact ")
    assert "permission denied: this user may not read it" in result["message"] and "chmod -R a+rX" in result["message"]
    proc = subprocess.run([*_without_override(), sys.executable, "-m", "modelsafe", "verify", str(tmp_path / "model")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "ArtifactReadError" in proc.stdout and "Traceback" not in proc.stdout + proc.stderr
    (tmp_path / "model" / member).chmod(0o755)  # so that pytest can remove it
