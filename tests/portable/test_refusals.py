"""What the portable runtime refuses: graphs that reach outside the artifact, untrusted operator domains,
changed members, and a runtime='onnx' load of an artifact that has no member.

Hostile artifacts are made as a hostile producer would: the ONNX member is rewritten and its
hash recorded, so only the audit of the graph stands between it and onnxruntime.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import modelsafe as ms


@pytest.fixture
def folder_artifact(tmp_path, numbers):
    """A LogisticRegression saved as a folder with a portable member."""
    from sklearn.linear_model import LogisticRegression

    X, y = numbers
    path = tmp_path / "model"
    ms.save(LogisticRegression().fit(X, y), path, sample=X[:30], portable="onnx")
    return path


def _graph(path) -> onnx.ModelProto:
    return onnx.load_model_from_string((path / "portable" / "model.onnx").read_bytes())


def _externalize(model: onnx.ModelProto, location: str) -> onnx.ModelProto:
    """An initializer whose bytes are read from the external-data ``location``."""
    tensor = numpy_helper.from_array(np.zeros(2, np.float32), "leak")
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "8")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    model.graph.initializer.append(tensor)
    return model


@pytest.mark.parametrize("location, words", [
    ("../../../../etc/passwd", "climbs out"),
    ("/etc/passwd", "absolute path"),
    ("weights/../../secret.bin", "climbs out"),
    ("C:\\Windows\\win.ini", "backslash"),
])
def test_external_data_outside_the_artifact_is_refused(folder_artifact, replace, location, words):
    replace(folder_artifact, "portable/model.onnx", _externalize(_graph(folder_artifact), location).SerializeToString())
    with pytest.raises(ms.UnsafeArchiveError) as caught:
        ms.load(folder_artifact, runtime="onnx")
    assert caught.value.location == location and words in str(caught.value)
    assert "initializer" in str(caught.value) and "Fix:" in str(caught.value)
    report = ms.scan(folder_artifact)
    assert not report.ok
    assert [(f.kind, f.subject) for f in report.findings if f.kind.startswith("onnx")] == [("onnx-external-data",
                                                                                            location)]


def test_external_data_the_artifact_does_not_hold_is_refused(folder_artifact, replace):
    replace(folder_artifact, "portable/model.onnx", _externalize(_graph(folder_artifact), "weights.bin").SerializeToString())
    with pytest.raises(ms.UnsafeArchiveError) as caught:
        ms.load(folder_artifact, runtime="onnx")
    assert caught.value.locations == ["weights.bin"] and "does not hold" in str(caught.value)


def test_a_manifest_naming_external_data_outside_is_refused(folder_artifact, manifest_edit):
    manifest_edit(folder_artifact, lambda m: m["portable"].__setitem__("external_data", ["../../etc/passwd"]))
    with pytest.raises(ms.UnsafeArchiveError):
        ms.load(folder_artifact, runtime="onnx")


def test_external_data_inside_the_artifact_loads(tmp_path, numbers, monkeypatch, fresh):
    """A graph too large for one protobuf message keeps its tensors in portable/model.onnx.data; the runtime gets
    those bytes from the artifact (never from a file beside wherever it runs)."""
    import torch

    import modelsafe.portable.save as portable_save

    X, _ = numbers
    monkeypatch.setattr(portable_save, "EXTERNAL_DATA_ABOVE", 0)  # this small network is "too large"
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 64), torch.nn.ReLU(), torch.nn.Linear(64, 2)).eval()
    x = X.astype(np.float32)
    manifest = ms.save(model, tmp_path / "external.msafe", sample=x[:30], portable="onnx")
    assert manifest.portable["external_data"] == ["model.onnx.data"]
    assert "portable/model.onnx.data" in manifest.members
    with torch.no_grad():
        np.save(tmp_path / "expected.npy", model(torch.from_numpy(x)).numpy())
    np.save(tmp_path / "X.npy", x)
    fresh("""
        import numpy as np, modelsafe as ms
        bundle = ms.load("external.msafe", runtime="onnx")
        assert bundle.verify().ok
        assert np.allclose(bundle.predict(np.load("X.npy")), np.load("expected.npy"), atol=1e-5)
    """)


def _with_fused_matmul(model: onnx.ModelProto) -> onnx.ModelProto:
    """The probabilities go through com.microsoft's FusedMatMul with an identity matrix: same values, a
    contrib operator (a custom domain as far as the ONNX standard goes)."""
    probabilities = model.graph.output[1].name
    for node in model.graph.node:
        node.output[:] = [f"{o}_raw" if o == probabilities else o for o in node.output]
    model.graph.initializer.append(numpy_helper.from_array(np.eye(2, dtype=np.float32), "identity"))
    model.graph.node.append(helper.make_node("FusedMatMul", [f"{probabilities}_raw", "identity"], [probabilities],
                                             domain="com.microsoft", alpha=1.0, name="contrib"))
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return model


def test_a_custom_domain_is_refused_unless_trusted(folder_artifact, replace, numbers):
    X, _ = numbers
    replace(folder_artifact, "portable/model.onnx", _with_fused_matmul(_graph(folder_artifact)).SerializeToString())
    with pytest.raises(ms.UntrustedContentError) as caught:
        ms.load(folder_artifact, runtime="onnx")
    assert caught.value.domain == "com.microsoft" and "FusedMatMul node 'contrib'" in str(caught.value)
    assert "trusted=['com.microsoft']" in str(caught.value)
    findings = [f for f in ms.scan(folder_artifact).findings if f.kind == "onnx-custom-domain"]
    assert [f.subject for f in findings] == ["com.microsoft"]
    with ms.load(folder_artifact, runtime="onnx", trusted=["com.microsoft"]) as bundle:
        assert bundle.verify().ok
        assert np.allclose(bundle.predict_proba(X), ms.load(folder_artifact).predict_proba(X), atol=1e-6)


def test_an_operator_the_runtime_lacks_is_an_environment_error(folder_artifact, replace):
    model = _graph(folder_artifact)
    model.graph.node[0].domain = "com.example.ops"
    model.opset_import.append(helper.make_opsetid("com.example.ops", 1))
    replace(folder_artifact, "portable/model.onnx", model.SerializeToString())
    with pytest.raises(ms.EnvironmentMismatchError) as caught:
        ms.load(folder_artifact, runtime="onnx", trusted=["com.example.ops"])
    assert caught.value.packages == ["onnxruntime"] and "cannot run the portable graph" in str(caught.value)


@pytest.mark.parametrize("runtime", ["onnx", "auto"])
def test_a_changed_onnx_member_is_an_integrity_error(tmp_path, numbers, flip_byte, runtime):
    from sklearn.linear_model import LogisticRegression

    X, y = numbers
    path = tmp_path / "model.msafe"
    ms.save(LogisticRegression().fit(X, y), path, sample=X[:30], portable="onnx")
    flip_byte(path, "portable/model.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning: integrity failures never fall back
        with pytest.raises(ms.IntegrityError) as caught:
            ms.load(path, runtime=runtime)
    assert caught.value.member == "portable/model.onnx"


def test_a_changed_native_member_does_not_fall_back(tmp_path, numbers, flip_byte):
    from sklearn.linear_model import LogisticRegression

    X, y = numbers
    path = tmp_path / "model.msafe"
    manifest = ms.save(LogisticRegression().fit(X, y), path, sample=X[:30], portable="onnx")
    member = manifest.components["model"].members[0]
    flip_byte(path, member)
    for runtime in ("auto", "onnx"):  # the artifact changed: whichever runtime, it is refused
        with pytest.raises(ms.IntegrityError) as caught:
            ms.load(path, runtime=runtime)
        assert caught.value.member == member


def test_onnx_runtime_without_a_member_says_how_to_add_one(tmp_path, numbers):
    from sklearn.linear_model import LogisticRegression

    X, y = numbers
    path = tmp_path / "plain.msafe"
    ms.save(LogisticRegression().fit(X, y), path, sample=X[:30])
    with pytest.raises(ms.NoPortableMemberError) as caught:
        ms.load(path, runtime="onnx")
    assert caught.value.path == str(path) and caught.value.flavor == "sklearn"
    assert "portable='onnx'" in str(caught.value) and "ms.save(" in str(caught.value)
    assert isinstance(caught.value, ms.FlavorError)


def test_runtime_and_portable_values_are_checked(tmp_path, numbers):
    from sklearn.linear_model import LogisticRegression

    X, y = numbers
    with pytest.raises(ValueError, match="Invalid `portable`"):
        ms.save(LogisticRegression().fit(X, y), tmp_path / "m.msafe", sample=X[:30], portable="onxx")
    assert not (tmp_path / "m.msafe").exists()
    ms.save(LogisticRegression().fit(X, y), tmp_path / "m.msafe", sample=X[:30])
    with pytest.raises(ValueError, match="Invalid `runtime`"):
        ms.load(tmp_path / "m.msafe", runtime="ort")
    with pytest.raises(ms.UnknownKeywordError) as caught:
        ms.load(tmp_path / "m.msafe", runtme="onnx")
    assert caught.value.suggestions == {"runtme": "runtime"}


def test_a_standalone_onnx_file_is_scanned_and_diagnosed(tmp_path, folder_artifact):
    good = tmp_path / "good.onnx"
    good.write_bytes((folder_artifact / "portable" / "model.onnx").read_bytes())
    report = ms.scan(good)
    assert report.ok and report.kind == "onnx" and report.items[0].facts["opsets"][""] == 17
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(_externalize(_graph(folder_artifact), "/etc/shadow").SerializeToString())
    report = ms.scan(bad)
    assert not report.ok and report.findings[0].severity == "high"
    doctor = ms.doctor(bad)
    assert not doctor.ok and any("/etc/shadow" in p.what and "outside" not in p.why for p in doctor.problems)
    missing = tmp_path / "missing.onnx"
    missing.write_bytes(_externalize(_graph(folder_artifact), "weights.bin").SerializeToString())
    assert any(p.subject == "weights.bin" and "not beside it" in p.what for p in ms.doctor(missing).problems)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    assert not ms.scan(broken).ok
