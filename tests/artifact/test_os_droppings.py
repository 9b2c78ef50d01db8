"""A folder artifact ignores the files operating systems leave in folders, and says so."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import modelsafe as ms
from modelsafe.artifact.rules import is_os_dropping

DROPPINGS = {".DS_Store": b"\x00\x00\x00\x01Bud1" + bytes(64), "Thumbs.db": b"\xd0\xcf\x11\xe0",
             "desktop.ini": b"[.ShellClassInfo]\r\n", "model/._graph.pkl": b"\x00\x05\x16\x07\x00\x02\x00\x00",
             "__MACOSX/model/._graph.pkl": b"\x00\x05\x16\x07"}


@pytest.fixture
def folder(tmp_path):
    from sklearn.linear_model import LogisticRegression

    X = np.random.default_rng(0).normal(size=(30, 3))
    ms.save(LogisticRegression().fit(X, X[:, 0] > 0), tmp_path / "model", sample=X[:6])
    for name, data in DROPPINGS.items():
        path = tmp_path / "model" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    os.symlink("/etc/passwd", tmp_path / "model" / "Icon\r")  # never followed, never read
    return tmp_path / "model"


def test_a_folder_with_os_droppings_loads_in_a_fresh_process(folder, fresh):
    fresh(f"""
        import modelsafe as ms
        bundle = ms.load({str(folder)!r})
        assert bundle.verify().ok
        assert ms.verify({str(folder)!r}).ok
    """)


def test_inspect_says_what_was_ignored(folder, cli):
    proc = cli("inspect", str(folder))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # (text-mode pipes turn the \r of "Icon\r" into a line break: the JSON below spells it exactly)
    assert "  ignored: .DS_Store, Icon" in proc.stdout
    assert (", Thumbs.db, __MACOSX, desktop.ini, model/._graph.pkl (files the operating system left in the folder: "
            "outside the manifest, never read)") in proc.stdout
    data = json.loads(cli("inspect", "--json", str(folder)).stdout)
    assert data["ignored"] == [".DS_Store", "Icon\r", "Thumbs.db", "__MACOSX", "desktop.ini", "model/._graph.pkl"]
    assert not any(is_os_dropping(name.split("/")[-1]) for name in data["members"])


def test_other_extra_files_are_still_refused(folder):
    (folder / "model" / "injected.pkl").write_bytes(b"x")
    with pytest.raises(ms.IntegrityError, match="does not record: model/injected.pkl") as info:
        ms.load(folder)
    assert info.value.member == "model/injected.pkl"


@pytest.mark.parametrize("name, expected", [(".DS_Store", True), ("._graph.pkl", True), ("__MACOSX", True),
                                            ("Thumbs.db", True), ("graph.pkl", False), ("_DS_Store", False),
                                            (".DS_Store.bak", False), ("modelsafe.json", False)])
def test_which_names_are_droppings(name, expected):
    assert is_os_dropping(name) is expected
