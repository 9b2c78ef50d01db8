"""Certificate-chain mode: a chain to a trusted root is accepted; every broken chain is refused."""

from __future__ import annotations

import pytest

import modelsafe as ms


@pytest.fixture
def chain(tmp_path, kit):
    return kit.make_chain(tmp_path / "pki")


def test_chain_to_a_trusted_root(tmp_path, kit, chain):
    artifact = kit.save(tmp_path / "model.msafe")
    ms.sign(artifact, key=chain.leaf_key, certificate_chain=[chain.leaf, chain.intermediate])
    report = ms.verify_signature(artifact, trusted_keys=[chain.root])
    assert report.ok and report.mode == "certificate" and report.certificate == "CN=model publisher"
    assert report.signer == chain.leaf_fingerprint and report.trusted_by == str(chain.root)
    assert "certificate CN=model publisher" in str(report)
    ms.load(artifact, signature="require", trusted_keys=[tmp_path / "pki"]).close()  # a folder of certificates


def test_one_file_holding_the_whole_chain(tmp_path, kit, chain):
    bundle_file = tmp_path / "chain.pem"
    bundle_file.write_bytes(chain.leaf.read_bytes() + chain.intermediate.read_bytes())
    artifact = kit.save(tmp_path / "model")
    ms.sign(artifact, key=chain.leaf_key, certificate_chain=[bundle_file])
    assert ms.verify_signature(artifact, trusted_keys=[chain.root]).ok


def test_untrusted_root_and_missing_links_are_refused(tmp_path, kit, chain):
    artifact = kit.save(tmp_path / "model")
    other = kit.make_chain(tmp_path / "other-pki")
    ms.sign(artifact, key=chain.leaf_key, certificate_chain=[chain.leaf, chain.intermediate])
    with pytest.raises(ms.UntrustedSignerError, match="does not lead to a trusted root") as info:
        ms.load(artifact, signature="require", trusted_keys=[other.root])
    assert info.value.fingerprint == chain.leaf_fingerprint
    with pytest.raises(ms.UntrustedSignerError, match="no trusted root certificate"):  # as OpenSSL: no partial chain
        ms.load(artifact, signature="require", trusted_keys=[chain.intermediate])
    ms.sign(artifact, key=chain.leaf_key, certificate_chain=[chain.leaf])  # the intermediate left out
    with pytest.raises(ms.UntrustedSignerError, match="does not lead to a trusted root"):
        ms.load(artifact, signature="require", trusted_keys=[chain.root])
    # ...unless the verifier holds the intermediate itself
    ms.load(artifact, signature="require", trusted_keys=[chain.root, chain.intermediate]).close()


def test_a_key_trusted_for_key_mode_does_not_vouch_for_a_chain(tmp_path, kit, chain, keys):
    artifact = kit.save(tmp_path / "model")
    ms.sign(artifact, key=chain.leaf_key, certificate_chain=[chain.leaf, chain.intermediate])
    with pytest.raises(ms.UntrustedSignerError):
        ms.load(artifact, signature="require", trusted_keys=[keys.public])


def test_certificate_of_another_key_is_refused_at_signing(tmp_path, kit, chain, keys):
    artifact = kit.save(tmp_path / "model")
    with pytest.raises(ms.SigningError, match="is not the certificate of the signing key") as info:
        ms.sign(artifact, key=keys.private, certificate_chain=[chain.leaf])
    assert info.value.reason == "certificate" and not kit.sig_of(artifact).exists()
    with pytest.raises(ms.SigningError, match="holds no PEM certificate"):
        ms.sign(artifact, key=keys.private, certificate_chain=[keys.public])


def test_leaf_that_may_not_sign(tmp_path, kit):
    """modelsafe refuses to sign with it; model_signing signs, and both verifiers refuse the result."""
    chain = kit.make_chain(tmp_path / "pki", leaf_usage="keyAgreement")
    artifact = kit.save(tmp_path / "model")
    with pytest.raises(ms.SigningError, match="does not allow signing"):
        ms.sign(artifact, key=chain.leaf_key, certificate_chain=[chain.leaf, chain.intermediate])
    proc = kit.model_signing("sign", "certificate", "--signature", kit.sig_of(artifact), "--private_key",
                             chain.leaf_key, "--signing_certificate", chain.leaf, "--certificate_chain",
                             chain.intermediate, artifact)
    assert proc.returncode == 0, proc.stderr
    with pytest.raises(ms.UntrustedSignerError, match="does not allow signing"):
        ms.load(artifact, signature="require", trusted_keys=[chain.root])
    refused = kit.model_signing("verify", "certificate", "--signature", kit.sig_of(artifact), "--certificate_chain",
                                chain.root, artifact)
    assert refused.returncode != 0
