"""``ms.export(path, folder, to="docker")``: a Docker build context that serves the artifact in its recorded environment.

The artifact is first recreated and checked as :func:`modelsafe.recreate_env` does (its recorded
environment built, or reused from the cache, and the artifact loaded and verified inside it), so
the requirements written are ones that were just proven to install and to reproduce the
recorded outputs. The context holds:

* ``Dockerfile``: ``python:X.Y-slim`` (the recorded minor version), the requirements installed
  with pip, a non-root user, ``modelsafe serve`` as the entry point (``--env strict``: the image
  holds exactly the recorded versions, and the server refuses to start otherwise) and a
  ``HEALTHCHECK`` on ``/v2/health/ready`` (ready only once the model is loaded and verified);
* ``requirements.txt``: the recorded distributions at their exact versions (wheels only), then
  modelsafe with its ``serve`` extra: the source tree copied into the context when modelsafe runs
  from one (built in the image), else ``modelsafe[serve]==<version>`` from the index;
* the artifact (and its signature, ``.sig``, when there is one), checked again after the copy;
* ``README.md`` with the line that builds the image, and ``.dockerignore``.

Nothing here runs Docker.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from modelsafe.envs.requirements import PYTORCH, Requirements
from modelsafe.errors import EnvironmentBuildError

__all__ = ["IMAGE_ROOT", "PORT", "export_docker"]

PORT = 8080
#: Where the image keeps the artifact and the requirements.
IMAGE_ROOT = "/srv/modelsafe"
_SOURCE_DIR = "modelsafe-src"
_HEALTH = ('["python", "-c", "import urllib.request; '
           f"urllib.request.urlopen('http://127.0.0.1:{PORT}/v2/health/ready', timeout=4)\"]")


def export_docker(path: str | os.PathLike[str], destination: str | os.PathLike[str], *, overwrite: bool = False,
                  tag: str | None = None, **load_kwargs: Any) -> Path:
    """Write a Docker build context for the artifact at ``path`` into the folder ``destination``; return it.

    ``load_kwargs`` are the check's load keywords (``trust_code=True`` also makes the image's
    server trust bundled code; ``trusted=`` is passed on likewise). ``tag`` names the image in
    the README (default: the artifact's stem). An existing non-empty ``destination`` is refused
    unless ``overwrite=True``.

    Examples
    --------
    >>> import modelsafe as ms
    >>> ms.export("model.msafe", "model-image", to="docker")   # doctest: +SKIP
    PosixPath('model-image')
    """
    from modelsafe._api import inspect
    from modelsafe._load import refuse_unknown_keywords
    from modelsafe.artifact.location import is_url
    from modelsafe.envs.recreate import recreate_env

    if is_url(path):  # the context holds a copy of the artifact anyway: copied here first, then used as a local one
        from modelsafe._staging import staged

        with staged(path, load_kwargs.pop("storage_options", None)) as local:
            return export_docker(local, destination, overwrite=overwrite, tag=tag, **load_kwargs)
    source = Path(os.fspath(path)).absolute()
    target = Path(destination).absolute()
    if target.exists() and (not target.is_dir() or any(target.iterdir())) and not overwrite:
        raise EnvironmentBuildError(
            f"{target} exists and is not empty, so the build context was not written there. Give an empty or new "
            "folder, or pass overwrite=True (--overwrite) to replace it.", reason="destination", destination=str(target))
    manifest = inspect(source)
    refuse_unknown_keywords(load_kwargs, manifest, "export")  # before anything is built, in export's name
    recreate_env(source, **load_kwargs)  # the environment built (or reused), the artifact loaded and verified in it
    from modelsafe.envs.build import requirements_for

    requirements = requirements_for(manifest.environment, str(source))
    name = tag or _tag(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _write_context(staging, source, requirements, name, load_kwargs)
        if target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _write_context(folder: Path, source: Path, requirements: Requirements, tag: str, options: dict[str, Any]) -> None:
    from modelsafe.envs.source import running_modelsafe

    artifact = folder / source.name
    if source.is_dir():
        shutil.copytree(source, artifact, symlinks=False)
    else:
        shutil.copyfile(source, artifact)
    signature = source.with_name(source.name + ".sig")
    if signature.is_file():
        shutil.copyfile(signature, folder / signature.name)
    _check_copy(artifact)
    modelsafe = running_modelsafe()
    if modelsafe.project is not None:
        modelsafe.copy_tree(folder / _SOURCE_DIR)
    (folder / "requirements.txt").write_text(requirements_text(requirements, modelsafe.project is not None,
                                                               modelsafe.version), encoding="utf-8")
    (folder / "Dockerfile").write_text(dockerfile(requirements, source.name, modelsafe.project is not None,
                                                  serve_options(options), signature.is_file()), encoding="utf-8")
    (folder / "README.md").write_text(readme(tag, source.name, requirements), encoding="utf-8")
    (folder / ".dockerignore").write_text("**/__pycache__\n**/*.pyc\n", encoding="utf-8")


def _check_copy(artifact: Path) -> None:
    """Every member of the copy has its recorded size and hash: the context ships the bytes that were checked."""
    from modelsafe.artifact.integrity import check_members
    from modelsafe.artifact.reader import open_artifact, read_manifest

    reader = open_artifact(artifact)
    try:
        check_members(reader, read_manifest(reader).members)
    finally:
        reader.close()


def requirements_text(requirements: Requirements, from_source: bool, version: str) -> str:
    """requirements.txt of the image: the exact pins (wheels only), then modelsafe and its server."""
    lines = [(f"# The environment the artifact was saved in (Python {requirements.python_full}, "
              f"{requirements.implementation}), as modelsafe recorded it: exact versions, from wheels.")]
    indexes = sorted({_pytorch_index(pin) for pin in requirements.pins} - {None})  # type: ignore[arg-type]
    lines += [f"--extra-index-url {url}" for url in indexes]
    if requirements.names:
        lines.append(f"--only-binary {','.join(requirements.names)}")
    lines += list(requirements.pins)
    lines.append("# modelsafe, which loads, checks and serves it")
    lines.append(f"./{_SOURCE_DIR}[serve]" if from_source else f"modelsafe[serve]=={version}")
    return "\n".join(lines) + "\n"


def _pytorch_index(pin: str) -> str | None:
    """PyTorch's own index for a local build (``torch==2.13.0+cpu`` -> ``.../whl/cpu``); None otherwise."""
    name, _, version = pin.partition("==")
    label = version.partition("+")[2]
    if name.lower() in PYTORCH and re.fullmatch(r"cpu|cu\d+|rocm[\d.]+|xpu", label):
        return f"https://download.pytorch.org/whl/{label}"
    return None


def serve_options(options: dict[str, Any]) -> list[str]:
    """``modelsafe serve`` arguments for the load keywords the check used."""
    args = ["--env", "strict"]
    if options.get("trust_code"):
        args.append("--trust-code")
    for name in options.get("trusted", ()):
        args += ["--trusted", str(name)]
    return args


def dockerfile(requirements: Requirements, artifact: str, from_source: bool, serve_args: list[str],
               signed: bool = False) -> str:
    """The Dockerfile of the context."""
    import json

    entry = ["modelsafe", "serve", "--host", "0.0.0.0", "--port", str(PORT), *serve_args]
    source = f"COPY {_SOURCE_DIR}/ ./{_SOURCE_DIR}/\n" if from_source else ""
    signature = f"COPY {artifact}.sig ./{artifact}.sig\n" if signed else ""
    return f"""\
# Serves {artifact} in the environment it was saved in (recorded by modelsafe: Python {requirements.python_full},
# {', '.join(requirements.pins) or 'no recorded packages'}).
FROM python:{requirements.python}-slim

ENV PYTHONDONTWRITEBYTECODE=1 \\
    PYTHONUNBUFFERED=1 \\
    PIP_DISABLE_PIP_VERSION_CHECK=1 \\
    PIP_NO_CACHE_DIR=1

WORKDIR {IMAGE_ROOT}
COPY requirements.txt ./
{source}RUN pip install --no-cache-dir -r requirements.txt

# The server runs as an unprivileged user, which owns nothing but its home.
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin modelsafe
COPY {artifact} ./{artifact}
{signature}USER modelsafe

EXPOSE {PORT}
# Ready only once the model is loaded and its verification sample replayed.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \\
    CMD {_HEALTH}
ENTRYPOINT {json.dumps(entry)}
CMD {json.dumps([f"{IMAGE_ROOT}/{artifact}"])}
"""


def readme(tag: str, artifact: str, requirements: Requirements) -> str:
    """README.md of the context: the line that builds the image, and how to run it."""
    return f"""\
# {tag}: {artifact} served by modelsafe

Build the image (from this folder): `docker build -t {tag} .`

Run it: `docker run --rm -p {PORT}:{PORT} {tag}`, then `curl http://127.0.0.1:{PORT}/v2/health/ready`.

The image has Python {requirements.python} and exactly the versions the model was saved with
({', '.join(requirements.pins) or 'none recorded'}); `modelsafe serve --env strict` loads the
artifact with every check and refuses to start if anything differs. It listens on all addresses
inside the container without a token: to require one, mount a token file and add
`--token-file /run/secrets/token {IMAGE_ROOT}/{artifact}` after the image name.
"""


def _tag(source: Path) -> str:
    stem = source.name.removesuffix(".msafe")
    return re.sub(r"[^a-z0-9_.-]+", "-", stem.lower()).strip("-.") or "model"
