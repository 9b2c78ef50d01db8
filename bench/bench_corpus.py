"""Detection counts on the attack corpus and on benign files: ``scan`` and ``doctor`` side by side.

For every file of ``tests/security/corpus`` (malicious by construction) and of the benign set
that ``tests/security/benign.py`` builds with the real frameworks (plus pickles written by the
old scikit-learn of ``.venv-old`` when it exists), it counts:

* malicious files ``scan`` flags (its report is not ``ok``), and those ``doctor`` flags (an error);
* benign files flagged as unsafe: by ``scan``, or by ``doctor`` as an error that repeats a scan finding
  (a file that is not a model at all, refused as unreadable input with exit code 2, is not a false
  positive: it is the right answer; doctor's other errors, such as "torch.load with weights_only=True
  refuses this", are listed apart);
* crashes: any exception that is not a ``ModelsafeError``.

``--src PATH`` measures another checkout's ``src`` (for "before" numbers): the counting runs in a
child process with that ``modelsafe`` first on its path. Run: ``.venv/bin/python bench/bench_corpus.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "security" / "corpus"

COUNT = r"""
import json, sys, os
import modelsafe as ms
from modelsafe.errors import FormatError, ModelsafeError
corpus, benign = sys.argv[1], sys.argv[2]
os.chdir(sys.argv[3])  # payloads, if one ever ran, would leave a canary here
def run(fn, path):
    try:
        report = fn(path)
        return ("flagged" if not report.ok else "clean"), report
    except FormatError as exc:
        return "unreadable", None
    except ModelsafeError as exc:
        return "error:" + type(exc).__name__, None
    except Exception as exc:
        return "crash:" + type(exc).__name__ + ": " + str(exc)[:120], None
out = {}
for group, folder in (("malicious", corpus), ("benign", benign)):
    for name in sorted(os.listdir(folder)):
        if name == "EXPECTED.json":
            continue
        path = os.path.join(folder, name)
        (scan, scanned), (doctor, diagnosed) = run(ms.scan, path), run(ms.doctor, path)
        # doctor's errors that repeat a scan finding (a security verdict, not "torch.load would refuse it")
        subjects = {f.subject for f in scanned.findings} if scanned is not None else set()
        security = diagnosed is not None and any(p.severity == "error" and p.subject in subjects
                                                 for p in diagnosed.problems)
        out[f"{group}/{name}"] = {"scan": scan, "doctor": doctor, "doctor_security": security,
                                  "doctor_errors": [p.subject for p in diagnosed.errors()] if diagnosed else []}
print(json.dumps({"modelsafe": ms.__file__, "results": out}))
"""


def count(src: Path, benign: Path, work: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(src)
    proc = subprocess.run([sys.executable, "-c", COUNT, str(CORPUS), str(benign), str(work)], env=env,
                          capture_output=True, text=True, timeout=3600)
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summary(results: dict, not_models: tuple[str, ...]) -> dict[str, object]:
    mal = {k: v for k, v in results.items() if k.startswith("malicious/")}
    ben = {k: v for k, v in results.items() if k.startswith("benign/")}
    def flagged(v: dict, tool: str) -> bool:
        return v[tool] == "flagged" or v[tool].startswith("error:")
    crashes = [f"{k} ({t}: {v[t]})" for k, v in results.items() for t in ("scan", "doctor") if v[t].startswith("crash:")]
    benign_flagged = sorted(k for k, v in ben.items() if flagged(v, "scan") or v.get("doctor_security"))
    other = sorted(f"{k} ({', '.join(v['doctor_errors'])})" for k, v in ben.items()
                   if k not in benign_flagged and v.get("doctor_errors"))
    wrong_unreadable = sorted(k for k, v in ben.items() if v["scan"] == "unreadable" and k.split("/", 1)[1] not in not_models)
    return {"malicious": len(mal), "scan": sum(flagged(v, "scan") for v in mal.values()),
            "doctor": sum(flagged(v, "doctor") for v in mal.values()),
            "missed by scan": sorted(k for k, v in mal.items() if not flagged(v, "scan")),
            "missed by doctor": sorted(k for k, v in mal.items() if not flagged(v, "doctor")),
            "benign": len(ben), "benign flagged": benign_flagged, "benign refused as unreadable": wrong_unreadable,
            "doctor's other errors on benign files (not security)": other, "crashes": crashes}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--src", action="append", default=[], help="a modelsafe src folder to measure (repeatable)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests" / "security"))
    import benign

    sources = [Path(s) for s in args.src] or [ROOT / "src"]
    with tempfile.TemporaryDirectory() as tmp:
        files = Path(tmp) / "benign"
        made = benign.build(files)
        old = ROOT / ".venv-old" / "bin" / "python"
        if old.is_file():
            made.update(benign.build_old_sklearn(files, old))
        work = Path(tmp) / "work"
        work.mkdir()
        rows = []
        for src in sources:
            data = count(src, files, work)
            rows.append((src, summary(data["results"], benign.NOT_MODELS)))
        if list(work.iterdir()):
            raise SystemExit("a payload ran: " + ", ".join(p.name for p in work.iterdir()))
    print("| source | malicious flagged by scan | by doctor | benign flagged | crashes |")
    print("|---|---|---|---|---|")
    for src, s in rows:
        print(f"| {src} | {s['scan']}/{s['malicious']} | {s['doctor']}/{s['malicious']} | "
              f"{len(s['benign flagged'])}/{s['benign']} | {len(s['crashes'])} |")
    for src, s in rows:
        print(f"\n{src}:")
        for key in ("missed by scan", "missed by doctor", "benign flagged", "benign refused as unreadable",
                    "doctor's other errors on benign files (not security)", "crashes"):
            if s[key]:
                print(f"  {key}: {', '.join(s[key])}")


if __name__ == "__main__":
    main()
