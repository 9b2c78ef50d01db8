"""``ms.export(path, "model.onnx", to="onnx")``: the portable member as a plain ``.onnx`` file for other runtimes.

The artifact is loaded with ``runtime="onnx"`` and every check of ``load`` (integrity, the
graph's audit, the runtime's environment, verification of the stored sample against the
recorded tolerance), then the graph is written (with its external-data file beside it, if it
has one). :func:`describe` gives what a caller of the graph needs to know: its inputs and the
tolerance it was checked to.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["describe", "export_onnx"]


def export_onnx(path: str | os.PathLike[str], destination: str | os.PathLike[str], **options: Any) -> Path:
    """Write the ONNX graph of the artifact at ``path`` to ``destination`` (a ``.onnx`` file); return it.

    ``options`` are ``ms.load``'s keywords (``env=``, ``verify=``, ``trusted=``...).

    Examples
    --------
    >>> import modelsafe as ms
    >>> ms.export("model.msafe", "model.onnx", to="onnx")   # doctest: +SKIP
    PosixPath('model.onnx')
    """
    from modelsafe._api import load

    if options:  # refused before the artifact's portable record is even read (as load refuses them)
        from modelsafe._keywords import check_keywords, declared, signature_names

        check_keywords("export", options, {*signature_names(load), *declared("load")} - {"runtime"})
    destination = Path(destination)
    if destination.is_dir():
        destination = destination / "model.onnx"
    with load(path, runtime="onnx", **options) as bundle:
        spec = bundle.manifest.portable or {}
        graph = bundle._reader.read(f"portable/{spec['graph']}")
        external = {location: bundle._reader.read(f"portable/{location}") for location in spec.get("external_data", ())}
    for location, data in external.items():
        _write_atomically(destination.parent / location, data)
    _write_atomically(destination, graph)
    return destination


def _write_atomically(target: Path, data: bytes) -> None:
    """``data`` to ``target`` through a temporary file beside it (fsynced, then renamed)."""
    import tempfile

    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def describe(spec: Mapping[str, Any]) -> list[str]:
    """The graph's inputs (name, dtype, shape) and each output's tolerance, one line each."""
    lines = [f"converter: {spec.get('converter', '?')}; opsets {spec.get('opsets', {})}"]
    for graph_input in spec.get("inputs", ()):
        shape = ["batch" if n is None else n for n in graph_input["shape"]]
        lines.append(f"input  {graph_input['name']!r}: {graph_input['dtype']} {shape}")
    for name, output in spec.get("outputs", {}).items():
        tolerance = output.get("tolerance")
        checked = ("exact" if tolerance is None else
                   f"rtol={tolerance['rtol']:.3g}, atol={tolerance['atol']:.3g}, largest difference at save "
                   f"{output.get('max_difference', 0.0):.3g}")
        lines.append(f"output {output['graph']!r} ({name}): {checked}")
    return lines
