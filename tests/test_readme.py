"""The README's Python examples run, in order, in a fresh process."""

from __future__ import annotations

import re

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_readme_python_examples_run(fresh):
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 2
    # Run as a script, as a user would paste them into train.py (classes defined there are bundled).
    proc = fresh.script("readme_examples.py", "\n".join(blocks))
    assert "sklearn" in proc.stdout and "changed:" in proc.stdout
