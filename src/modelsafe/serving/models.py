"""The models a server holds: named, loaded once with every check of ``ms.load``, verified.

A model's name is its file stem (``churn.msafe`` -> ``churn``, a folder's own name, the
last part of a URL) or the ``NAME`` of ``NAME=PATH``.
"""

from __future__ import annotations

import logging
import os
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, Callable, Mapping

from modelsafe.serving.inputs import InputSpec

if TYPE_CHECKING:
    from modelsafe._bundle import Bundle
    from modelsafe.checks.verify import VerifyReport

__all__ = ["ServedModel", "METHODS", "name_artifacts", "load_model"]

log = logging.getLogger("modelsafe.serving")
#: The methods a request may ask for (``params: {"method": ...}``), where the model has them.
METHODS = ("predict", "predict_proba", "decision_function", "transform")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


@dataclass
class ServedModel:
    """One loaded, verified model and what the server shows about it."""

    name: str
    path: str
    bundle: "Bundle"
    verification: "VerifyReport"
    load_warnings: tuple[str, ...] = ()
    load_seconds: float = 0.0
    spec: InputSpec = field(init=False)
    guard: Callable[[Any], Any] = field(init=False)
    methods: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        schema = self.bundle.manifest.schema
        self.spec = InputSpec(schema)
        if schema:
            from modelsafe.checks.schema import Guard

            self.guard = Guard(dict(schema)).check
        else:
            self.guard = _unchecked
        self.methods = tuple(m for m in METHODS if m == "predict" or hasattr(self.bundle, m))

    @property
    def manifest(self) -> Any:
        return self.bundle.manifest

    def method(self, name: str) -> Callable[..., Any]:
        """The bundle's guarded method ``name`` (called with ``check=False``: the server guards first)."""
        return getattr(self.bundle, name)

    def summary(self) -> dict[str, Any]:
        component = self.manifest.components["model"]
        return {"name": self.name, "flavor": self.manifest.flavor, "type": component.type_name,
                "ready": self.verification.ok, "methods": list(self.methods),
                "input_kind": self.spec.kind, "created": self.manifest.created}

    def details(self) -> dict[str, Any]:
        """The manifest summary, environment report, verification result and input schema."""
        manifest = self.manifest.to_dict()
        env = self.bundle.env_report
        return {
            **self.summary(),
            "artifact": PurePosixPath(str(self.path)).name,
            "modelsafe_version": manifest["modelsafe_version"],
            "components": {k: {key: c[key] for key in ("flavor", "type", "members")}
                           for k, c in manifest["components"].items()},
            "members": len(manifest["members"]),
            "environment": None if env is None else env.to_dict(),
            "verification": self.verification.to_dict(),
            "schema": manifest["schema"],
            "outputs": {name: {"dtype": o.get("dtype"), "shape": o.get("shape")}
                        for name, o in ((self.manifest.verification or {}).get("outputs") or {}).items()},
            "metadata": manifest["metadata"],
            "load_warnings": list(self.load_warnings),
            "load_seconds": round(self.load_seconds, 4),
        }

    def example_rows(self, rows: int = 3) -> Any:
        """The first rows of the verification sample (what the card's form starts with), or None."""
        try:
            inputs = self.bundle.sample_inputs()
        except Exception:  # noqa: BLE001 - an example is a convenience, never a reason to fail
            return None
        if inputs is None:
            return None
        if hasattr(inputs, "iloc"):
            return inputs.iloc[:rows]
        if isinstance(inputs, (list, tuple)) and not hasattr(inputs, "shape") and self.spec.kind == "texts":
            return list(inputs[:rows])
        shape = getattr(inputs, "shape", None)
        return inputs[:rows] if shape is not None and len(shape) else None


def _unchecked(x: Any) -> Any:
    return x


def name_artifacts(artifacts: Any) -> list[tuple[str, str]]:
    """``[(name, path)]`` from one path, several, ``"NAME=PATH"`` strings, or a ``{name: path}`` mapping."""
    if isinstance(artifacts, Mapping):
        pairs = [(str(k), os.fspath(v)) for k, v in artifacts.items()]
    else:
        items = [artifacts] if isinstance(artifacts, (str, os.PathLike)) else list(artifacts)
        pairs = [_split(os.fspath(item)) for item in items]
    if not pairs:
        raise ValueError("Invalid `artifacts`: expected at least one artifact path. Received: none.")
    names = [name for name, _ in pairs]
    for name in names:
        if not _NAME.fullmatch(name):
            raise ValueError(f"Invalid model name {name!r}: expected letters, digits, '_', '.' or '-' (a URL path "
                             f"segment), starting with a letter or digit. Name it with NAME=PATH. Received: {name!r}")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"Invalid `artifacts`: the model name(s) {dupes} are given twice, so requests could not "
                         "say which model they mean. Name them apart with NAME=PATH "
                         "(e.g. churn_v2=models/churn.msafe).")
    return pairs


def _split(item: str) -> tuple[str, str]:
    name, sep, path = item.partition("=")
    if sep and "/" not in name and ":" not in name and name:
        return name, path
    stem = PurePosixPath(item.rstrip("/").split("?")[0]).name
    return stem.removesuffix(".msafe") or stem, item


def load_model(name: str, path: str, **load_kwargs: Any) -> ServedModel:
    """Load ``path`` with every check (integrity, audit, environment, verification) or raise.

    Warnings of the load (an environment that differs, changed local code) are logged and
    kept for the model card; verification runs once, and a failure raises VerificationError.
    """
    import modelsafe as ms

    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        bundle = ms.load(path, verify=False, **load_kwargs)
    report = bundle.verify()
    if not report.ok:
        bundle.close()
        report.raise_if_failed()
    notes = tuple(dict.fromkeys(str(w.message) for w in seen))
    for note in notes:
        log.warning("model %s: %s", name, note)
    served = ServedModel(name, path, bundle, report, notes, time.perf_counter() - start)
    log.info("model %s loaded from %s and verified (%s) in %.3f s", name, path,
             "no sample" if report.skipped else f"{report.rows} sample row(s)", served.load_seconds)
    return served
