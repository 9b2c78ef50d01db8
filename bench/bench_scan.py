"""Benchmark: ``modelsafe scan`` against picklescan and modelscan, side by side, in one run.

Cases (each tool runs in its own process, launched through a tiny fork/exec/wait4
launcher so that its peak RSS is its own):

* a 1.5 GiB protocol-5 pickle of float32 arrays (written to /tmp, deleted afterwards);
* a folder of 200 small scikit-learn pickles, scanned in one invocation;
* one small pickle, one invocation (start-up dominated: what a CI hook pays per file);
* the attack corpus (``tests/security/corpus``), one invocation per file: how many each flags.

Run with the benchmark venv (it holds the peers): ``.venv-bench/bin/python bench/bench_scan.py``.
Options: ``--size-gib 1.5``, ``--repeat 3``, ``--skip-big``. Prints a markdown table with
time, throughput, peak RSS and the ratio of each peer's time to modelsafe's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CORPUS = ROOT / "tests" / "security" / "corpus"

#: Runs argv[1:] as a child (stdout/stderr to /dev/null); prints its wall time, peak RSS, exit code.
LAUNCHER = r"""
import json, os, sys, time
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(json.dumps({"seconds": time.perf_counter() - start, "rss_mb": usage.ru_maxrss / 1024,
                  "code": os.waitstatus_to_exitcode(status)}))
"""

WRITE_BIG = r"""
import pickle, sys, numpy as np
size = int(float(sys.argv[2]) * (1 << 30))
chunk = 64 << 20
arrays = {}
rng = np.random.default_rng(0)
for i in range(max(1, size // chunk)):
    arrays[f"layer{i}.weight"] = rng.standard_normal(chunk // 4, dtype=np.float32)
    arrays[f"layer{i}.shape"] = (chunk // 4,)
with open(sys.argv[1], "wb") as f:
    pickle.dump(arrays, f, protocol=5)
"""

WRITE_SMALL = r"""
import pickle, sys, numpy as np
from pathlib import Path
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
X = np.random.default_rng(0).normal(size=(200, 6)); y = (X[:, 0] > 0).astype(int)
models = [make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y),
          RandomForestClassifier(5, max_depth=4, random_state=0).fit(X, y)]
folder = Path(sys.argv[1]); folder.mkdir(parents=True, exist_ok=True)
for i in range(int(sys.argv[2])):
    (folder / f"model{i:03d}.pkl").write_bytes(pickle.dumps(models[i % 2], protocol=4))
"""


def tools() -> dict[str, list[str]]:
    found = {"modelsafe": [sys.executable, "-m", "modelsafe", "scan"]}
    for name, flag in (("picklescan", "--path"), ("modelscan", "-p")):
        exe = shutil.which(name, path=str(BIN)) or shutil.which(name)
        if exe:
            found[name] = [exe, flag]
        else:
            print(f"note: {name} is not installed in {BIN}; it is left out", file=sys.stderr)
    return found


def environment(work: Path) -> dict[str, str]:
    """Same conditions for every tool: bytecode cached (in one prefix outside the repository)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    return env


ENV: dict[str, str] = {}


def run(argv: list[str]) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", LAUNCHER, *argv], capture_output=True, text=True, check=True,
                         env=ENV or None)
    return json.loads(out.stdout)


def measure(argv: list[str], repeat: int) -> dict[str, float]:
    """Median time and the largest peak RSS over ``repeat`` runs, after one warm-up run."""
    run(argv)
    runs = [run(argv) for _ in range(repeat)]
    return {"seconds": statistics.median(r["seconds"] for r in runs), "rss_mb": max(r["rss_mb"] for r in runs),
            "code": runs[-1]["code"]}


def in_process(path: Path) -> float:
    """modelsafe's own scan time for ``path`` (interpreter start-up excluded)."""
    code = ("import time, modelsafe as ms, modelsafe.security.scanner\nt = time.perf_counter()\nr = ms.scan(%r)\n"
            "print(time.perf_counter() - t, r.ok)" % str(path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=ENV or None).stdout.split()
    return float(out[0])


def corpus_detection(available: dict[str, list[str]]) -> dict[str, int]:
    """Files of the attack corpus each tool flags (exit code != 0, or modelscan reporting an issue)."""
    names = sorted(p for p in CORPUS.iterdir() if p.name != "EXPECTED.json")
    counts = {}
    for tool, argv in available.items():
        flagged = 0
        for path in names:
            proc = subprocess.run([*argv, str(path)], capture_output=True, text=True, cwd=tempfile.gettempdir(),
                                  env=ENV or None)
            text = proc.stdout + proc.stderr
            if proc.returncode != 0 or (tool == "modelscan" and "No issues found" not in text):
                flagged += 1
        counts[tool] = flagged
    return counts


def row(case: str, tool: str, m: dict[str, float], size: int, base: float) -> str:
    rate = size / m["seconds"]
    speed = f"{rate / (1 << 30):.2f} GiB/s" if rate >= 1 << 30 else f"{rate / (1 << 20):.1f} MiB/s"
    ratio = m["seconds"] / base
    return f"| {case} | {tool} | {m['seconds']:.3f} | {speed} | {m['rss_mb']:.0f} | {ratio:.2f}x | {m['code']} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gib", type=float, default=1.5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--small-files", type=int, default=200)
    parser.add_argument("--skip-big", action="store_true")
    args = parser.parse_args()
    available = tools()
    work = Path(tempfile.mkdtemp(prefix="modelsafe-bench-scan-", dir="/tmp"))
    ENV.update(environment(work))
    lines = ["| case | tool | time (s) | throughput | peak RSS (MB) | time vs modelsafe | exit |",
             "|---|---|---|---|---|---|---|"]
    notes = []
    try:
        cases = []
        if not args.skip_big:
            big = work / "big.pkl"
            subprocess.run([sys.executable, "-c", WRITE_BIG, str(big), str(args.size_gib)], check=True)
            cases.append((f"{big.stat().st_size / (1 << 30):.2f} GiB protocol-5 pickle", big, big.stat().st_size, 1))
        small = work / "small"
        subprocess.run([sys.executable, "-c", WRITE_SMALL, str(small), str(args.small_files)], check=True)
        small_size = sum(p.stat().st_size for p in small.iterdir())
        one = next(iter(sorted(small.iterdir())))
        cases.append((f"{args.small_files} small pickles, one call", small, small_size, args.repeat))
        cases.append(("1 small pickle, one call", one, one.stat().st_size, max(args.repeat, 5)))
        for case, path, size, repeat in cases:
            results = {tool: measure([*argv, str(path)], repeat) for tool, argv in available.items()}
            base = results["modelsafe"]["seconds"]
            lines += [row(case, tool, m, size, base) for tool, m in results.items()]
            notes.append(f"{case}: modelsafe's scan itself (in process, no interpreter start-up) took "
                         f"{in_process(path):.3f} s")
        detected = corpus_detection(available)
        total = len([p for p in CORPUS.iterdir() if p.name != "EXPECTED.json"])
        notes.append("attack corpus flagged: " + ", ".join(f"{t} {n}/{total}" for t, n in detected.items()))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\n".join(lines))
    print()
    print("\n".join(f"- {n}" for n in notes))
    print(f"- machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; Python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
