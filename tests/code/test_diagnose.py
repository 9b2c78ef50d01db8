"""Save-time diagnosis: every unsavable part found in one pass, named by attribute path."""

from __future__ import annotations

import os
import socket
import sqlite3
import threading

import numpy as np
import pytest

import modelsafe as ms
from modelsafe._doctor import diagnose_object
from modelsafe.code.diagnose import find_unsavable


class Connector:
    """A model part that keeps a live database connection (the classic unsavable attribute)."""

    def __init__(self) -> None:
        self.connector = sqlite3.connect(":memory:")


class Service:
    def __init__(self) -> None:
        self.model = Connector()
        self.lock = threading.Lock()
        self.log = open(os.devnull, "w")  # noqa: SIM115 - the point is an open handle
        self.rows = (i for i in range(3))
        self.np = np
        self.sock = socket.socket()
        self.weights = np.ones(3)

    def predict(self, x):
        return x


class DropsItsConnection:
    """Leaves its connection out of its state, as the error message recommends."""

    def __init__(self) -> None:
        self.conn = sqlite3.connect(":memory:")
        self.scale = 2.0

    def __getstate__(self):
        return {"scale": self.scale}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.conn = sqlite3.connect(":memory:")

    def predict(self, x):
        return x * self.scale


@pytest.fixture
def service():
    svc = Service()
    yield svc
    svc.log.close()
    svc.sock.close()


def test_every_offender_is_found_in_one_pass(tmp_path, service):
    with pytest.raises(ms.UnsavableObjectError) as err:
        ms.save(service, tmp_path / "svc.msafe")
    problems = err.value.problems
    assert ("model.connector", "sqlite3.Connection",
            "open database connections cannot be saved; store the connection settings and reconnect at load") in problems
    by_path = {path: kind for path, kind, _ in problems}
    assert by_path == {"model.connector": "sqlite3.Connection", "lock": "_thread.lock", "log": "_io.TextIOWrapper",
                       "rows": "generator", "np": "module", "sock": "socket.socket"}
    assert os.listdir(tmp_path) == []  # no partial artifact, no temporary file


def test_the_message_says_what_why_and_how(tmp_path):
    class Holder:
        def __init__(self):
            self.lock = threading.Lock()

        def predict(self, x):
            return x

    with pytest.raises(ms.UnsavableObjectError) as err:
        ms.save(Holder(), tmp_path / "h.msafe")
    assert str(err.value) == (
        "Cannot save: 1 part(s) of the object cannot be stored:\n"
        "  - lock (_thread.lock): locks belong to the running process and cannot be saved; create a new one when "
        "the object is loaded\n"
        "An artifact holding them would fail to load elsewhere, so nothing was written. Drop these attributes "
        "before saving (or implement __getstate__ to leave them out and __setstate__ to recreate them), and "
        "replace lambdas and closures with named functions in a module."
    )


def test_getstate_that_drops_the_connection_is_respected(tmp_path, fresh):
    assert find_unsavable(DropsItsConnection()) == []
    holder = Service.__new__(Service)
    holder.__dict__.update(model=DropsItsConnection(), lock=threading.Lock())
    assert [p[0] for p in find_unsavable(holder)] == ["lock"]  # the dropped connection is not blamed


def test_doctor_object_returns_the_same_findings_without_saving(tmp_path, service):
    with pytest.raises(ms.UnsavableObjectError) as err:
        ms.save(service, tmp_path / "svc.msafe")
    assert diagnose_object(service) == err.value.problems
    assert os.listdir(tmp_path) == []
    assert diagnose_object(DropsItsConnection()) == []
