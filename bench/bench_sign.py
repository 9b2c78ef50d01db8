"""Signing and signature checking of a 1.5 GiB torch artifact: modelsafe vs model_signing, side by side.

modelsafe signs the digests its manifest already holds, so neither signing nor checking
re-hashes the 1.5 GiB; ``model_signing`` hashes every file for both. Both sign the same
folder artifact with the same ECDSA P-256 key, in the same run:

* Python API, in-process (after one warm-up call each, so no import is timed):
  ``ms.sign`` vs ``model_signing.signing.Config().use_elliptic_key_signer(...).sign``, and
  ``ms.verify_signature`` vs ``model_signing.verifying.Config().use_elliptic_key_verifier(...).verify``;
* command line, each a new process: ``modelsafe sign`` vs ``model_signing sign key``, and
  ``modelsafe inspect --trusted-key`` (the manifest and the signature check; ``modelsafe verify``
  would also re-hash every member, as a full load does) vs ``model_signing verify key``;
* the signature step inside ``ms.load(signature="require")`` (the time ``load`` spends on it).

The files are in the page cache for every contender (the artifact was just written). Target:
>= 50x faster for signing and for checking. Run: ``python bench/bench_sign.py [--gib 1.5] [--runs 5]``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable


def timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def best_and_median(call: Callable[[], object], runs: int) -> tuple[float, float]:
    times = [timed(call) for _ in range(runs)]
    return min(times), statistics.median(times)


def cli(*args: object) -> None:
    subprocess.run([sys.executable, "-m", *map(str, args)], check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gib", type=float, default=1.5)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    import model_signing
    import torch

    import modelsafe as ms
    from modelsafe.signing import gate, keygen

    with tempfile.TemporaryDirectory(prefix="bench-sign-") as tmp:
        root = Path(tmp)
        n = int(args.gib * (1 << 30)) // 4 // 6
        state = {f"layer{i}.weight": torch.randn(n) for i in range(6)}
        folder = root / "model"
        ms.save(state, folder)
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        private, public, _ = keygen(root / "keys")
        ours_sig, theirs_sig = Path(f"{folder}.sig"), root / "model_signing.sig"
        sign_ours = lambda: ms.sign(folder, key=private)  # noqa: E731
        sign_theirs = lambda: model_signing.signing.Config().use_elliptic_key_signer(  # noqa: E731
            private_key=private).sign(folder, theirs_sig)
        check_ours = lambda: ms.verify_signature(folder, trusted_keys=[public]).raise_if_failed()  # noqa: E731
        check_theirs = lambda: model_signing.verifying.Config().use_elliptic_key_verifier(  # noqa: E731
            public_key=public).verify(folder, theirs_sig)
        for call in (sign_ours, sign_theirs, check_ours, check_theirs):
            call()  # warm-up: imports, and every file in the page cache
        rows = [("sign, Python API", best_and_median(sign_ours, args.runs), best_and_median(sign_theirs, args.runs)),
                ("check, Python API", best_and_median(check_ours, args.runs),
                 best_and_median(check_theirs, args.runs))]
        rows.append(("sign, command line (new process)",
                     best_and_median(lambda: cli("modelsafe", "sign", folder, "--key", private), args.runs),
                     best_and_median(lambda: cli("model_signing", "sign", "key", "--signature", theirs_sig,
                                                 "--private_key", private, folder), args.runs)))
        rows.append(("check, command line (new process)",
                     best_and_median(lambda: cli("modelsafe", "inspect", folder, "--trusted-key", public), args.runs),
                     best_and_median(lambda: cli("model_signing", "verify", "key", "--signature", theirs_sig,
                                                 "--public_key", public, folder), args.runs)))
        step: list[float] = []
        check = gate.check_before_load

        def measured(*a: object, **k: object) -> object:
            start = time.perf_counter()
            try:
                return check(*a, **k)  # type: ignore[arg-type]
            finally:
                step.append(time.perf_counter() - start)

        gate.check_before_load = measured  # type: ignore[assignment]
        try:
            for _ in range(args.runs):
                ms.load(folder, signature="require", trusted_keys=[public], verify=False).close()
        finally:
            gate.check_before_load = check  # type: ignore[assignment]
        assert ours_sig.is_file()
    print(f"artifact: torch state dict, folder form, {size / (1 << 30):.2f} GiB in 7 files; "
          f"{args.runs} runs each, best / median seconds")
    print(f"{'what':<36} {'modelsafe':>19} {'model_signing':>19} {'ratio (best)':>13}")
    for label, (ours_best, ours_median), (theirs_best, theirs_median) in rows:
        print(f"{label:<36} {ours_best:8.4f} / {ours_median:8.4f} {theirs_best:8.3f} / {theirs_median:8.3f} "
              f"{theirs_best / ours_best:12.0f}x")
    print(f"{'signature step inside ms.load':<36} {min(step):8.4f} / {statistics.median(step):8.4f}")


if __name__ == "__main__":
    main()
