"""The verbs that load an artifact take the same signature options: verify, and serving's create_app."""

from __future__ import annotations

import pytest

import modelsafe as ms


def test_verify_takes_the_signature_options(artifact, keys, other_keys):
    with pytest.raises(ms.UnsignedArtifactError):
        ms.verify(artifact, signature="require", trusted_keys=[keys.public])
    ms.sign(artifact, key=keys.private)
    assert ms.verify(artifact, signature="require", trusted_keys=[keys.public]).ok
    with pytest.raises(ms.UntrustedSignerError):
        ms.verify(artifact, signature="require", trusted_keys=[other_keys.public])


def test_a_server_refuses_to_start_on_an_unsigned_or_untrusted_artifact(tmp_path, kit, keys, other_keys):
    from modelsafe.serving import create_app

    artifact = kit.save(tmp_path / "model.msafe")
    with pytest.raises(ms.UnsignedArtifactError):
        create_app([str(artifact)], signature="require", trusted_keys=[keys.public])
    ms.sign(artifact, key=other_keys.private)
    with pytest.raises(ms.UntrustedSignerError):
        create_app([str(artifact)], signature="require", trusted_keys=[keys.public])
    assert create_app([str(artifact)], signature="require", trusted_keys=[other_keys.public]) is not None
