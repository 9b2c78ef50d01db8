"""Fixtures of the signing tests: key pairs from ``keygen``, small artifacts in both forms, a CA
chain for certificate mode, and the real ``model_signing`` tool (CLI as a subprocess, and its API)."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import modelsafe as ms


@dataclass
class Keys:
    """A key pair written by ``modelsafe.signing.keygen``."""

    private: Path
    public: Path
    fingerprint: str


def make_keys(directory: Path, **kwargs: object) -> Keys:
    from modelsafe.signing import keygen

    return Keys(*keygen(directory, **kwargs))


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return make_keys(tmp_path / "keys")


@pytest.fixture
def other_keys(tmp_path: Path) -> Keys:
    return make_keys(tmp_path / "other-keys")


@pytest.fixture(scope="session")
def small_model():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    return LogisticRegression().fit(X, (X[:, 0] > 0).astype(int)), X


def save_small(small_model, path: Path, **kwargs: object) -> Path:
    model, X = small_model
    ms.save(model, path, sample=X[:5], **kwargs)
    return path


@pytest.fixture(params=["file", "folder"])
def artifact(request, tmp_path: Path, small_model) -> Path:
    """A small scikit-learn artifact, in each form."""
    name = "model.msafe" if request.param == "file" else "model"
    return save_small(small_model, tmp_path / name)


def sig_of(path: Path) -> Path:
    return path.with_name(path.name + ".sig")


def model_signing(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The installed model_signing command line (``python -m model_signing``)."""
    return subprocess.run([sys.executable, "-m", "model_signing", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


@dataclass
class Chain:
    """root (self-signed CA, P-384) -> intermediate CA -> leaf (P-256, digitalSignature), as PEM files."""

    root: Path
    intermediate: Path
    leaf: Path
    leaf_key: Path
    leaf_fingerprint: str


def make_chain(directory: Path, *, leaf_usage: str = "digitalSignature") -> Chain:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from modelsafe.signing.keys import fingerprint

    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    def certificate(subject: str, key, issuer: str, issuer_key, ca: bool, usage: x509.KeyUsage):
        builder = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now).not_valid_after(now + dt.timedelta(days=30))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
                   .add_extension(usage, critical=True))
        return builder.sign(issuer_key, hashes.SHA384() if ca else hashes.SHA256())

    def usage(**on: bool) -> x509.KeyUsage:
        fields = dict(digital_signature=False, content_commitment=False, key_encipherment=False,
                      data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                      encipher_only=False, decipher_only=False)
        return x509.KeyUsage(**{**fields, **on})

    root_key, inter_key, leaf_key = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(
        ec.SECP384R1()), ec.generate_private_key(ec.SECP256R1())
    ca_usage = usage(key_cert_sign=True, crl_sign=True)
    root = certificate("modelsafe test root", root_key, "modelsafe test root", root_key, True, ca_usage)
    inter = certificate("modelsafe test intermediate", inter_key, "modelsafe test root", root_key, True, ca_usage)
    leaf_usage_ext = usage(digital_signature=True) if leaf_usage == "digitalSignature" else usage(key_agreement=True)
    leaf = certificate("model publisher", leaf_key, "modelsafe test intermediate", inter_key, False, leaf_usage_ext)
    paths = {}
    for label, cert in (("root", root), ("intermediate", inter), ("leaf", leaf)):
        paths[label] = directory / f"{label}.crt.pem"
        paths[label].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path = directory / "leaf.key.pem"
    key_path.write_bytes(leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
    return Chain(paths["root"], paths["intermediate"], paths["leaf"], key_path, fingerprint(leaf_key.public_key()))


class Kit:
    """The helpers above, for tests (conftest modules are not importable under --import-mode=importlib)."""

    Keys = Keys
    make_keys = staticmethod(make_keys)
    sig_of = staticmethod(sig_of)
    model_signing = staticmethod(model_signing)
    make_chain = staticmethod(make_chain)

    def __init__(self, small_model) -> None:
        self.small_model = small_model

    def save(self, path: Path, **kwargs: object) -> Path:
        return save_small(self.small_model, path, **kwargs)


@pytest.fixture
def kit(small_model) -> Kit:
    return Kit(small_model)
