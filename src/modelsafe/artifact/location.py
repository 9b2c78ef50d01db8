"""Where an artifact lives: a local path, or an fsspec URL on a remote store.

Every verb's path argument is either a local path or a URL (``s3://bucket/model.msafe``,
``gs://``, ``az://``, ``memory://``, ``file://``, read-only ``http(s)://``). A local path
(and a ``file://`` URL, which names one) never touches fsspec: it takes the local code path
unchanged. A URL is opened with fsspec, imported only then; credentials and endpoints
come from ``storage_options`` or the store's usual configuration (environment variables,
config files), never from the artifact.

A scheme whose package is missing raises :class:`~modelsafe.errors.FlavorNotInstalledError`
naming the extra to install, the way a framework's missing flavor does.
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import unquote, urlsplit

from modelsafe.errors import FlavorNotInstalledError, FormatError

__all__ = ["RemotePath", "is_url", "resolve", "REMOTE_EXTRA"]

REMOTE_EXTRA = "modelsafe[remote]"
#: Attempts s3fs makes per S3 request (its retry loop, with backoff), unless ``storage_options={"retries": N}``.
#: s3fs's loop runs twice nested for a ranged read, and botocore's own retries (off unless configured) would
#: multiply it again: with the default read timeout of 15 s, a store gone silent is reported within about a
#: minute instead of after tens of minutes.
S3_RETRIES = 2
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
#: The package each store needs, beyond fsspec itself (installed by modelsafe[remote] for s3).
_PACKAGES = {
    "s3": "s3fs", "s3a": "s3fs",
    "gs": "gcsfs", "gcs": "gcsfs",
    "az": "adlfs", "abfs": "adlfs", "abfss": "adlfs", "adl": "adlfs",
    "http": "aiohttp", "https": "aiohttp",
}
#: Schemes modelsafe reads from but never writes to.
READ_ONLY = frozenset({"http", "https"})


@dataclass(frozen=True)
class RemotePath:
    """An object or prefix on a remote store: the fsspec filesystem, its path there, and the URL."""

    fs: Any
    path: str
    url: str
    scheme: str
    storage_options: Mapping[str, Any]

    def __str__(self) -> str:
        return self.url

    def __fspath__(self) -> str:  # messages and os.fspath() show the URL, as the user wrote it
        return self.url

    @property
    def name(self) -> str:
        return posixpath.basename(self.path.rstrip("/"))

    @property
    def suffix(self) -> str:
        return posixpath.splitext(self.name)[1]

    def join(self, relname: str) -> "RemotePath":
        """The object ``relname`` under this prefix."""
        return RemotePath(self.fs, f"{self.path.rstrip('/')}/{relname}", f"{self.url.rstrip('/')}/{relname}",
                          self.scheme, self.storage_options)

    def __truediv__(self, relname: str) -> "RemotePath":  # as pathlib's: directory / "name"
        return self.join(relname)

    def exists(self) -> bool:
        """True when an object or a prefix of this name exists (one request to the store)."""
        from modelsafe.artifact.storage_errors import storage_error

        try:
            return bool(self.fs.exists(self.path))
        except Exception as exc:
            raise storage_error(exc, self.url) from exc

    def sibling(self, name: str) -> "RemotePath":
        """The object ``name`` beside this one (same parent prefix)."""
        parent, url_parent = posixpath.dirname(self.path.rstrip("/")), self.url.rstrip("/").rsplit("/", 1)[0]
        return RemotePath(self.fs, f"{parent}/{name}", f"{url_parent}/{name}", self.scheme, self.storage_options)

    @property
    def read_only(self) -> bool:
        return self.scheme in READ_ONLY

    @property
    def is_s3(self) -> bool:
        return type(self.fs).__name__ == "S3FileSystem"


def scheme_of(path: Any) -> str | None:
    """The URL scheme of ``path`` (lower case), or None for a local path."""
    if isinstance(path, RemotePath):
        return path.scheme
    if not isinstance(path, str):
        return None
    match = _SCHEME.match(path)
    return match.group(1).lower() if match else None


def is_url(path: Any) -> bool:
    """True when ``path`` names a remote object (a URL other than ``file://``)."""
    scheme = scheme_of(path)
    return scheme is not None and scheme != "file"


def resolve(path: Any, storage_options: Mapping[str, Any] | None = None) -> Path | RemotePath:
    """A local :class:`~pathlib.Path`, or a :class:`RemotePath` for a URL (fsspec imported only then).

    ``storage_options`` go to the store's filesystem (``key``, ``secret``, ``endpoint_url``,
    ``client_kwargs``...); they are not used for a local path.
    """
    if isinstance(path, RemotePath):
        return path
    scheme = scheme_of(path)
    if scheme is None:
        return Path(path)
    if scheme == "file":
        return Path(unquote(urlsplit(path).path))
    return _remote(path, scheme, dict(storage_options or {}))


def _remote(url: str, scheme: str, options: dict[str, Any]) -> RemotePath:
    package = _PACKAGES.get(scheme)
    try:
        import fsspec.core
    except ImportError as exc:
        raise _missing(url, scheme, "fsspec") from exc
    retries = _bounded_retries(options) if package == "s3fs" else None
    try:
        fs, inner = fsspec.core.url_to_fs(url, **options)
        if retries is not None:
            fs.retries = retries
    except ImportError as exc:
        raise _missing(url, scheme, package or getattr(exc, "name", None) or "fsspec") from exc
    except ValueError as exc:
        if "protocol" in str(exc).lower():
            raise FormatError(
                f"Cannot open {url!r}: fsspec knows no store for the scheme {scheme!r} ({exc}). modelsafe reads "
                "local paths and fsspec URLs (s3://, gs://, az://, memory://, file://, http(s)://). Check the "
                "URL's scheme, or install the fsspec package that provides it.",
                path=url, scheme=scheme) from exc
        raise FormatError(f"Cannot open {url!r}: {exc}. Check the URL and the storage options.",
                          path=url, scheme=scheme) from exc
    except TypeError as exc:  # an option the store does not take
        raise FormatError(
            f"Cannot open {url!r}: the {scheme}:// store refused the storage options "
            f"{sorted(options)} ({exc}). Pass only options its filesystem accepts (for s3: key, secret, token, "
            "endpoint_url, client_kwargs, config_kwargs...).", path=url, scheme=scheme) from exc
    return RemotePath(fs, inner, url, scheme, options)


def _bounded_retries(options: dict[str, Any]) -> int:
    """How often s3fs tries each request (``options["retries"]``, taken out: s3fs reads it from the filesystem
    instance, not its arguments). botocore's own retries are turned off unless the user configured them (the
    storage options' ``config_kwargs``, ``AWS_MAX_ATTEMPTS`` or the AWS config file): s3fs retries already."""
    retries = options.pop("retries", None)
    config = dict(options.get("config_kwargs") or {})
    if "retries" not in config and _aws_max_attempts() is None:
        options["config_kwargs"] = {**config, "retries": {"max_attempts": 1}}
    if retries is None:
        return S3_RETRIES
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 1:
        raise FormatError(f"Invalid storage option `retries`: expected an integer of at least 1 (attempts per "
                          f"request). Received: retries={retries!r}", option="retries", value=retries)
    return retries


def _aws_max_attempts() -> Any:
    """``max_attempts`` as the environment or the AWS config file set it, or None."""
    try:
        import botocore.session
    except ImportError:
        return None
    return botocore.session.Session().get_config_variable("max_attempts")


def _missing(url: str, scheme: str, package: str) -> FlavorNotInstalledError:
    extra = REMOTE_EXTRA if package in ("fsspec", "s3fs") else f"{REMOTE_EXTRA} {package}"
    hint = f"pip install '{extra}'" if " " not in extra else f"pip install '{REMOTE_EXTRA}' {package}"
    return FlavorNotInstalledError(
        f"Cannot open {url!r}: {scheme}:// URLs need the package {package!r}, which is not installed here. "
        f"Nothing was read or written. Install it: {hint}.",
        flavor=None, hint=hint, package=package, scheme=scheme, path=url)


def local_or_url(path: Any) -> str:
    """``path`` as a string for messages: the URL, or the local path."""
    return path.url if isinstance(path, RemotePath) else os.fspath(path)
