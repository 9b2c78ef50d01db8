"""``load(signature=..., trusted_keys=...)``: what is checked, when, and every refusal with its class."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

import modelsafe as ms
from modelsafe.artifact import reader as reader_module


def edit_manifest(path: Path, change) -> None:
    """Rewrite the artifact's modelsafe.json with ``change(dict)`` applied (both forms)."""
    if path.is_dir():
        data = json.loads((path / "modelsafe.json").read_bytes())
        change(data)
        (path / "modelsafe.json").write_text(json.dumps(data))
        return
    rebuilt = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(rebuilt, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            raw = src.read(info)
            if info.filename == "modelsafe.json":
                data = json.loads(raw)
                change(data)
                raw = json.dumps(data).encode()
            dst.writestr(info.filename, raw)
    rebuilt.replace(path)


def add_file(path: Path, name: str, data: bytes) -> None:
    """Put a file the manifest does not list into the artifact (both forms)."""
    if path.is_dir():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data)
    else:
        with zipfile.ZipFile(path, "a", zipfile.ZIP_STORED) as zf:
            zf.writestr(name, data)


def test_signed_artifact_loads_in_a_fresh_process_under_require(artifact, keys, kit, fresh):
    report = ms.sign(artifact, key=keys.private)
    assert report.ok and report.signer == keys.fingerprint and Path(report.signature) == kit.sig_of(artifact)
    proc = fresh(f"""
        import modelsafe as ms, numpy as np
        bundle = ms.load({str(artifact)!r}, signature="require", trusted_keys=[{str(keys.public)!r}])
        print(bundle.predict(np.zeros((2, 3))).tolist())
    """)
    assert proc.stdout.strip() == str(kit.small_model[0].predict(np.zeros((2, 3))).tolist())


def test_trusted_keys_from_the_environment_variable(artifact, keys, other_keys, fresh):
    ms.sign(artifact, key=keys.private)
    code = f"import modelsafe as ms; ms.load({str(artifact)!r}, signature='require'); print('loaded')"
    listed = os.pathsep.join([str(other_keys.public), str(keys.public.parent)])  # a key file, and a folder
    assert fresh(code, env={"MODELSAFE_TRUSTED_KEYS": listed}).stdout.strip() == "loaded"
    refused = fresh(code, env={"MODELSAFE_TRUSTED_KEYS": str(other_keys.public)}, check=False)
    assert refused.returncode != 0 and "UntrustedSignerError" in refused.stderr


def test_explicit_trusted_keys_replace_the_environment_variable(artifact, keys, other_keys, monkeypatch):
    ms.sign(artifact, key=keys.private)
    monkeypatch.setenv("MODELSAFE_TRUSTED_KEYS", str(keys.public))
    with pytest.raises(ms.UntrustedSignerError):
        ms.load(artifact, signature="require", trusted_keys=[other_keys.public])


def test_unsigned_artifact_is_refused_under_require(artifact, keys):
    with pytest.raises(ms.UnsignedArtifactError) as info:
        ms.load(artifact, signature="require", trusted_keys=[keys.public])
    exc = info.value
    assert isinstance(exc, ms.SecurityError) and exc.reason == "unsigned" and exc.fingerprint is None
    assert exc.signature == str(artifact) + ".sig" and f"there is no {exc.signature!r} beside it" in str(exc)
    assert "modelsafe sign" in str(exc)


def test_stripped_signature_is_refused_under_require(artifact, keys, kit):
    ms.sign(artifact, key=keys.private)
    kit.sig_of(artifact).unlink()
    with pytest.raises(ms.UnsignedArtifactError):
        ms.load(artifact, signature="require", trusted_keys=[keys.public])


def test_signer_not_trusted_is_refused_naming_its_fingerprint(artifact, keys, other_keys):
    ms.sign(artifact, key=other_keys.private)
    with pytest.raises(ms.UntrustedSignerError) as info:
        ms.load(artifact, signature="require", trusted_keys=[keys.public])
    assert info.value.fingerprint == other_keys.fingerprint and info.value.reason == "untrusted"
    assert other_keys.fingerprint in str(info.value) and keys.fingerprint[:16] in str(info.value)
    with pytest.raises(ms.UntrustedSignerError):  # the same under auto: a signature that fails is refused
        ms.load(artifact, trusted_keys=[keys.public])


def test_require_without_any_trusted_key_is_refused(artifact, keys, monkeypatch):
    monkeypatch.delenv("MODELSAFE_TRUSTED_KEYS", raising=False)
    ms.sign(artifact, key=keys.private)
    with pytest.raises(ms.UntrustedSignerError, match="no trusted public key was given") as info:
        ms.load(artifact, signature="require")
    assert info.value.fingerprint == keys.fingerprint


def test_auto_checks_only_with_trusted_keys(artifact, keys, kit, monkeypatch):
    monkeypatch.delenv("MODELSAFE_TRUSTED_KEYS", raising=False)
    kit.sig_of(artifact).write_text("not a signature")
    ms.load(artifact).close()  # no trusted keys: nothing is checked (and cryptography is not needed)
    with pytest.raises(ms.InvalidSignatureError, match="it is not JSON") as info:
        ms.load(artifact, trusted_keys=[keys.public])
    assert info.value.reason == "malformed"
    ms.load(artifact, trusted_keys=[keys.public], signature="ignore").close()
    kit.sig_of(artifact).unlink()
    ms.load(artifact, trusted_keys=[keys.public]).close()  # unsigned is fine under auto


def test_signature_mode_and_keywords_are_checked(artifact, keys):
    with pytest.raises(ValueError, match=r"Invalid `signature`: expected one of 'auto', 'require', 'ignore'"):
        ms.load(artifact, signature="required", trusted_keys=[keys.public])
    with pytest.raises(ms.UnknownKeywordError) as info:
        ms.load(artifact, trusted_key=[keys.public])
    assert info.value.suggestions == {"trusted_key": "trusted_keys"}


def test_manifest_edited_after_signing_is_refused(artifact, keys):
    ms.sign(artifact, key=keys.private)
    edit_manifest(artifact, lambda m: m["metadata"].update(owner="attacker"))
    with pytest.raises(ms.SignatureMismatchError) as info:
        ms.load(artifact, signature="require", trusted_keys=[keys.public])
    exc = info.value
    assert exc.reason == "manifest changed" and [c[0] for c in exc.changed] == ["modelsafe.json"]
    assert exc.fingerprint == keys.fingerprint and keys.fingerprint in str(exc)
    assert not exc.missing and not exc.added and not exc.unlisted


def test_member_added_after_signing_is_refused(artifact, keys):
    ms.sign(artifact, key=keys.private)
    payload = b"extra weights"
    add_file(artifact, "model/extra.bin", payload)
    import hashlib

    edit_manifest(artifact, lambda m: m["members"].update(
        {"model/extra.bin": {"size": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}}))
    with pytest.raises(ms.SignatureMismatchError) as info:
        ms.load(artifact, signature="require", trusted_keys=[keys.public])
    assert info.value.added == ["model/extra.bin"] and "modelsafe.json" in [c[0] for c in info.value.changed]


def test_member_removed_after_signing_is_refused(tmp_path, kit, keys):
    artifact = kit.save(tmp_path / "model")
    ms.sign(artifact, key=keys.private)
    (artifact / "sample/outputs/predict_proba.npy").unlink()
    edit_manifest(artifact, lambda m: (m["members"].pop("sample/outputs/predict_proba.npy"),
                                       m["verification"]["outputs"].pop("predict_proba")))
    with pytest.raises(ms.SignatureMismatchError) as info:
        ms.load(artifact, signature="require", trusted_keys=[keys.public])
    assert info.value.missing == ["sample/outputs/predict_proba.npy"]


def test_file_nobody_lists_is_refused(artifact, keys):
    ms.sign(artifact, key=keys.private)
    add_file(artifact, "notes/payload.py", b"import os\n")
    with pytest.raises(ms.SignatureMismatchError) as info:
        ms.load(artifact, signature="require", trusted_keys=[keys.public])
    assert info.value.unlisted == ["notes/payload.py"] and info.value.reason == "files changed"


def test_valid_signature_over_a_tampered_member_is_caught_by_integrity(artifact, keys, flip_byte):
    ms.sign(artifact, key=keys.private)
    member = ms.inspect(artifact).components["model"].members[0]
    flip_byte(artifact, member)
    assert ms.verify_signature(artifact, trusted_keys=[keys.public]).ok  # the signed manifest is intact
    with pytest.raises(ms.IntegrityError) as info:
        ms.load(artifact, signature="require", trusted_keys=[keys.public])
    assert info.value.member == member


class _Reads:
    """Every member name the artifact readers hand out, and when the signature check ran."""

    def __init__(self, monkeypatch) -> None:
        self.events: list[str] = []
        from modelsafe.signing import gate

        for cls in {reader_module.ZipArtifactReader, reader_module.DirArtifactReader}:
            for method in ("view", "locate", "private"):
                monkeypatch.setattr(cls, method, self._logged(getattr(cls, method)))
        check = gate.check_before_load

        def logged_check(*args, **kwargs):
            self.events.append("<signature checked>")
            return check(*args, **kwargs)

        monkeypatch.setattr(gate, "check_before_load", logged_check)

    def _logged(self, method):
        def call(reader, name, *args, **kwargs):
            self.events.append(name)
            return method(reader, name, *args, **kwargs)
        return call


def test_signature_is_checked_before_any_member_is_read(artifact, keys, monkeypatch):
    ms.sign(artifact, key=keys.private)
    reads = _Reads(monkeypatch)
    ms.load(artifact, signature="require", trusted_keys=[keys.public]).close()
    at = reads.events.index("<signature checked>")
    assert set(reads.events[:at]) == {"modelsafe.json"}
    assert set(ms.inspect(artifact).members) <= set(reads.events[at + 1:]) - {"modelsafe.json"}


def test_a_refused_signature_reads_no_member(artifact, keys, other_keys, monkeypatch):
    ms.sign(artifact, key=other_keys.private)
    reads = _Reads(monkeypatch)
    with pytest.raises(ms.UntrustedSignerError):
        ms.load(artifact, signature="require", trusted_keys=[keys.public])
    assert set(reads.events) == {"modelsafe.json", "<signature checked>"}


def test_re_signing_replaces_the_signature(artifact, keys, other_keys):
    ms.sign(artifact, key=other_keys.private)
    ms.sign(artifact, key=keys.private)
    ms.load(artifact, signature="require", trusted_keys=[keys.public]).close()
    assert [p.name for p in artifact.parent.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_folder_given_with_a_trailing_slash_or_dot(tmp_path, kit, keys, monkeypatch):
    folder = kit.save(tmp_path / "model")
    assert ms.sign(f"{folder}/", key=keys.private).signature == str(folder) + ".sig"
    monkeypatch.chdir(folder)
    ms.load(".", signature="require", trusted_keys=[keys.public]).close()
