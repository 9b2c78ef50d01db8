"""ms.Checkpointer and crashes: SIGKILL at random moments, start-up repair, a damaged index."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest

import modelsafe as ms

torch = pytest.importorskip("torch")

KEEP_BEST, KEEP_LAST = 2, 2

# Saves in a loop, resuming after the latest checkpoint. Every tensor of step s holds values
# derived from s, so a restored checkpoint shows whether it is whole and consistent.
CHILD = '''
import sys, torch, modelsafe as ms

directory, mode = sys.argv[1], sys.argv[2]
torch.set_num_threads(1)
model = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.Linear(512, 256))
opt = torch.optim.Adam(model.parameters(), lr=0.1)
model(torch.zeros(1, 256)).sum().backward()
opt.step()
ck = ms.Checkpointer(directory, monitor="val", keep_best={keep_best}, keep_last={keep_last},
                     async_save=(mode == "async"))
latest = ck.latest
step = latest.step + 1 if latest else 0
print("ready", flush=True)
previous = None
while True:
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            p.fill_(step + i / 10)
        for state in opt.state.values():
            state["exp_avg"].fill_(-step)
            state["step"].fill_(step)
    val = ((step * 37) % 23) / 10
    ck.save(step, model=model, optimizer=opt, metrics={{"val": val}}, extra={{"step": step}})
    if mode == "sync":          # written once save returns
        print(f"durable {{step}} {{val}}", flush=True)
    elif previous is not None:  # the previous write ended before this save began
        print(f"durable {{previous[0]}} {{previous[1]}}", flush=True)
    previous = (step, val)
    step += 1
'''.format(keep_best=KEEP_BEST, keep_last=KEEP_LAST)


def _objects():
    model = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.Linear(512, 256))
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    return model, opt


def _consistent(model, opt, step: int) -> bool:
    params = all(torch.all(p == step + i / 10) for i, p in enumerate(model.parameters()))
    states = list(opt.state.values())
    moments = len(states) == 4 and all(torch.all(s["exp_avg"] == -step) and int(s["step"]) == step for s in states)
    return bool(params and moments)


def _temporaries(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if ".tmp-" in p.name]


#: Imports torch and modelsafe once (with what torch.optim's first use imports: about 6 s in all here), then,
#: for each line "DIRECTORY MODE" read from stdin, forks a child that runs the script named by argv[1] on them,
#: and reports "child PID", then "exit STATUS" once the child is gone. A forked child is a process of its own
#: (memory, file descriptors, threads), killed as any other, without paying the imports again.
ZYGOTE = """
import os, sys, traceback, torch, modelsafe as ms
torch.set_num_threads(1)
torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])
script = sys.argv[1]
code = compile(open(script).read(), script, "exec")
for line in sys.stdin:
    directory, mode = line.split()
    pid = os.fork()
    if pid == 0:
        try:
            sys.argv = [script, directory, mode]
            exec(code, {"__name__": "__main__"})
        finally:
            traceback.print_exc()
            os._exit(1)
    print(f"child {pid}", flush=True)
    print(f"exit {os.waitpid(pid, 0)[1]}", flush=True)
"""


class Children:
    """Children of one zygote process (:data:`ZYGOTE`), each killed while saving. Also used by the
    remote-storage crash test."""

    def __init__(self, script: Path, env: dict[str, str] | None = None) -> None:
        zygote = script.with_name("zygote.py")
        zygote.write_text(ZYGOTE)
        self.errors = script.with_name("children.err")
        with open(self.errors, "w") as errors:
            self.proc = subprocess.Popen([sys.executable, str(zygote), str(script)], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=errors, text=True, env=env)

    def _line(self) -> str:
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        assert line, f"the zygote ended: {self.errors.read_text()}"
        return line

    def kill_while_saving(self, directory: str, mode: str, delay: float) -> dict[int, float]:
        """Fork a child saving in ``directory``, SIGKILL it ``delay`` seconds after it is ready; the saves it
        reported durable (step -> val)."""
        self.proc.stdin.write(f"{directory} {mode}\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        pid, ready, lines = None, False, []
        while pid is None or not ready:
            line = self._line()
            if line.startswith("child "):
                pid = int(line.split()[1])
            elif line.strip() == "ready":
                ready = True
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
        while not (line := self._line()).startswith("exit "):
            lines.append(line.split())
        status = int(line.split()[1])
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, self.errors.read_text()
        return {int(x[1]): float(x[2]) for x in lines if x[0] == "durable"}

    def __enter__(self) -> "Children":
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.stdin.close()  # type: ignore[union-attr]
        try:
            self.proc.wait(timeout=60)
        finally:
            self.proc.kill()


@pytest.mark.slow
def test_sigkill_at_random_moments_never_loses_the_latest_or_the_best(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    directory = tmp_path / "ck"
    rng = random.Random(20240601)
    durable: dict[int, float] = {}
    rounds, with_leftovers = 22, 0
    with Children(script) as children:
        for round_ in range(rounds):
            mode = "async" if round_ % 2 else "sync"
            durable.update(children.kill_while_saving(str(directory), mode, rng.uniform(0.0, 0.4)))
            with_leftovers += bool(_temporaries(directory))

            with warnings.catch_warnings():
                warnings.simplefilter("error")  # a damaged index would warn while it is rebuilt
                ck = ms.Checkpointer(directory, monitor="val", keep_best=KEEP_BEST, keep_last=KEEP_LAST)
            with ck:
                assert _temporaries(directory) == []  # start-up removed what the killed write left
                if not durable:
                    continue
                latest = ck.latest
                assert latest is not None and latest.step >= max(durable)
                model, opt = _objects()
                restored = ck.restore(model=model, optimizer=opt, which="latest")
                assert restored.step == latest.step and restored.extra == {"step": latest.step}
                assert _consistent(model, opt, latest.step), f"round {round_}: step {latest.step} is not whole"
                best_durable = min(durable.values())
                assert ck.best is not None and ck.best.metrics["val"] <= best_durable
                model, opt = _objects()
                best = ck.restore(model=model, optimizer=opt, which="best")
                assert _consistent(model, opt, best.step) and best.metrics["val"] == ((best.step * 37) % 23) / 10
                assert len(ck.list()) <= KEEP_BEST + KEEP_LAST + 2  # retention keeps working across crashes
    print(f"{rounds} kills, {with_leftovers} inside a write, {len(durable)} durable saves")
    assert len(durable) > rounds  # the loop really saved between kills
    assert with_leftovers >= 3, f"only {with_leftovers} of {rounds} kills landed inside a write"


# ---------------------------------------------------------------------------------------
# start-up repair, without killing anything
# ---------------------------------------------------------------------------------------


def _model():
    torch.manual_seed(0)
    return torch.nn.Linear(4, 4)


def test_startup_removes_temporaries_adopts_complete_orphans_and_drops_lost_entries(tmp_path):
    directory = tmp_path / "ck"
    model = _model()
    with ms.Checkpointer(directory, keep_last=5) as ck:
        ck.save(0, model=model, metrics={"loss": 2.0})
        index_after_first = (directory / "checkpoints.json").read_bytes()
        ck.save(1, model=model, metrics={"loss": 1.0})
        ck.save(2, model=model, metrics={"loss": 0.5})
    # a crash after step 1's artifact was renamed into place, before the index listed it:
    body = json.loads(index_after_first)
    body["checkpoints"].append(json.loads((directory / "checkpoints.json").read_text())["checkpoints"][2])
    (directory / "checkpoints.json").write_text(json.dumps(body))
    # ... a write killed half-way, an index write killed half-way, a file deleted by hand:
    (directory / ".step-0000000003.msafe.tmp-k1ll3d").write_bytes(b"PK\x03\x04 half a zip")
    (directory / ".step-0000000004.msafe.tmp-abcdef").mkdir()
    (directory / ".checkpoints.json.tmp-123-abcdef").write_text("{")
    (directory / "notes.txt").write_text("mine")
    (directory / ".hidden").write_text("mine too")
    (directory / "step-0000000002.msafe").unlink()

    ck = ms.Checkpointer(directory, keep_last=5)
    names = sorted(p.name for p in directory.iterdir())
    assert names == [".hidden", ".modelsafe-checkpoints.lock", "checkpoints.json", "notes.txt",
                     "step-0000000000.msafe", "step-0000000001.msafe"]
    assert [(c.step, c.metrics["loss"]) for c in ck.list()] == [(0, 2.0), (1, 1.0)]
    on_disk = json.loads((directory / "checkpoints.json").read_text())
    assert [e["step"] for e in on_disk["checkpoints"]] == [0, 1] and on_disk["next_seq"] == 4
    fresh = torch.nn.Linear(4, 4)
    assert ck.restore(model=fresh).step == 1 and torch.equal(fresh.weight, model.weight)
    assert ck.save(3, model=model).path.name == "step-0000000003.msafe"


def test_a_damaged_or_missing_index_is_rebuilt_from_the_artifacts(tmp_path):
    directory = tmp_path / "ck"
    model = _model()
    with ms.Checkpointer(directory, monitor="loss", keep_last=3) as ck:
        for step, loss in enumerate([3.0, 1.0, 2.0]):
            ck.save(step, model=model, metrics={"loss": loss})
    (directory / "checkpoints.json").write_text('{"format": "modelsafe-checkpoints", "checkpoints": [{"st')
    with pytest.warns(RuntimeWarning, match=r"checkpoints\.json cannot be read .* rebuilt from the checkpoint files"):
        ck = ms.Checkpointer(directory, monitor="loss")
    assert [c.step for c in ck.list()] == [0, 1, 2] and ck.best.step == 1 and ck.latest.step == 2
    (directory / "checkpoints.json").unlink()
    assert [c.step for c in ms.Checkpointer(directory, monitor="loss").list()] == [0, 1, 2]


def test_a_reader_never_removes_a_writers_temporaries(tmp_path, fresh):
    """Start-up cleaning needs the writer lock: another process reading the directory leaves them alone."""
    directory = tmp_path / "ck"
    model = _model()
    ck = ms.Checkpointer(directory)
    ck.save(0, model=model)  # this process now holds the writer lock
    in_flight = directory / ".step-0000000001.msafe.tmp-inflight"
    in_flight.write_bytes(b"being written")
    out = fresh(textwrap.dedent(f"""
        import modelsafe as ms
        ck = ms.Checkpointer({str(directory)!r})
        print("@@", [c.step for c in ck.list()])
    """)).stdout
    assert "@@ [0]" in out and in_flight.exists()
    ck.close()
    ms.Checkpointer(directory)  # the lock is free now: the leftover is cleaned
    assert not in_flight.exists()
    shutil.rmtree(directory)
