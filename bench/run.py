"""Run every benchmark in this folder (``bench_*.py``), one after another, in fresh processes.

Each prints its own markdown table comparing modelsafe with its peers in the same run.
``make bench`` runs this with the bench environment (.venv-bench), which has the peers.
Pass names to run a subset: ``python bench/run.py sklearn guard``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    here = Path(__file__).resolve().parent
    scripts = sorted(here.glob("bench_*.py"))
    if argv:
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in argv]
    failed = []
    for script in scripts:
        print(f"\n## {script.stem}\n", flush=True)
        if subprocess.run([sys.executable, str(script)]).returncode != 0:
            failed.append(script.name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
