"""``ms.recreate_env``: build the environment an artifact was saved in, and prove it by running the model there.

The steps: the manifest (read only) -> the environment of its requirement set, reused from the
cache or built now (see :mod:`modelsafe.envs.build`) -> the self-check: a worker in that
environment loads the artifact with every check of ``ms.load`` and replays its verification
sample, compared here with the recorded outputs -> the report: that environment's
:class:`~modelsafe.EnvReport` (every recorded package ``same``), with where it is and how it was built.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, fields
from typing import Any

from modelsafe.checks.environment import EnvReport, Level
from modelsafe.errors import EnvironmentBuildError

__all__ = ["RecreatedEnvReport", "recreate_env"]


@dataclass(frozen=True)
class RecreatedEnvReport(EnvReport):
    """The EnvReport of a recreated environment, with where it is and how it came to be."""

    location: str = ""
    python: str = ""
    installer: str = ""
    reused: bool = False
    build_seconds: float = 0.0
    ready_seconds: float = 0.0
    requirements: tuple[str, ...] = ()

    def _lines(self) -> list[str]:
        how = (f"reused from the cache ({self.installer})" if self.reused
               else f"built with {self.installer} in {self.build_seconds:.1f} s")
        return [*super()._lines(),
                (f"recreated environment: {self.location} ({how}; loaded and verified in it, ready in "
                 f"{self.ready_seconds:.1f} s)"),
                f"  its Python: {self.python}",
                f"  use it: ms.load(path, isolate={self.location!r}), or modelsafe serve --isolate"]


def recreate_env(path: str | os.PathLike[str], destination: str | os.PathLike[str] | None = None, *,
                 installer: str = "auto", **load_kwargs: Any) -> RecreatedEnvReport:
    """Build the environment the artifact at ``path`` was saved in; load and verify the artifact inside it.

    Parameters
    ----------
    path
        A local artifact.
    destination
        The folder to build the environment in. By default the user cache folder
        (``$MODELSAFE_ENVS_DIR``, else ``~/.cache/modelsafe/envs``) keeps one environment per
        requirement set, so a second artifact with the same requirements reuses it.
    installer
        ``"uv"`` (fast), ``"pip"`` (``venv`` + pip; reads this machine's pip configuration) or
        ``"auto"``: uv when it is installed, pip for local builds such as ``torch==2.13.0+cpu``.
    **load_kwargs
        For the self-check's load (``trust_code=True`` for bundled code, ``trusted=``...).

    Returns
    -------
    RecreatedEnvReport
        The EnvReport of the new environment (every recorded package ``same``), with its
        ``location``, ``python``, ``installer`` and whether it was ``reused``.

    Raises
    ------
    EnvironmentBuildError
        The recorded Python is not on this machine, a recorded version is not on the index or has
        no wheel here, the index cannot be reached: each named, with what to do.
    VerificationError
        The model, in its recreated environment, does not reproduce its recorded outputs.

    Examples
    --------
    >>> import modelsafe as ms
    >>> report = ms.recreate_env("/tmp/doc-model.msafe")               # doctest: +SKIP
    >>> report.ok, all(d.level.value == "same" for d in report.differences)   # doctest: +SKIP
    (True, True)
    >>> ms.load("/tmp/doc-model.msafe", isolate=report.location).predict(X)  # doctest: +SKIP
    """
    from modelsafe._api import inspect
    from modelsafe._load import refuse_unknown_keywords
    from modelsafe.envs.build import ensure_env
    from modelsafe.envs.isolated import load_isolated

    started = time.perf_counter()
    manifest = inspect(path)
    refuse_unknown_keywords(load_kwargs, manifest, "recreate_env")  # before anything is built
    built = ensure_env(manifest.environment, os.fspath(path), destination, installer)
    load_kwargs.setdefault("env", "ignore")  # the report below says how it compares
    with load_isolated(path, str(built.path), verify=True, **load_kwargs) as bundle:
        report = bundle.env_report
    assert report is not None
    allowed = {"python": (Level.SAME, Level.PATCH)}  # the minor version is what counts for Python
    different = [d for d in report.differences if d.level not in allowed.get(d.package, (Level.SAME,))]
    if different:
        raise EnvironmentBuildError(
            f"The environment at {built.path} does not hold the recorded versions: {report.summary()}. It was built "
            "from them, so the installer chose other versions (a constraint or an index serving other files). "
            "Remove the folder and build again with the other installer.", reason="installer",
            installer=built.installer, destination=str(built.path), report=report)
    return RecreatedEnvReport(**{f.name: getattr(report, f.name) for f in fields(EnvReport)},
                              location=str(built.path), python=str(built.python), installer=built.installer,
                              reused=built.reused, build_seconds=round(built.seconds, 3),
                              ready_seconds=round(time.perf_counter() - started, 3),
                              requirements=built.requirements.pins)
