"""Signatures and provenance in the OpenSSF Model Signing (OMS) format.

An artifact at ``P`` (a ``.msafe`` file, a folder or a URL) is signed by a Sigstore bundle
at ``P.sig``: a DSSE envelope over an in-toto statement that lists every member with the
SHA-256 its manifest records, and ``modelsafe.json`` itself. ``model_signing verify`` accepts
it (on the folder form), and modelsafe accepts what ``model_signing sign`` writes. Signing
and checking re-hash nothing; ``load`` checks the signature before it reads any member.

* :mod:`.statement`, :mod:`.envelope`: the OMS layouts (standard library only);
* :mod:`.keys`, :mod:`.certificates`, :mod:`.bundle`: keys, chains, signing and verifying
  (``cryptography``, the ``modelsafe[signing]`` extra);
* :mod:`.check`: a signature against an open artifact; :mod:`.gate`: the ``load`` step;
* :mod:`.location`: ``P.sig`` and the trusted keys; :mod:`.provenance`; :mod:`.report`;
* :mod:`.api`: ``ms.sign`` and ``ms.verify_signature``.

Importing this package imports no cryptography: the modules that need it are imported on use.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["sign", "verify_signature", "keygen", "SignatureReport"]

_LAZY = {"sign": "modelsafe.signing.api", "verify_signature": "modelsafe.signing.api",
         "keygen": "modelsafe.signing.keys", "SignatureReport": "modelsafe.signing.report"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'modelsafe.signing' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
