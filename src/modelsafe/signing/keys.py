"""Keys and certificates: generate a pair, read a private key, read the keys a user trusts.

OMS signs with ECDSA (P-256 with SHA-256, P-384 with SHA-384, P-521 with SHA-512), in key
mode and in certificate mode. A key's **fingerprint** is the SHA-256 of its PEM
SubjectPublicKeyInfo: the ``publicKey.hint`` OMS bundles carry, and what ``sha256sum
public.pem`` prints for a PEM file written by modelsafe, ``openssl`` or ``cryptography``.

No private key, password or key material is ever put in a message: errors name the file.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from modelsafe.errors import SigningError

if TYPE_CHECKING:  # X.509 is imported only in certificate mode (it is most of cryptography's import time)
    from cryptography import x509

__all__ = ["CURVES", "PRIVATE_NAME", "PUBLIC_NAME", "TrustedKeys", "fingerprint", "hash_for", "keygen",
           "load_private_key", "load_certificates", "load_trusted"]

CURVES: dict[str, Callable[[], ec.EllipticCurve]] = {"P-256": ec.SECP256R1, "P-384": ec.SECP384R1,
                                                     "P-521": ec.SECP521R1}
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {"secp256r1": hashes.SHA256, "secp384r1": hashes.SHA384,
                                                          "secp521r1": hashes.SHA512}
#: The files ``keygen`` writes.
PRIVATE_NAME, PUBLIC_NAME = "private.pem", "public.pem"
#: Files of a trusted-keys folder that are read.
_KEY_SUFFIXES = (".pem", ".pub", ".crt", ".cer")


def fingerprint(public_key: Any) -> str:
    """SHA-256 (hex) of the key's PEM SubjectPublicKeyInfo: the OMS key hint."""
    pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(pem).hexdigest()


def hash_for(public_key: Any) -> hashes.HashAlgorithm | None:
    """The ECDSA hash OMS pairs with the key's curve, or None for a key OMS cannot use."""
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        return None
    algorithm = _HASHES.get(public_key.curve.name)
    return algorithm() if algorithm else None


def _unusable(what: str, kind: str, **facts: Any) -> SigningError:
    return SigningError(
        f"{what} is a {kind} key, and OpenSSF Model Signing signs only with ECDSA keys on P-256, P-384 or P-521, "
        "so no OMS verifier could check the signature. Create a key pair with `modelsafe keygen DIR`.",
        reason="unsupported key", **facts)


def load_private_key(key: Any, password: str | bytes | None = None) -> ec.EllipticCurvePrivateKey:
    """The signing key from a PEM file path, PEM bytes or a ``cryptography`` EC private key."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        private = key
        where = "the private key given"
    else:
        where = f"the key file {os.fspath(key)!r}" if isinstance(key, (str, os.PathLike)) else "the key given"
        data = _read_pem(key, where)
        secret = password.encode("utf-8") if isinstance(password, str) else password
        try:
            loaded = serialization.load_pem_private_key(data, password=secret)
        except TypeError:
            if secret is None:
                raise SigningError(
                    f"{where} is encrypted and no password was given, so it cannot be used to sign. Pass "
                    "password= (the CLI reads it from --password-file, MODELSAFE_KEY_PASSWORD or a prompt).",
                    reason="password required", path=_path(key)) from None
            raise SigningError(f"{where} is not encrypted, but a password was given: check that this is the key you "
                               "meant, and sign without the password.", reason="not encrypted",
                               path=_path(key)) from None
        except ValueError:
            hint = "the password is wrong, or the file " if secret is not None else "the file "
            raise SigningError(
                f"{where} cannot be read as a PEM private key: {hint}is damaged or is not a private key. "
                "Check the password and the file (a modelsafe key pair comes from `modelsafe keygen DIR`).",
                reason="wrong password" if secret is not None else "not a private key", path=_path(key)) from None
        except Exception as exc:  # noqa: BLE001 - cryptography raises its own types for odd keys
            raise SigningError(f"{where} cannot be used: {type(exc).__name__}. Use a PEM ECDSA private key.",
                               reason="unreadable key", path=_path(key)) from None
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise _unusable(where, type(loaded).__name__.removeprefix("_").replace("PrivateKey", ""), path=_path(key))
        private = loaded
    if hash_for(private.public_key()) is None:
        raise _unusable(where, private.curve.name, path=_path(key))
    return private


def _path(source: Any) -> str | None:
    return os.fspath(source) if isinstance(source, (str, os.PathLike)) else None


def _read_pem(source: Any, where: str) -> bytes:
    if isinstance(source, (bytes, bytearray)):
        return bytes(source)
    if not isinstance(source, (str, os.PathLike)):
        raise SigningError(f"{where} is a {type(source).__name__}; expected a path to a PEM file, PEM bytes or a "
                           "cryptography key object.", reason="unreadable key", path=None)
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        raise SigningError(f"Cannot read {where}: {exc.strerror or exc}. Check the path and its permissions.",
                           reason="unreadable key", path=os.fspath(source)) from None


def load_certificates(sources: Iterable[Any]) -> list[x509.Certificate]:
    """Certificates from PEM files (each may hold several, in order), PEM bytes or certificate objects."""
    found: list[x509.Certificate] = []
    for source in sources:
        if _is_certificate(source):
            found.append(source)
            continue
        where = f"the certificate file {os.fspath(source)!r}" if isinstance(source, (str, os.PathLike)) else \
            "the certificate given"
        from cryptography import x509

        try:
            found.extend(x509.load_pem_x509_certificates(_read_pem(source, where)))
        except ValueError:
            raise SigningError(f"{where} holds no PEM certificate. Pass the signing certificate first, then its "
                               "intermediates, as PEM files.", reason="not a certificate", path=_path(source)) from None
    return found


def _is_certificate(value: Any) -> bool:
    """Whether ``value`` is an X.509 certificate object (none can exist before cryptography.x509 is imported)."""
    x509 = sys.modules.get("cryptography.x509")
    return x509 is not None and isinstance(value, x509.Certificate)


@dataclass(frozen=True)
class TrustedKeys:
    """The public keys and certificates a caller trusts, each with a label (its file) for messages."""

    keys: tuple[tuple[Any, str], ...] = ()
    certificates: tuple[tuple[x509.Certificate, str], ...] = ()

    def fingerprints(self) -> list[str]:
        return [fingerprint(key) for key, _ in self.keys]


def load_trusted(sources: Iterable[Any]) -> TrustedKeys:
    """Read trusted public keys and root certificates: PEM files, folders of them (private keys
    there are skipped), PEM bytes, or objects. A private key named as a trusted key is refused."""
    keys: list[tuple[Any, str]] = []
    certificates: list[tuple[x509.Certificate, str]] = []
    for source in sources:
        if _is_certificate(source):
            certificates.append((source, source.subject.rfc4514_string()))
        elif isinstance(source, ec.EllipticCurvePublicKey):
            keys.append((source, f"key {fingerprint(source)[:16]}"))
        elif isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
            for path in sorted(Path(source).iterdir()):
                if path.suffix.lower() in _KEY_SUFFIXES and path.is_file():
                    data = _read_pem(path, f"the trusted key file {str(path)!r}")
                    if b"PRIVATE KEY-----" not in data:  # a keygen folder also holds private.pem: not trust
                        _add_pem(data, str(path), keys, certificates)
        else:
            label = os.fspath(source) if isinstance(source, (str, os.PathLike)) else "PEM bytes"
            _add_pem(_read_pem(source, f"the trusted key {label!r}"), label, keys, certificates)
    return TrustedKeys(tuple(keys), tuple(certificates))


def _add_pem(data: bytes, label: str, keys: list[tuple[Any, str]],
             certificates: list[tuple[x509.Certificate, str]]) -> None:
    if b"PRIVATE KEY-----" in data:
        raise SigningError(
            f"The trusted key {label!r} is a private key. Trust is given with the public key: pass public.pem "
            "(and keep the private key where only the signer can read it).", reason="private key as trusted key",
            path=label)
    if b"-----BEGIN CERTIFICATE-----" in data:
        from cryptography import x509

        certificates.extend((cert, label) for cert in x509.load_pem_x509_certificates(data))
        return
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise SigningError(f"The trusted key {label!r} is not a PEM public key or certificate. Pass the signer's "
                           "public.pem (from `modelsafe keygen`) or a root certificate.", reason="not a public key",
                           path=label) from None
    if hash_for(key) is None:
        raise _unusable(f"The trusted key {label!r}", type(key).__name__.removeprefix("_").replace("PublicKey", ""),
                        path=label)
    keys.append((key, label))


def keygen(directory: str | os.PathLike[str], *, password: str | bytes | None = None,
           curve: str = "P-256") -> tuple[Path, Path, str]:
    """Write a new ECDSA key pair to ``directory``: ``private.pem`` (mode 0600, encrypted when a
    password is given) and ``public.pem``. Refuses to replace an existing file.

    Returns ``(private path, public path, fingerprint)``.
    """
    if curve not in CURVES:
        raise SigningError(f"Unknown curve {curve!r}: OMS signs with {', '.join(CURVES)}. Choose one of those.",
                           reason="unsupported key", path=None)
    folder = Path(directory)
    private_path, public_path = folder / PRIVATE_NAME, folder / PUBLIC_NAME
    for path in (private_path, public_path):
        if path.exists() or path.is_symlink():
            raise SigningError(
                f"{str(path)!r} already exists: keygen never replaces a key, since a replaced private key cannot "
                "be recovered and every signature made with it could no longer be checked against a new public "
                "key. Choose another folder, or move the old pair away first.", reason="exists", path=str(path))
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    private = ec.generate_private_key(CURVES[curve]())
    secret = password.encode("utf-8") if isinstance(password, str) else password
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(secret) if secret else serialization.NoEncryption())
    _write_new(private_path, private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   encryption), 0o600)
    public = private.public_key()
    _write_new(public_path, public.public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo), 0o644)
    return private_path, public_path, fingerprint(public)


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` from the start (no window where others could read it); never replace."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    except FileExistsError:
        raise SigningError(f"{str(path)!r} already exists: keygen never replaces a key. Choose another folder.",
                           reason="exists", path=str(path)) from None
    try:
        os.fchmod(fd, mode)  # the umask cannot loosen it, and cannot tighten the public key unreadable
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
