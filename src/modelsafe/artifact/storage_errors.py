"""What a remote store's failure means, as a :class:`~modelsafe.errors.ModelsafeError`.

fsspec stores raise ``OSError`` subclasses (s3fs maps S3's error codes onto them) and the
errors of their HTTP stacks (botocore, aiohttp). :func:`storage_error` turns one into an
error with what happened, why it matters and how to fix it, carrying ``path`` (the URL),
``reason`` (one of :data:`REASONS`) and ``cause`` (the store's own message). Reading
failures are :class:`~modelsafe.errors.FormatError` (the artifact could not be read), an
object that changed while being read is an :class:`~modelsafe.errors.IntegrityError`, and
writing failures are :class:`~modelsafe.errors.SaveError`.

Transient errors were already retried by the store's client (s3fs's ``retries``, with
backoff) before they reach this module.
"""

from __future__ import annotations

import errno
from typing import Iterator

from modelsafe.errors import FormatError, IntegrityError, ModelsafeError, SaveError

__all__ = ["storage_error", "changed_error", "REASONS"]

REASONS = ("no-credentials", "no-bucket", "not-found", "access-denied", "connection", "changed", "exists", "store")

_CREDENTIALS = {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError",
                "NoAuthTokenError", "DefaultCredentialsError", "ClientAuthenticationError"}
_CONNECTION = {"EndpointConnectionError", "ConnectionClosedError", "ClientPayloadError", "ServerDisconnectedError",
               "ClientConnectorError", "ClientOSError", "ClientConnectionError", "ReadTimeoutError",
               "ConnectTimeoutError", "ResponseStreamingError", "IncompleteRead", "IncompleteReadError",
               "ProtocolError", "ServerTimeoutError", "ContentLengthError", "TransferEncodingError"}
_CHANGED = {"FileExpired", "PreconditionFailed"}

_FIX = {
    "no-credentials": "Configure credentials the store's usual way (for S3: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                      "~/.aws/credentials, an instance role), or pass storage_options={'key': ..., 'secret': ...} "
                      "(CLI: --storage-option key=...). Use storage_options={'anon': True} for a public bucket.",
    "no-bucket": "Check the bucket name in the URL and the endpoint (storage_options={'endpoint_url': ...}), "
                 "or create the bucket first.",
    "not-found": "Check the URL: list the prefix with your store's tools to see what is there.",
    "access-denied": "Check that these credentials may read (and, to save, write) this bucket and prefix; "
                     "the store's policy or the key's permissions refused it.",
    "connection": "Check that the endpoint is reachable and try again; the store's client already retried. For "
                  "a slow or flaky store, give it more time: storage_options={'retries': N, 'config_kwargs': "
                  "{'read_timeout': SECONDS, 'connect_timeout': SECONDS}} for S3 (defaults: 2 attempts, 15 s, 5 s).",
    "changed": "Another writer replaced the object meanwhile. Try again once the writer has finished.",
    "exists": "Pass overwrite=True to replace it, or choose a new path.",
    "store": "Check the URL, the storage options and the store's status.",
}


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]


def classify(exc: BaseException) -> str:
    """One of :data:`REASONS` for a store's exception (its cause chain is searched)."""
    for link in _chain(exc):
        names = {cls.__name__ for cls in type(link).__mro__}
        text = str(link)
        if names & _CREDENTIALS or "Unable to locate credentials" in text:
            return "no-credentials"
        if names & _CHANGED or "PreconditionFailed" in text or "pre-conditions" in text:
            return "changed"
        if "NoSuchBucket" in text or "bucket does not exist" in text.lower():
            return "no-bucket"
        if isinstance(link, PermissionError) or "AccessDenied" in text or "InvalidAccessKeyId" in text \
                or "SignatureDoesNotMatch" in text or "Forbidden" in text:
            return "access-denied"
        if names & _CONNECTION or isinstance(link, (ConnectionError, TimeoutError)):
            return "connection"
        if isinstance(link, FileExistsError):
            return "exists"
        if isinstance(link, FileNotFoundError) or getattr(link, "errno", None) == errno.ENOENT:
            return "not-found"
    return "store"


def _what(reason: str) -> str:
    return {
        "no-credentials": "no credentials for the store were found",
        "no-bucket": "the bucket does not exist",
        "not-found": "there is no object at that URL",
        "access-denied": "the store denied access",
        "connection": "the connection to the store failed or dropped",
        "changed": "the object changed while it was being read",
        "exists": "an object already exists there",
        "store": "the store reported an error",
    }[reason]


def storage_error(exc: BaseException, url: str, *, writing: bool = False, detail: str = "") -> ModelsafeError:
    """The ModelsafeError for a store's failure while reading (or ``writing``) ``url``."""
    if isinstance(exc, ModelsafeError):
        return exc
    reason = classify(exc)
    cause = f"{type(exc).__name__}: {exc}"
    if reason == "changed" and not writing:
        return changed_error(url, cause=cause)
    doing = "save to" if writing else "read"
    why = ("Nothing was left at the target: an artifact appears only once it is complete." if writing else
           "Nothing from the artifact was used: a model is loaded only from bytes that were read whole and checked.")
    facts = {"path": url, "reason": reason, "cause": cause}
    message = f"Cannot {doing} {url!r}: {_what(reason)} ({cause}){detail}. {why} {_FIX[reason]}"
    return SaveError(message, **facts) if writing else FormatError(message, **facts)


def changed_error(url: str, *, expected: str | None = None, actual: str | None = None,
                  cause: str = "") -> IntegrityError:
    """The object at ``url`` is not the version that was opened (its ETag or version changed)."""
    seen = f" (ETag {expected} when opened, {actual} now)" if expected or actual else ""
    because = f" ({cause})" if cause else ""
    return IntegrityError(
        f"{url!r} changed while it was being read{seen}{because}: its bytes would mix two versions of the "
        "object, so modelsafe refused them and used nothing. " + _FIX["changed"],
        path=url, member=None, expected=expected, actual=actual, reason="changed")
