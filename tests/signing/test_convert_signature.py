"""``convert`` checks the source's signature (``model_signing`` beside it, OMS) before anything reads the model:
a signed legacy pickle converts, a changed, unsigned or untrusted one is refused before its bytes are scanned
or unpickled, a signed folder that gained a file is refused, and the store's copy of a URL source is checked."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import model_signing
import pytest

import modelsafe as ms

from .conftest import sig_of


def _sign(path: Path, private: Path) -> None:
    model_signing.signing.Config().use_elliptic_key_signer(private_key=private).sign(path, sig_of(path))


class _Payload:
    """A pickle that runs a shell command when unpickled (the marker file tells whether it ran)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def legacy(tmp_path, small_model, keys):
    """A pickled scikit-learn model signed with model_signing's API by ``keys``."""
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(small_model[0]))
    _sign(path, keys.private)
    return path


def test_a_signed_pickle_converts_and_predicts(legacy, keys, small_model, tmp_path):
    model, X = small_model
    out = tmp_path / "model.msafe"
    ms.convert(legacy, out, sample=X[:5], signature="require", trusted_keys=[keys.public])
    assert (ms.load(out).predict(X) == model.predict(X)).all()


def test_a_pickle_replaced_after_signing_is_refused_before_it_is_read(legacy, keys, tmp_path):
    marker = tmp_path / "payload-ran"
    legacy.write_bytes(pickle.dumps(_Payload(marker)))
    for mode in ("require", "auto"):
        with pytest.raises(ms.SignatureMismatchError) as info:
            ms.convert(legacy, tmp_path / f"{mode}.msafe", trusted=["posix.system"], signature=mode,
                       trusted_keys=[keys.public])
        assert info.value.reason == "files changed" and info.value.fingerprint == keys.fingerprint
        assert "." in str(info.value) and "changed" in str(info.value)
        assert not (tmp_path / f"{mode}.msafe").exists()
    assert not marker.exists()


def test_unsigned_and_untrusted_sources_are_refused_under_require(legacy, keys, other_keys, tmp_path):
    with pytest.raises(ms.UntrustedSignerError) as info:
        ms.convert(legacy, tmp_path / "a.msafe", signature="require", trusted_keys=[other_keys.public])
    assert info.value.fingerprint == keys.fingerprint
    sig_of(legacy).unlink()
    with pytest.raises(ms.UnsignedArtifactError):
        ms.convert(legacy, tmp_path / "b.msafe", signature="require", trusted_keys=[keys.public])
    ms.convert(legacy, tmp_path / "c.msafe", trusted_keys=[keys.public])  # auto: nothing beside it to check
    with pytest.raises(ValueError, match="signature"):
        ms.convert(legacy, tmp_path / "d.msafe", signature="always")


def test_a_signed_folder_that_gained_a_file_is_refused(tmp_path, small_model, keys):
    import mlflow.sklearn

    folder = tmp_path / "mlflow-model"
    mlflow.sklearn.save_model(small_model[0], folder, serialization_format="cloudpickle")
    _sign(folder, keys.private)
    ms.convert(folder, tmp_path / "ok.msafe", signature="require", trusted_keys=[keys.public])
    (folder / "extra.pkl").write_bytes(pickle.dumps(_Payload(tmp_path / "payload-ran")))
    with pytest.raises(ms.SignatureMismatchError) as info:
        ms.convert(folder, tmp_path / "refused.msafe", signature="require", trusted_keys=[keys.public])
    assert info.value.added == ["extra.pkl"]
    with pytest.raises(ms.UnsignedArtifactError):
        ms.convert("models:/anything/1", tmp_path / "registry.msafe", signature="require",
                   trusted_keys=[keys.public])


def test_a_url_source_is_checked_on_the_copy_convert_reads(legacy, keys, tmp_path):
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe({"/signed/model.pkl": legacy.read_bytes(), "/signed/model.pkl.sig": sig_of(legacy).read_bytes()})
    ms.convert("memory://signed/model.pkl", tmp_path / "ok.msafe", signature="require", trusted_keys=[keys.public])
    fs.pipe({"/signed/model.pkl": legacy.read_bytes() + b"\x00"})
    with pytest.raises(ms.SignatureMismatchError):
        ms.convert("memory://signed/model.pkl", tmp_path / "refused.msafe", signature="require",
                   trusted_keys=[keys.public])
    fs.rm("/signed", recursive=True)


def test_the_command_line_takes_the_options(legacy, keys, other_keys, tmp_path, cli):
    ok = cli("convert", str(legacy), str(tmp_path / "ok.msafe"), "--trusted-key", str(keys.public))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    refused = cli("convert", str(legacy), str(tmp_path / "no.msafe"), "--trusted-key", str(other_keys.public))
    said = refused.stdout + refused.stderr
    assert refused.returncode == 1 and "UntrustedSignerError" in said and keys.fingerprint[:16] in said, said
    assert "Traceback" not in said
    assert not (tmp_path / "no.msafe").exists()
