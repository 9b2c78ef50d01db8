"""Signatures of artifacts on a remote store: the signature is ``URL.sig``, read and written through fsspec."""

from __future__ import annotations

import uuid

import fsspec
import pytest

import modelsafe as ms


@pytest.mark.filterwarnings("ignore:.*cannot make a write conditional:UserWarning")
@pytest.mark.parametrize("name", ["model.msafe", "model"])
def test_sign_and_require_on_memory_urls(kit, keys, other_keys, name):
    url = f"memory://signing-{uuid.uuid4().hex}/{name}"
    kit.save(url)
    report = ms.sign(url, key=keys.private)
    assert report.signature == url + ".sig" and fsspec.filesystem("memory").exists(url + ".sig")
    ms.load(url, signature="require", trusted_keys=[keys.public]).close()
    assert ms.verify_signature(url, trusted_keys=[keys.public]).ok
    with pytest.raises(ms.UntrustedSignerError):
        ms.load(url, signature="require", trusted_keys=[other_keys.public])
    fsspec.filesystem("memory").rm(url + ".sig")
    with pytest.raises(ms.UnsignedArtifactError, match=r"there is no 'memory://.*\.sig' beside it"):
        ms.load(url, signature="require", trusted_keys=[keys.public])
