"""Security: the pickle opcode reader, the allowlist, and the ONE restricted unpickler.

Every load path in modelsafe that needs pickle goes through :func:`restricted_loads`;
nothing else in the package calls ``pickle.load``. Importing this package imports no
framework and not numpy.
"""

from __future__ import annotations

from modelsafe.security._allowlist import classify, is_allowed
from modelsafe.security._audit_cache import summarize_verified
from modelsafe.security._joblib import restricted_load_joblib
from modelsafe.security._opcodes import GlobalRef, PickleSummary, summarize_pickle
from modelsafe.security._streams import summarize_pickles
from modelsafe.security._unpickler import audit_pickle, restricted_loads

__all__ = ["GlobalRef", "PickleSummary", "summarize_pickle", "summarize_pickles", "audit_pickle",
           "restricted_loads", "restricted_load_joblib", "classify", "is_allowed", "summarize_verified"]
