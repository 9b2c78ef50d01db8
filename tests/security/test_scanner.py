"""ms.scan: the attack corpus, clean controls of every container, truncation, bad input, memory."""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import modelsafe as ms
from modelsafe.errors import FormatError, ModelsafeError, UntrustedContentError
from modelsafe.security import audit_pickle

CORPUS = Path(__file__).resolve().parent / "corpus"
EXPECTED = json.loads((CORPUS / "EXPECTED.json").read_text())
CANARY = "MODELSAFE_CANARY_"



def _model():
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    X = np.random.default_rng(0).normal(size=(60, 4))
    y = (X[:, 0] > 0).astype(int)
    return make_pipeline(FunctionTransformer(np.log1p), StandardScaler(),
                         RandomForestClassifier(5, random_state=0)).fit(np.abs(X), y), np.abs(X)


# ---------------------------------------------------------------------------------------
# the attack corpus
# ---------------------------------------------------------------------------------------


def test_corpus_is_complete_and_generated():
    files = {p.name for p in CORPUS.iterdir()} - {"EXPECTED.json"}
    assert files == set(EXPECTED) and len(files) >= 30
    assert (CORPUS.parent / "make_corpus.py").is_file()
    names = " ".join(files)
    for needed in ("reduce_system_p0", "reduce_eval_p2", "reduce_exec_p4", "reduce_popen_p5", "getattr", ".joblib",
                   "torch_zip", "object_array.npy", "truncated_after_payload", ".7z", "nested.zip",
                   "lambda_layer.keras", "unsafe_mode.keras", "pytorch_model.bin", "features.data"):
        assert needed in names, needed


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_corpus_file_is_flagged_with_its_finding(in_tmp, name):
    report = ms.scan(CORPUS / name)
    assert not report.ok
    kinds = {f.kind for f in report.findings}
    subjects = {f.subject for f in report.findings}
    assert set(EXPECTED[name]["kinds"]) <= kinds, (kinds, str(report))
    assert set(EXPECTED[name]["subjects"]) <= subjects, (subjects, str(report))
    for f in report.findings:
        assert f.severity in ("critical", "high", "medium") and f.message and "Fix:" in f.message


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_load_and_convert_refuse_every_corpus_file(in_tmp, name):
    with pytest.raises(ModelsafeError):
        ms.load(CORPUS / name)
    with pytest.raises(ModelsafeError):
        ms.convert(CORPUS / name, in_tmp / "out.msafe")
    assert not (in_tmp / "out.msafe").exists()
    assert [p.name for p in in_tmp.iterdir()] == []


def test_cli_scan_of_the_corpus_exits_1_in_a_fresh_process(cli, tmp_path):
    proc = cli("scan", *sorted(str(CORPUS / n) for n in EXPECTED), cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stdout.count("NOT SAFE") == len(EXPECTED)
    assert not list(tmp_path.glob(f"{CANARY}*"))
    data = json.loads(cli("--json", "scan", str(CORPUS / "torch_zip_payload.pt"), cwd=tmp_path).stdout)
    finding = next(f for f in data["findings"] if f["kind"] == "dangerous-global")
    assert data["ok"] is False and finding["subject"] == "os.system"  # canonical: written as posix.system
    assert finding["location"].endswith("/data.pkl") and isinstance(finding["offset"], int)


def test_findings_locate_the_payload():
    nested = ms.scan(CORPUS / "nested.zip")
    f = next(f for f in nested.findings if f.kind == "dangerous-global")
    assert f.location == "outer/inner.zip!deep.zip!model.pkl"
    npy = ms.scan(CORPUS / "object_array.npy")
    assert npy.findings[0].location == "object-array-data" and npy.findings[0].offset > 0
    trunc = ms.scan(CORPUS / "truncated_after_payload.pkl")
    cut = next(f for f in trunc.findings if f.kind == "incomplete")
    assert cut.offset == (CORPUS / "truncated_after_payload.pkl").stat().st_size


def test_the_scanner_and_the_unpickler_share_one_allowlist():
    model, _ = _model()
    data = pickle.dumps(model, protocol=5)
    summary = audit_pickle(data)  # the restricted unpickler accepts it...
    assert summary.complete
    with pytest.raises(UntrustedContentError):
        audit_pickle(pickle.dumps(os.system))
    for name in ("reduce_system_p4.pkl", "dotted_os_chain.pkl", "getattr_numpy_builtins.pkl", "reduce_popen_p2.pkl"):
        with pytest.raises((UntrustedContentError, FormatError)):  # ...and refuses what the scanner flags
            audit_pickle((CORPUS / name).read_bytes())


def test_report_shape(tmp_path):
    report = ms.scan(CORPUS / "reduce_popen_p2.pkl")
    data = report.to_dict()
    json.dumps(data)
    assert data["ok"] is False and data["findings"][0]["subject"] == "subprocess.Popen"
    assert "commands.Popen" in data["findings"][0]["message"]  # the protocol-2 spelling is shown too
    assert "NOT SAFE" in str(report) and "subprocess.Popen" in str(report)
    assert report.globals("dangerous") == ["subprocess.Popen"]
    with pytest.raises(UntrustedContentError) as err:
        report.raise_if_failed()
    assert err.value.globals == ["subprocess.Popen"]


# ---------------------------------------------------------------------------------------
# clean controls: every container reads as ok, whatever its name
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_clean_sklearn_pickles_at_every_protocol(tmp_path, protocol):
    model, _ = _model()
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(model, protocol=protocol))
    report = ms.scan(path)
    assert report.ok, str(report)
    assert report.kind == "pickle" and report.streams[0].complete
    assert "sklearn.ensemble._forest.RandomForestClassifier" in report.globals("safe")


@pytest.mark.parametrize("compress", [0, 3, ("gzip", 3), ("bz2", 3), ("xz", 3), ("lzma", 3)])
def test_clean_joblib_files_with_every_compression(tmp_path, compress):
    import joblib

    model, X = _model()
    obj = {"model": model, "X": X, "fortran": np.asfortranarray(X), "swapped": X.astype(">f8"),
           "names": np.array(["a", "bc"]), "objects": np.array([1, "x", None], dtype=object)}
    path = tmp_path / "model.joblib"
    joblib.dump(obj, path, compress=compress)
    report = ms.scan(path)
    assert report.ok, str(report)
    assert report.kind == ("joblib" if compress == 0 else report.kind) and report.streams


def test_clean_torch_files_by_content_not_name(tmp_path):
    import torch

    state = {"w": torch.randn(3, 4), "b": torch.zeros(4, dtype=torch.int64), "step": 3}
    for name in ("model.pt", "model.bin", "model.ckpt", "model.pth", "weights.data", "noext"):
        torch.save(state, tmp_path / name)
        report = ms.scan(tmp_path / name)
        assert report.ok and report.kind == "zip:torch", str(report)
    torch.save(state, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    legacy = ms.scan(tmp_path / "legacy.pt")
    assert legacy.ok and legacy.kind == "torch-legacy" and len(legacy.streams) == 5
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pt")  # a whole module: torch.nn layer classes
    whole = ms.scan(tmp_path / "module.pt")
    assert whole.ok and "torch.nn.modules.linear.Linear" in whole.globals("safe"), str(whole)


def test_clean_arrays_and_safetensors(tmp_path):
    from safetensors.numpy import save_file

    np.save(tmp_path / "a.npy", np.arange(12.0).reshape(3, 4))
    np.savez(tmp_path / "b.npz", x=np.arange(3), y=np.ones((2, 2), dtype="f4"))
    np.savez_compressed(tmp_path / "c.npz", x=np.arange(1000))
    save_file({"w": np.ones((2, 3), dtype=np.float32)}, str(tmp_path / "d.safetensors"))
    for name, kind in (("a.npy", "npy"), ("b.npz", "zip:npz"), ("c.npz", "zip:npz"), ("d.safetensors", "safetensors")):
        report = ms.scan(tmp_path / name)
        assert report.ok and report.kind == kind, str(report)


def test_real_keras_files_are_clean(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    model.save(tmp_path / "m.keras")
    model.save(tmp_path / "m.h5")
    for name, kind in (("m.keras", "zip:keras"), ("m.h5", "hdf5")):
        report = ms.scan(tmp_path / name)
        assert report.ok and report.kind == kind, str(report)


def test_modelsafe_artifacts_are_scanned_with_their_integrity(tmp_path):
    model, X = _model()
    single, folder = tmp_path / "m.msafe", tmp_path / "m_dir"
    ms.save(model, single, sample=X[:5])
    ms.save(model, folder, sample=X[:5])
    assert ms.scan(single).ok and ms.scan(single).kind == "zip:modelsafe"
    assert ms.scan(folder).ok and ms.scan(folder).kind == "modelsafe-directory"
    member = next(p for p in folder.rglob("*.npy"))
    raw = bytearray(member.read_bytes())
    raw[-1] ^= 0xFF
    member.write_bytes(bytes(raw))
    report = ms.scan(folder)
    assert [f.kind for f in report.findings] == ["integrity"]


def test_protocol_0_text_pickle_and_plain_text(tmp_path):
    (tmp_path / "p0.pkl").write_bytes(pickle.dumps({"a": [1, 2.5, "x"]}, protocol=0))
    assert ms.scan(tmp_path / "p0.pkl").ok
    (tmp_path / "notes.txt").write_text("Name,value\nlr,0.1\n")
    with pytest.raises(FormatError, match="is not a model file: it is a text file") as err:
        ms.scan(tmp_path / "notes.txt")
    assert err.value.kind == "text"


# ---------------------------------------------------------------------------------------
# never clean unless read completely
# ---------------------------------------------------------------------------------------


def _containers(tmp_path):
    import joblib
    import torch

    model, X = _model()
    files = {"model.pkl": pickle.dumps(model, protocol=5)}
    joblib.dump({"m": model, "X": X, "o": np.array([1, "x"], dtype=object)}, tmp_path / "j")
    joblib.dump({"X": X}, tmp_path / "jz", compress=3)
    torch.save({"w": torch.randn(64)}, tmp_path / "t")
    np.save(tmp_path / "a.npy", X)
    files.update({"model.joblib": (tmp_path / "j").read_bytes(), "model.joblib.z": (tmp_path / "jz").read_bytes(),
                  "model.pt": (tmp_path / "t").read_bytes(), "a.npy": (tmp_path / "a.npy").read_bytes()})
    return files


def test_truncated_files_are_never_clean(tmp_path):
    for name, data in _containers(tmp_path).items():
        assert ms.scan(_write(tmp_path / name, data)).ok, name
        for cut in sorted({1, 7, 40, len(data) // 3, len(data) // 2, len(data) - 200, len(data) - 1}):
            if 0 < cut < len(data):
                try:
                    report = ms.scan(_write(tmp_path / f"cut-{name}", data[:cut]))
                except FormatError as exc:  # a stub too short to be anything: refused as not a model
                    assert exc.kind in ("text", "empty") and cut < 8, (name, cut, exc)
                    continue
                assert not report.ok, (name, cut)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=400))
def test_random_bytes_never_crash_the_scanner(tmp_path, raw):
    try:
        report = ms.scan(_write(tmp_path / "blob", raw))
    except FormatError as exc:  # text, an empty file, an image: not a model file (exit code 2)
        assert exc.kind in ("text", "empty") or exc.kind.startswith("media:"), exc
        return
    if report.ok:
        assert all(s.complete for s in report.streams) and report.streams


# ---------------------------------------------------------------------------------------
# bad input: a clear report or exit code 2, never a crash or a hang
# ---------------------------------------------------------------------------------------


def test_bad_paths_raise_format_error_and_exit_2(cli, tmp_path):
    loop = tmp_path / "loop"
    loop.symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(loop)
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (tmp_path / "file").write_bytes(b"x")
    cases = {loop: "symbolic-link loop", tmp_path / "dangling": "broken symbolic link",
             tmp_path / "missing": "does not exist", fifo: "FIFO", tmp_path / "file" / "child": "Not a directory"}
    for path, needle in cases.items():
        with pytest.raises(FormatError, match=needle):
            ms.scan(path)
        proc = cli("scan", str(path))
        assert proc.returncode == 2 and needle in proc.stdout and "Traceback" not in proc.stdout + proc.stderr


def test_empty_files_and_folders_get_a_clear_report(cli, tmp_path):
    (tmp_path / "empty.pkl").write_bytes(b"")
    (tmp_path / "folder").mkdir()
    with pytest.raises(FormatError, match="not a model file: it is an empty file"):
        ms.scan(tmp_path / "empty.pkl")
    proc = cli("scan", str(tmp_path / "empty.pkl"))
    assert proc.returncode == 2 and "not a model file" in proc.stdout
    report = ms.scan(tmp_path / "folder")
    assert not report.ok and "empty" in str(report)
    assert cli("scan", str(tmp_path / "folder")).returncode == 1


def test_folders_are_walked_without_following_links(tmp_path):
    folder = tmp_path / "models"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(CORPUS / "reduce_eval_p4.pkl", folder / "sub" / "weights.bin")
    (folder / "clean.pkl").write_bytes(pickle.dumps([1, 2]))
    (folder / "escape").symlink_to("/etc/passwd")
    report = ms.scan(folder)
    kinds = {(f.kind, f.location) for f in report.findings}
    assert ("dangerous-global", "sub/weights.bin") in kinds and ("unsafe-archive", "escape") in kinds


def test_huge_member_counts_are_refused_before_reading(tmp_path):
    # A real zip whose end records are rewritten to declare 5 million members (a central-directory flood).
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.pkl", pickle.dumps(1))
    body = buf.getvalue()[:-22]
    zip64_eocd = b"PK\x06\x06" + struct.pack("<QHHLLQQQQ", 44, 45, 45, 0, 0, 5_000_000, 5_000_000, 0, 0)
    locator = b"PK\x06\x07" + struct.pack("<LQL", 0, len(body), 1)
    tail = zip64_eocd + locator + b"PK\x05\x06" + struct.pack("<4H2LH", 0, 0, 0xFFFF, 0xFFFF, 0, 0, 0)
    path = _write(tmp_path / "flood.zip", body + tail)
    report = ms.scan(path)
    assert [f.kind for f in report.findings] == ["archive-limit"] and "5000000" in str(report)


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_hostile_archive_members(tmp_path):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("/abs.pkl", pickle.dumps(1))
        zf.writestr("a.pkl", pickle.dumps(1))
        zf.writestr("a.pkl", pickle.dumps(2))
        link = zipfile.ZipInfo("link")
        link.external_attr = (0o120777) << 16
        zf.writestr(link, "/etc/passwd")
    report = ms.scan(_write(tmp_path / "hostile.zip", out.getvalue()))
    unsafe = sorted(f.subject for f in report.findings if f.kind == "unsafe-archive")
    assert unsafe == ["/abs.pkl", "a.pkl", "link"]


def test_deeply_nested_zips_stop_at_the_depth_limit(tmp_path):
    data = pickle.dumps([1])
    for level in range(8):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr(f"level{level}.zip" if level else "x.pkl", data)
        data = buf.getvalue()
    report = ms.scan(_write(tmp_path / "deep.zip", data))
    assert [f.kind for f in report.findings] == ["archive-limit"]


# ---------------------------------------------------------------------------------------
# streaming: bounded memory on a large file, in a fresh process
# ---------------------------------------------------------------------------------------


def test_large_pickle_is_scanned_in_bounded_memory(fresh, tmp_path):
    path = tmp_path / "big.pkl"
    with open(path, "wb") as f:
        pickle.dump({f"layer{i}": np.full((4 << 20,), i, dtype=np.float32) for i in range(12)}, f, protocol=5)
    assert path.stat().st_size > 190 << 20
    proc = fresh(f"""
        import modelsafe as ms
        report = ms.scan({str(path)!r})
        status = open("/proc/self/status").read()  # VmHWM: this process's peak RSS (kB)
        print(report.ok, int(status.split("VmHWM:")[1].split()[0]) // 1024)
    """)
    ok, peak_mb = proc.stdout.split()
    path.unlink()
    assert ok == "True" and int(peak_mb) < 100, proc.stdout


def test_scan_imports_no_framework_for_pickles(fresh):
    proc = fresh(f"""
        import sys, modelsafe as ms
        ms.scan({str(CORPUS / 'reduce_system_p5.pkl')!r})
        ms.scan({str(CORPUS / 'torch_zip_payload.pt')!r})
        print(sorted(m for m in ("torch", "sklearn", "keras", "tensorflow", "numpy", "joblib") if m in sys.modules))
    """)
    assert proc.stdout.strip() == "[]", proc.stdout
