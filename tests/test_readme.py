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
    out = proc.stdout
    for expected in ("sklearn 4 members", "verification of model.msafe: passed", "changed: Member",
                     "['ClipIncome']", "refused: ['__main__']", "missing column: age",
                     "connector (sqlite3.Connection): open database connections cannot be saved",
                     "lock (_thread.lock)", "False ['os.system']", "pickle True", "False (2, 2)",
                     "[np.str_('income'), np.str_('age')]", "resumed at step", "onnx True [", "clipped: True",
                     "skl2onnx {'rtol': 0.0001220703125"):
        assert expected in out, f"{expected!r} missing from the README's output:\n{out}"
