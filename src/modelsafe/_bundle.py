"""``Bundle``: a loaded artifact, its model and preprocessing, and what was recorded with them."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from modelsafe.artifact.manifest import Manifest
from modelsafe.artifact.reader import ArtifactReader
from modelsafe.errors import MissingMethodError
from modelsafe.flavors import get_flavor
from modelsafe.flavors._base import ComponentSource, Flavor

if TYPE_CHECKING:
    from modelsafe.checks.environment import EnvReport
    from modelsafe.checks.verify import Sample, VerifyReport


class Route:
    """The path every input takes: input guard -> preprocess (if any) -> one of the model's methods.

    ``Bundle.predict`` and its other methods, the verification replay at load, and the
    reference outputs recorded at save all go through one ``Route``, so what verification
    proves holds for ``predict``.
    """

    def __init__(self, model: Any, model_flavor: Flavor, preprocess: Any, pre_flavor: Flavor | None,
                 schema: Mapping[str, Any] | None) -> None:
        self.model, self.model_flavor = model, model_flavor
        self.preprocess, self.pre_flavor = preprocess, pre_flavor
        self.schema = dict(schema) if schema else None
        self._guard: Any = None

    def inputs(self, x: Any, check: bool = True) -> Any:
        """``x`` checked against the schema (realigned), then preprocessed: what the model gets."""
        if check and self.schema:
            if self._guard is None:
                from modelsafe.checks.guard import Guard

                self._guard = Guard(self.schema)
            x = self._guard.check(x)
        if self.pre_flavor is not None:
            return self.pre_flavor.transform(self.preprocess, x)
        return x

    def call(self, method: str, x: Any, check: bool = True) -> Any:
        return self.model_flavor.call(self.model, method, self.inputs(x, check))

    def outputs(self, x: Any, check: bool = True) -> dict[str, Any]:
        """Every output recorded for verification (e.g. predict and predict_proba)."""
        return self.model_flavor.outputs(self.model, self.inputs(x, check))

    def replay(self, x: Any) -> dict[str, Any]:
        """:meth:`outputs` of the verification sample (at save and at load), inside each flavor's
        ``replay_context``: a few rows start no worker pools (joblib threads for scikit-learn,
        LightGBM's and torch's threads); the model's own settings are untouched."""
        with contextlib.ExitStack() as stack:
            stack.enter_context(self.model_flavor.replay_context(self.model))
            if self.pre_flavor is not None:
                stack.enter_context(self.pre_flavor.replay_context(self.preprocess))
            return self.outputs(x)


class _ModelMethod:
    """A guarded method of the model (``bundle.predict_proba(x)``), present only when the model has it.

    ``hasattr(bundle, "predict_proba")`` is False for a model without one, as for the model itself.
    """

    def __init__(self, summary: str) -> None:
        self.summary = summary
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        self.__doc__ = (f"{self.summary}: the input guard -> preprocess (if any) -> ``model.{name}``.\n\n"
                        f"Raises MissingMethodError (an AttributeError) when the model has no ``{name}``.")

    def __get__(self, bundle: "Bundle | None", owner: type) -> Any:
        if bundle is None:
            return self
        route = bundle._route
        if not route.model_flavor.has_method(route.model, self.name):
            kind = bundle.manifest.components["model"].type_name or type(route.model).__name__
            offers = [m for m in _METHODS if route.model_flavor.has_method(route.model, m)]
            raise MissingMethodError(
                f"The model ({kind}) has no {self.name}, so the bundle has none either: it offers "
                f"{', '.join(['predict', *offers])}. Call one of those, or save {_WHO_HAS[self.name]}.",
                method=self.name, type_name=kind, available=offers)
        name = self.name

        def method(x: Any, *, check: bool = True) -> Any:
            return route.call(name, x, check)

        method.__name__ = method.__qualname__ = name
        method.__doc__ = self.__doc__
        return method


#: The model methods a Bundle offers besides predict, when the model has them.
_METHODS = ("predict_proba", "decision_function", "transform")
_WHO_HAS = {"predict_proba": "a classifier that estimates probabilities (SVC needs probability=True)",
            "decision_function": "a model with decision scores (a linear model, an SVM, a boosting classifier)",
            "transform": "a transformer (a scaler, an encoder, a Pipeline ending in one)"}


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
                 reader: ArtifactReader, env_report: "EnvReport | None", code_changes: tuple[str, ...] = (), *,
                 runtime: str = "native", runner: Flavor | None = None,
                 tolerances: Mapping[str, Any] | None = None) -> None:
        self.path = path
        #: Which runtime runs the model: ``"native"`` (its framework) or ``"onnx"`` (the portable member,
        #: run by onnxruntime: ``runner`` then runs it, and ``tolerances`` are the ones recorded for it).
        self.runtime = runtime
        self._tolerances = dict(tolerances) if tolerances is not None else None
        #: Local modules used at load whose source differs from the copy bundled at save.
        self.code_changes = code_changes
        self.manifest = manifest
        self.env_report = env_report
        self._reader = reader
        pre_flavor = (get_flavor(manifest.components["preprocess"].flavor)
                      if "preprocess" in manifest.components and runner is None else None)
        self._route = Route(model, runner or get_flavor(manifest.components["model"].flavor), preprocess, pre_flavor,
                            manifest.schema)

    @property
    def model(self) -> Any:
        """The loaded model (replace it to run another one through the same checks)."""
        return self._route.model

    @model.setter
    def model(self, value: Any) -> None:
        self._route.model = value

    @property
    def preprocess(self) -> Any:
        """The preprocessing applied before the model, or None."""
        return self._route.preprocess

    @preprocess.setter
    def preprocess(self, value: Any) -> None:
        self._route.preprocess = value

    def __repr__(self) -> str:
        runtime = "" if self.runtime == "native" else f" runtime={self.runtime!r}"
        return f"<modelsafe.Bundle {str(self.path)!r} flavor={self.manifest.flavor!r}{runtime}>"

    def predict(self, x: Any, *, check: bool = True) -> Any:
        """Preprocess (if any) -> model -> outputs.

        ``check`` (default) guards the raw input against the schema recorded at save:
        columns realigned by name, missing columns, duplicate names and lossy dtype changes
        refused with SchemaError, extra columns and values far outside the recorded ranges
        warned about. Pass ``check=False`` to skip it in hot loops. ``predict_proba``,
        ``decision_function`` and ``transform`` (where the model has them) take the same path.
        """
        return self._route.call("predict", x, check)

    predict_proba: Callable[..., Any] = _ModelMethod("Class probabilities")  # type: ignore[assignment]
    decision_function: Callable[..., Any] = _ModelMethod("Decision scores")  # type: ignore[assignment]
    transform: Callable[..., Any] = _ModelMethod("The model's transform of the input")  # type: ignore[assignment]

    def outputs(self, x: Any, *, check: bool = True) -> dict[str, Any]:
        """Every output recorded for verification (e.g. predict and predict_proba), through the input guard."""
        return self._route.outputs(x, check)

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
            tolerances={name: self._tolerances[name] if self._tolerances is not None else o.get("tolerance")
                        for name, o in spec["outputs"].items()},
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
            return VerifyReport(path=str(self.path), skipped="no sample")
        environment = self.env_report.summary() if self.env_report is not None else ""
        return replay(str(self.path), sample, self._route.replay, self.code_changes, environment)

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
