"""Issue 21: scan and doctor agree, aliases, archives and containers, resource bounds, false positives."""

from __future__ import annotations

import io
import json
import pickle
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import modelsafe as ms
from modelsafe.errors import FormatError, UntrustedContentError
from modelsafe.security import audit_pickle, restricted_loads, summarize_pickle

sys.path.insert(0, str(Path(__file__).parent))
import benign  # noqa: E402

CORPUS = Path(__file__).resolve().parent / "corpus"
EXPECTED = json.loads((CORPUS / "EXPECTED.json").read_text())
CANARY = "MODELSAFE_CANARY_"



@pytest.fixture(scope="module")
def benign_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("benign")
    return folder, benign.build(folder)


# ---------------------------------------------------------------------------------------
# one verdict: doctor reports as an error what scan flags
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_doctor_reports_every_scan_finding_as_an_error(in_tmp, name):
    report = ms.scan(CORPUS / name)
    diagnosis = ms.doctor(CORPUS / name)
    assert not diagnosis.ok and "problem(s) stop it here" in str(diagnosis)
    errors = {p.subject for p in diagnosis.errors()}
    for finding in report.findings:
        assert finding.subject in errors, (finding, str(diagnosis))


def test_unknown_globals_called_while_loading_are_critical(tmp_path):
    called = tmp_path / "called.pkl"
    called.write_bytes(b"\x80\x02cteam_lib.models\nScorer\n)R.")
    referenced = tmp_path / "referenced.pkl"
    referenced.write_bytes(b"\x80\x02cteam_lib.models\nscore\n.")
    assert [f.severity for f in ms.scan(called).findings] == ["critical"]
    assert [f.severity for f in ms.scan(referenced).findings] == ["high"]
    assert "1 critical" in str(ms.scan(called))
    fix = ms.scan(referenced).findings[0].message
    assert "trusted=['team_lib.models.score']" in fix and "<name>" not in fix


@pytest.mark.parametrize("module,name,canonical", [
    ("_io", "FileIO", "io.FileIO"), ("_operator", "methodcaller", "operator.methodcaller"),
    ("torch.serialization", "load", "torch.load"), ("posix", "system", "os.system"), ("nt", "system", "os.system"),
    ("pathlib", "os.system", "os.system"), ("numpy.lib", "npyio.os.system", "os.system"),
    ("sklearn.utils", "validation.np.load", "numpy.load"), ("__builtin__", "eval", "builtins.eval"),
])
def test_aliases_get_the_verdict_of_their_canonical_name(tmp_path, module, name, canonical):
    from modelsafe.security._allowlist import canonical as resolve
    from modelsafe.security._allowlist import classify

    assert ".".join(resolve(module, name)) == canonical
    assert classify(module, name) == classify(*canonical.rsplit(".", 1)) == "dangerous"
    path = tmp_path / "alias.pkl"
    path.write_bytes(b"\x80\x04\x8c" + bytes([len(module)]) + module.encode() + b"\x8c" + bytes([len(name)])
                     + name.encode() + b"\x93)R.")
    finding = ms.scan(path).findings[0]
    assert finding.subject == canonical and finding.severity == "critical"
    assert f"written as {module}.{name}" in finding.message


# ---------------------------------------------------------------------------------------
# archives and containers
# ---------------------------------------------------------------------------------------


def test_compressed_tars_and_zips_holding_them_are_read(in_tmp):
    for name in ("payload.tar.gz", "payload.tgz", "payload.tar.bz2", "payload.tar.xz", "zip_holding_tgz.zip"):
        report = ms.scan(CORPUS / name)
        bad = [f for f in report.findings if f.kind == "dangerous-global"]
        assert bad and bad[0].location.endswith("model/extra.pkl"), str(report)
        assert any(i.location.endswith("model/weights.pkl") and i.kind == "pickle" for i in report.items)


def test_a_folder_with_a_broken_file_still_reports_every_file(cli, tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "a.pkl").write_bytes(pickle.dumps([1, 2]))
    (folder / "b.tar.gz").write_bytes((CORPUS / "payload.tar.gz").read_bytes())
    bad = io.BytesIO()
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("model.pkl", pickle.dumps([1]))
    raw = bytearray(bad.getvalue())
    method = raw.find(b"PK\x03\x04") + 8
    raw[method : method + 2] = struct.pack("<H", 99)  # an unknown compression method in the local header...
    central = raw.find(b"PK\x01\x02") + 10
    raw[central : central + 2] = struct.pack("<H", 99)  # ...and in the central directory
    (folder / "c.zip").write_bytes(bytes(raw))
    report = ms.scan(folder)
    kinds = {(f.location, f.kind) for f in report.findings}
    assert ("b.tar.gz!model/extra.pkl", "dangerous-global") in kinds
    assert any(loc.startswith("c.zip") and kind == "incomplete" for loc, kind in kinds), kinds
    proc = cli("scan", str(folder), str(CORPUS / "payload.tar.gz"), str(tmp_path / "missing.pkl"))
    assert proc.returncode == 2 and proc.stdout.count("NOT SAFE") == 2 and "Traceback" not in proc.stdout + proc.stderr
    with pytest.raises(UntrustedContentError):  # convert and doctor see the same scan
        ms.convert(CORPUS / "payload.tar.gz", tmp_path / "out.msafe")
    assert not ms.doctor(CORPUS / "payload.tar.gz").ok


@pytest.mark.parametrize("name,encoding", [("embedded_raw.pkl", "raw"), ("embedded_base64.pkl", "base64"),
                                           ("embedded_hex.pkl", "hex")])
def test_pickles_hidden_in_values_are_read(in_tmp, name, encoding):
    report = ms.scan(CORPUS / name)
    finding = next(f for f in report.findings if f.kind == "dangerous-global")
    assert finding.subject == "os.system" and "!embedded@" in finding.location, encoding
    assert any(i.kind == "embedded-pickle" for i in report.items)


def test_values_that_only_look_like_pickles_are_data(tmp_path):
    path = tmp_path / "data.pkl"
    path.write_bytes(pickle.dumps({"weights": b"\x80\x04" + bytes(range(256)) * 4, "name": "gAS-not-base64!",
                                   "hex": "8004zz"}, protocol=4))
    report = ms.scan(path)
    assert report.ok, str(report)


def test_savedmodel_graph_is_checked_like_convert_does(tmp_path):
    report = ms.scan(CORPUS / "savedmodel_writefile")
    finding = next(f for f in report.findings if f.kind == "graph-op")
    assert finding.subject == "WriteFile" and finding.location == "saved_model.pb"
    assert not [f for f in report.findings if f.kind == "unknown-format"], str(report)
    with pytest.raises(UntrustedContentError, match="WriteFile"):
        ms.convert(CORPUS / "savedmodel_writefile", tmp_path / "out.msafe")


# ---------------------------------------------------------------------------------------
# resource exhaustion
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["billion_laughs_list.pkl", "tuple_hash_bomb.pkl", "memo_index_bomb.pkl"])
def test_denial_of_service_streams_are_refused_before_anything_is_built(in_tmp, name):
    data = (CORPUS / name).read_bytes()
    summary = summarize_pickle(data)
    assert not summary.complete and summary.exhausted
    report = ms.scan(CORPUS / name)
    assert [f.kind for f in report.findings] == ["denial-of-service"]
    with pytest.raises(UntrustedContentError, match="denial-of-service"):
        restricted_loads(data)  # would hash 2**40 tuples, or allocate a 2**32-entry memo, if it got that far


@pytest.mark.parametrize("stream", [
    b"\x80\x02c__builtin__\nbytearray\nJ\x00\x00\x00\x7f\x85R.",  # bytearray(2**31 - 2**24)
    b"\x80\x02c__builtin__\nlist\nc__builtin__\nrange\nJ\x00\x00\x00\x7f\x85R\x85R.",  # list(range(2**31 - 2**24))
])
def test_allowlisted_constructors_may_not_allocate_without_bound(stream):
    with pytest.raises(UntrustedContentError, match="allocate"):
        restricted_loads(stream)


def test_real_models_stay_far_below_the_bounds(benign_files):
    from modelsafe.security._bounds import MAX_EXPANDED
    from modelsafe.security._opcodes import _summarize
    from modelsafe.security._window import Window

    folder, _ = benign_files
    for name in ("forest_p5.pkl", "forest_p2.pkl"):
        data = (folder / name).read_bytes()
        summary, _ = _summarize(Window(data), 0, None, 0)
        assert summary.complete and not summary.exhausted
        assert summary.n_opcodes * 16 < MAX_EXPANDED  # the expansion is bounded by the opcodes, far below


# ---------------------------------------------------------------------------------------
# false positives
# ---------------------------------------------------------------------------------------


def test_benign_files_scan_clean_and_doctor_finds_no_security_problem(benign_files):
    folder, made = benign_files
    for name in sorted(made):
        if name in benign.NOT_MODELS:
            continue
        report = ms.scan(folder / name)
        assert report.ok, f"{name} ({made[name]}): {report}"
        subjects = {f.subject for f in report.findings}
        assert not [p for p in ms.doctor(folder / name).errors() if p.subject in subjects]


@pytest.mark.parametrize("name,needle", [("image_named.pt", "a PNG image"), ("notes.txt", "a text file"),
                                         ("encrypted.zip", "password-protected")])
def test_files_that_are_not_models_are_unreadable_input_not_unsafe(cli, benign_files, name, needle):
    folder, _ = benign_files
    with pytest.raises(FormatError, match=needle):
        ms.scan(folder / name)
    with pytest.raises(FormatError, match=needle):
        ms.doctor(folder / name)
    proc = cli("scan", str(folder / name))
    assert proc.returncode == 2 and needle in proc.stdout and "NOT SAFE" not in proc.stdout


def test_harmless_builtins_and_whole_torch_modules_are_allowed(tmp_path):
    import torch

    for obj in (len, abs, ValueError):
        assert audit_pickle(pickle.dumps(obj)).complete
    torch.save(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU()), tmp_path / "whole.pt")
    report = ms.scan(tmp_path / "whole.pt")
    assert report.ok and "torch.nn.modules.container.Sequential" in report.globals("safe")


def test_torchscript_code_is_checked(tmp_path):
    import torch

    scripted = tmp_path / "scripted.pt"
    torch.jit.script(torch.nn.Sequential(torch.nn.Linear(2, 2))).save(str(scripted))
    report = ms.scan(scripted)
    assert report.ok and report.kind == "zip:torchscript"
    assert any(i.kind == "torchscript-code" for i in report.items)
    assert ms.doctor(scripted).ok  # __torch__ names are TorchScript classes, not Python modules to import
    with zipfile.ZipFile(scripted) as zin, zipfile.ZipFile(tmp_path / "custom.pt", "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if "/code/" in info.filename and info.filename.endswith(".py"):  # (names may be mangled)
                data = data.replace(b"torch.linear(", b"ops.evil_lib.run(")
            zout.writestr(info, data)
    finding = next(f for f in ms.scan(tmp_path / "custom.pt").findings if f.kind == "torchscript-code")
    assert finding.subject == "ops.evil_lib.run"


def test_sklearn_cython_reconstructors_are_allowed_only_for_allowed_types():
    from modelsafe.security._allowlist import classify, is_allowed, verdict

    good = ("sklearn._loss._loss", "__pyx_unpickle_CyHalfBinomialLoss")
    assert classify(*good) == "safe" and verdict(*good, invoked=True) == "safe"
    assert is_allowed(*good, invoked=True)  # gone from this release: allowed by name, the load names versions
    for other in (("sklearn._loss._loss", "__pyx_unpickle_helper"), ("sklearn.utils._testing", "__pyx_unpickle_X"),
                  ("scipy.sparse._base", "__pyx_unpickle_Thing"), ("mylib", "__pyx_unpickle_Model")):
        assert verdict(*other, invoked=True) != "safe", other
        assert not is_allowed(*other, invoked=True), other


def test_a_refusal_names_the_version_difference(tmp_path):
    from modelsafe.checks.environment import distribution_for_module

    dist, current = distribution_for_module("sklearn")
    stream = b"\x80\x04\x8c\x0fsklearn.somemod\x8c\x0f_private_helper\x93)R."
    environment = {"packages": {dist: {"version": "1.3.2"}}}
    with pytest.raises(UntrustedContentError) as err:
        audit_pickle(stream, environment=environment)
    text = str(err.value)
    assert f"saved with {dist} 1.3.2 and {dist} {current} is installed" in text and "likely cause" in text
    assert err.value.versions == [{"package": dist, "saved": "1.3.2", "current": current}]
    with pytest.raises(UntrustedContentError) as same:
        audit_pickle(stream, environment={"packages": {dist: {"version": current}}})
    assert "likely cause" not in str(same.value)


def test_scan_keeps_numpy_arrays_clean(tmp_path):
    path = tmp_path / "arrays.pkl"
    path.write_bytes(pickle.dumps({"a": np.arange(10.0), "b": np.zeros((3, 3), dtype=np.int8)}, protocol=5))
    assert ms.scan(path).ok


def _pyx_stream(reconstructor: str, type_name: str, state: bytes) -> bytes:
    module = b"sklearn._loss._loss"
    return (b"\x80\x02c" + module + b"\n" + reconstructor.encode() + b"\nc" + module + b"\n" + type_name.encode()
            + b"\nK\x00" + state + b"\x87R.")


def test_an_older_releases_cython_reconstructor_is_rebuilt_by_the_installed_type():
    import sklearn._loss._loss as losses

    assert not hasattr(losses, "__pyx_unpickle_CyHalfTweedieLoss")  # gone since scikit-learn 1.6
    state = b"G" + struct.pack(">d", 1.5) + b"\x85"  # (1.5,)
    loss = restricted_loads(_pyx_stream("__pyx_unpickle_CyHalfTweedieLoss", "CyHalfTweedieLoss", state))
    assert isinstance(loss, losses.CyHalfTweedieLoss) and loss.power == 1.5
    with pytest.raises(FormatError, match="cannot rebuild it from that state") as err:
        restricted_loads(_pyx_stream("__pyx_unpickle_CyHalfTweedieLoss", "CyHalfTweedieLoss", b"X\x01\x00\x00\x00x\x85"))
    assert "scikit-learn" in str(err.value) and err.value.type_name == "CyHalfTweedieLoss"
    with pytest.raises(FormatError, match="called with"):  # the reconstructor rebuilds its own type only
        restricted_loads(_pyx_stream("__pyx_unpickle_CyHalfTweedieLoss", "CyHalfBinomialLoss", b")"))
