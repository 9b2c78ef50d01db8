"""``Bundle``: a loaded artifact, its model and preprocessing, and what was recorded with them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelsafe.artifact.manifest import Manifest
from modelsafe.artifact.reader import ArtifactReader
from modelsafe.flavors import get_flavor
from modelsafe.flavors._base import ComponentSource

if TYPE_CHECKING:
    from modelsafe.checks.environment import EnvReport
    from modelsafe.checks.verify import Sample, VerifyReport


class Bundle:
    """A loaded artifact: the model, its preprocessing, and everything recorded with it.

    Examples
    --------
    >>> import modelsafe as ms
    >>> bundle = ms.load("/tmp/doc-model.msafe")
    >>> bundle.predict(bundle.sample_inputs()).shape
    (5,)
    """

    def __init__(self, path: Path, manifest: Manifest, model: Any, preprocess: Any,
                 reader: ArtifactReader, env_report: "EnvReport | None", code_changes: tuple[str, ...] = ()) -> None:
        self.path = path
        #: Local modules used at load whose source differs from the copy bundled at save.
        self.code_changes = code_changes
        self.manifest = manifest
        self.model = model
        self.preprocess = preprocess
        self.env_report = env_report
        self._reader = reader
        self._guard: Any = None
        self._model_flavor = get_flavor(manifest.components["model"].flavor)
        self._pre_flavor = (get_flavor(manifest.components["preprocess"].flavor)
                            if "preprocess" in manifest.components else None)

    def __repr__(self) -> str:
        return f"<modelsafe.Bundle {str(self.path)!r} flavor={self.manifest.flavor!r}>"

    def _prepare(self, x: Any) -> Any:
        if self._pre_flavor is not None:
            return self._pre_flavor.transform(self.preprocess, x)
        return x

    def predict(self, x: Any, *, check: bool = True) -> Any:
        """Preprocess (if any) -> model -> outputs.

        ``check`` (default) guards the raw input against the schema recorded at save:
        columns realigned by name, missing columns and lossy dtype changes refused with
        SchemaError, extra columns and values far outside the recorded ranges warned about.
        Pass ``check=False`` to skip it in hot loops.
        """
        if check and self.manifest.schema:
            if self._guard is None:
                from modelsafe.checks.schema import Guard

                self._guard = Guard(dict(self.manifest.schema))
            x = self._guard.check(x)
        return self._model_flavor.predict(self.model, self._prepare(x))

    def outputs(self, x: Any) -> dict[str, Any]:
        """Every output recorded for verification (e.g. predict and predict_proba)."""
        return self._model_flavor.outputs(self.model, self._prepare(x))

    def sample(self) -> "Sample | None":
        """The verification sample stored in the artifact, or None."""
        spec = self.manifest.verification
        if not spec:
            return None
        from modelsafe.checks.data import decode
        from modelsafe.checks.verify import Sample

        source = ComponentSource(self._reader, "sample")
        return Sample(
            inputs=decode(spec["inputs"], source.read_array),
            outputs={name: source.read_array(o["member"]) for name, o in spec["outputs"].items()},
            tolerances={name: o.get("tolerance") for name, o in spec["outputs"].items()},
            rows=int(spec.get("rows", 0)),
        )

    def sample_inputs(self) -> Any:
        sample = self.sample()
        return None if sample is None else sample.inputs

    def verify(self) -> "VerifyReport":
        """Re-run the stored sample and compare with the recorded outputs (never raises)."""
        from modelsafe.checks.verify import VerifyReport, replay

        sample = self.sample()
        if sample is None:
            return VerifyReport(path=str(self.path), skipped="the artifact was saved without a sample")
        environment = self.env_report.summary() if self.env_report is not None else ""
        return replay(str(self.path), sample, self.outputs, self.code_changes, environment)

    def close(self) -> None:
        """Release the artifact file (the loaded objects do not depend on it)."""
        self._reader.close()

    def __enter__(self) -> "Bundle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        reader = getattr(self, "_reader", None)
        if reader is not None:
            reader.close()
