"""predict_file's memory is bounded by the chunk, not the file; an interrupted run leaves no output."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

BATCH = 50_000
#: Peak RSS of the scoring alone (reset with /proc/self/clear_refs after the artifact is loaded), in a fresh process.
PEAK = """
import sys, warnings
warnings.simplefilter("ignore")
import modelsafe as ms
ms.load(sys.argv[1]).close()  # imports and the first load, before the peak is reset
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
ms.predict_file(sys.argv[1], sys.argv[2], sys.argv[3], batch_size=int(sys.argv[4]))
print(next(int(line.split()[1]) << 10 for line in open("/proc/self/status") if line.startswith("VmHWM")))
"""


def _peak(artifact, source, destination) -> int:
    proc = subprocess.run([sys.executable, "-c", PEAK, str(artifact), str(source), str(destination), str(BATCH)],
                          capture_output=True, text=True, timeout=600, check=True)
    return int(proc.stdout.split()[-1])


def test_a_ten_times_larger_file_does_not_raise_peak_memory_by_more_than_the_chunk(classifier, rows, parquet,
                                                                                  tmp_path):
    artifact, _ = classifier
    small = parquet(rows(200_000), tmp_path / "small.parquet")
    frame = rows(2_000_000)
    large = parquet(frame, tmp_path / "large.parquet")
    chunk = int(frame.memory_usage(deep=True).sum() * BATCH / len(frame))  # one chunk as a pandas frame
    decoded = int(frame.memory_usage(deep=True).sum())
    del frame
    for suffix in ("parquet", "csv"):
        grown = _peak(artifact, large, tmp_path / f"o.{suffix}") - _peak(artifact, small, tmp_path / f"o.{suffix}")
        # The chunk lives in a few forms at once (Arrow batch, pandas frame, the scaler's output, predictions,
        # the output table): allow those, which is still a small fraction of the 1.8 M extra rows.
        assert grown <= 6 * chunk, (suffix, grown, chunk)
        assert grown < decoded / 10, (suffix, grown, decoded)


def _start_and_wait_for_the_temporary_file(artifact, source, folder):
    proc = subprocess.Popen([sys.executable, "-m", "modelsafe", "predict", str(artifact), str(source), "-o",
                             str(folder / "scores.parquet"), "--batch-size", "5000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        partial = [p for p in folder.iterdir() if p.name.startswith(".scores.parquet.") and p.stat().st_size > 0]
        if partial:
            return proc, partial[0]
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the run never started writing")


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT])
def test_an_interrupted_run_leaves_no_output_and_an_older_output_untouched(classifier, rows, parquet, tmp_path, how):
    artifact, _ = classifier
    source = parquet(rows(1_000_000), tmp_path / "rows.parquet")
    out = tmp_path / "out"
    out.mkdir()
    for older in (False, True):
        if older:
            pd.DataFrame({"prediction": ["from an earlier run"]}).to_parquet(out / "scores.parquet")
        proc, partial = _start_and_wait_for_the_temporary_file(artifact, source, out)
        proc.send_signal(how)
        proc.communicate(timeout=120)
        assert proc.returncode != 0
        if older:
            assert pd.read_parquet(out / "scores.parquet")["prediction"].tolist() == ["from an earlier run"]
        else:
            assert not (out / "scores.parquet").exists()
        if how == signal.SIGINT:  # Ctrl-C: the temporary file is removed too
            assert sorted(p.name for p in out.iterdir()) == (["scores.parquet"] if older else [])
        else:  # killed: only the hidden temporary file can remain, never a partial output at the destination
            assert all(p.name.startswith(".scores.parquet.") or p.name == "scores.parquet" for p in out.iterdir())
            partial.unlink(missing_ok=True)
