"""URLs for the verbs whose readers work on local files: ``doctor`` and ``convert``.

``doctor`` of a URL and ``convert`` of a remote source read the file the way they read a
local one (torch, Keras and joblib readers open files), so the source is first copied,
streamed, into a private temporary folder, which is removed afterwards. Nothing from it
is deserialized by the copy. ``convert`` to a remote destination writes the artifact
locally, verifies it there, and then copies it to the store member by member through
:class:`~modelsafe.artifact.writer.ArtifactWriter`, so the upload is streamed, atomic,
conditional under ``overwrite=False`` and, for a folder, writes its manifest last, exactly
as ``save`` to a URL.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

from modelsafe.artifact.location import RemotePath, resolve
from modelsafe.artifact.storage_errors import storage_error

__all__ = ["staged", "copy_artifact"]


@contextlib.contextmanager
def staged(url: Any, storage_options: Mapping[str, Any] | None = None) -> Iterator[Path]:
    """A private local copy of the object or prefix at ``url``, removed on exit."""
    remote = resolve(url, storage_options)
    assert isinstance(remote, RemotePath)
    folder = Path(tempfile.mkdtemp(prefix="modelsafe-staged-"))
    target = folder / (remote.name or "object")
    try:
        try:
            if remote.fs.isdir(remote.path):
                remote.fs.get(remote.path.rstrip("/") + "/", str(target), recursive=True)
            else:
                remote.fs.get_file(remote.path, str(target))
        except Exception as exc:  # noqa: BLE001 - every store failure becomes a ModelsafeError
            raise storage_error(exc, remote.url) from exc
        yield target
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def copy_artifact(local: Path, url: Any, *, overwrite: bool, storage_options: Mapping[str, Any] | None) -> None:
    """Copy the verified artifact at ``local`` to ``url``, member by member, the manifest last."""
    from modelsafe.artifact.reader import MANIFEST_NAME, open_artifact
    from modelsafe.artifact.writer import ArtifactWriter

    with open_artifact(local) as reader, ArtifactWriter(url, overwrite=overwrite,
                                                        storage_options=storage_options) as writer:
        for name in reader.names():
            if name != MANIFEST_NAME:
                writer.add(name, reader.view(name))
        writer.commit(reader.read(MANIFEST_NAME))
