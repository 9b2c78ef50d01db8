"""``ms.convert``: turn a legacy model file into a modelsafe artifact, safely.

The pipeline: detect the container (by content) -> scan it (nothing that could run
code may remain unless the caller listed it in ``trusted``) -> read it *only* through
modelsafe's restricted unpickler (plain pickle, joblib) or the framework flavor's
reader (torch, Keras), with the caller's explicit ``trusted`` -> ``ms.save`` with the
file's provenance in the manifest's ``source`` -> verify against ``sample``.

Framework readers are found through :data:`READERS`, a table of *string* import paths,
so this module imports no framework.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import contextlib
import importlib
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Collection, Mapping

from modelsafe.artifact.location import is_url
from modelsafe.errors import (
    FlavorNotInstalledError,
    FormatError,
    UnsafeArchiveError,
    UnsignedArtifactError,
    UnsupportedModelError,
    UntrustedContentError,
)

if TYPE_CHECKING:
    from modelsafe.artifact.manifest import Manifest
    from modelsafe.security.scanner import ScanReport

__all__ = ["convert", "READERS", "MLFLOW_CONVERTER"]

#: Kind of file -> "module:function" reading it (``read(path, *, trusted, ...) -> object``).
READERS: dict[str, str] = {
    "torch": "modelsafe.flavors.torch.legacy:read_checkpoint",
    "keras": "modelsafe.flavors.keras.legacy:read_legacy",
    "huggingface": "modelsafe.flavors.transformers.convert:read_pretrained",
}
#: MLflow model folders and ``models:/`` / ``runs:/`` URIs (read ``MLmodel``, pick the native flavor).
MLFLOW_CONVERTER = "modelsafe.integrations.mlflow_convert"
#: What the scanner calls a file -> the reader family that converts it.
_FAMILY = {"pickle": "pickle", "joblib": "joblib", "zip:torch": "torch", "torch-legacy": "torch", "tar": "torch",
           "hdf5": "keras", "zip:keras": "keras", "savedmodel-directory": "keras"}
_GLOBAL_KINDS = ("dangerous-global", "unknown-global")
#: Findings a reader handles itself: none since the scan checks SavedModel graphs as the Keras reader does.
_READER_VETTED: dict[str, set[str]] = {}
#: Scan findings of code that trust_code allows (the readers apply the same gate): Lambda layers, graph ops.
_TRUST_CODE_KINDS = ("keras-code", "graph-op")


def convert(src: str | os.PathLike[str], dst: str | os.PathLike[str], *, trusted: Collection[str] = (),
            sample: Any = None, overwrite: bool = False, trust_code: bool = False,
            storage_options: Mapping[str, Any] | None = None, signature: str = "auto", trusted_keys: Any = None,
            **options: Any) -> "Manifest":
    """Convert a legacy pickle, joblib, torch or Keras file into a verified modelsafe artifact.

    Parameters
    ----------
    src
        The legacy file (pickle, joblib (any compression), torch ``.pt``/``.pth``/``.bin``,
        Keras ``.h5``/``.keras``, a SavedModel folder, or a Hugging Face ``save_pretrained``
        folder, whose tokenizer or processor is saved with the model). Its kind is read from
        its content. Or an MLflow model: a folder with an ``MLmodel`` file, or a ``models:/name/version``
        or ``runs:/id/path`` URI (resolved through the MLflow client; see
        :mod:`modelsafe.integrations.mlflow_convert`), whose native flavor's file is read the same way
        and whose input example is the sample unless ``sample`` is given.
    dst
        Where to write the artifact (``*.msafe`` for one file, else a folder). ``src`` and ``dst``
        may be fsspec URLs (``s3://...``): a remote source is copied locally first; a remote
        artifact is written and verified locally, then uploaded as ``save`` uploads one.
    trusted
        ``module.name`` globals (or ``module.*``) the file may use beyond modelsafe's allowlist.
        Nothing else is ever imported or called.
    sample
        Input rows: their outputs are recorded, and the written artifact is loaded back and
        checked against them.
    overwrite
        Replace an existing artifact at ``dst``.
    trust_code
        Allow Keras Lambda layers, whose stored bytecode runs when the model is loaded (as
        ``ms.load(..., trust_code=True)`` does). Everything else the scan finds is still refused.
    signature, trusted_keys
        As :func:`modelsafe.load` takes them, for the source: its signature, beside it at ``src + ".sig"``
        as ``model_signing sign`` writes one (OpenSSF Model Signing), is checked against ``trusted_keys``
        (or ``MODELSAFE_TRUSTED_KEYS``) before anything reads the model: its files are hashed and must
        be exactly the signed ones. ``"require"`` refuses an unsigned source; ``"auto"`` checks a signature
        that is there when trusted keys are set; ``"ignore"`` skips it. Sign the artifact that convert
        writes with :func:`modelsafe.sign`.
    **options
        Passed to :func:`modelsafe.save` for the model, e.g. ``init_args=`` for a whole pickled
        PyTorch model whose constructor arguments cannot be inferred.

    Returns
    -------
    Manifest
        The artifact's manifest; ``manifest.source`` records where it came from.

    Raises
    ------
    UntrustedContentError
        The file names globals that are neither allowed nor trusted (nothing was read).
    FormatError
        The file is truncated, corrupt, of an unknown kind, or already an artifact.
    FlavorError
        No reader for this kind of file is available.
    VerificationError
        The artifact, loaded back, does not reproduce the outputs on ``sample`` (it is removed).

    Examples
    --------
    >>> import pickle, numpy as np, modelsafe as ms
    >>> from sklearn.linear_model import LinearRegression
    >>> X = np.arange(12.0).reshape(6, 2); model = LinearRegression().fit(X, X[:, 0])
    >>> with open("/tmp/doc-legacy.pkl", "wb") as f:
    ...     pickle.dump(model, f)
    >>> ms.convert("/tmp/doc-legacy.pkl", "/tmp/doc-converted.msafe", sample=X, overwrite=True).source["kind"]
    'pickle'
    """
    from modelsafe.security.scanner import scan
    from modelsafe.signing.gate import check_before_convert

    checks = {"signature": signature, "trusted_keys": trusted_keys}
    registry = str(src).startswith(("models:/", "runs:/"))
    if registry:
        _no_signature_beside(src, checks)
    if registry or (not is_url(src) and (Path(src) / "MLmodel").is_file()):
        if not is_url(src):
            check_before_convert(Path(src), Path(src), checks)
        return importlib.import_module(MLFLOW_CONVERTER).convert_mlflow(  # an MLflow model: modelsafe.integrations
            src, dst, trusted=trusted, sample=sample, overwrite=overwrite, trust_code=trust_code,
            storage_options=storage_options, **options)
    if is_url(src) or is_url(dst):
        return _convert_remote(src, dst, storage_options, checks, trusted=trusted, sample=sample,
                               overwrite=overwrite, trust_code=trust_code, **options)
    _check_keywords(options)
    src_path, trusted = Path(src), tuple(trusted)
    check_before_convert(src_path, src_path, checks)
    report = scan(src_path)
    family = _family(report)
    _refuse_main_globals(report)
    _refuse_findings(report, family, trusted, trust_code)
    obj = _read(src_path, family, trusted, trust_code)
    if family == "huggingface":  # the model, and the folder's tokenizer or processor (or None)
        obj, options["preprocess"] = obj
    manifest = _save(obj, src_path, Path(dst), report, trusted, sample, overwrite, options)
    if sample is not None:
        _verify(Path(dst), trusted, trust_code)
    return manifest


def _check_keywords(options: Mapping[str, Any]) -> None:
    """Refuse, before reading anything, keywords neither convert, save nor any flavor reads."""
    if options:
        from modelsafe._keywords import signature_names
        from modelsafe._save import save
        from modelsafe.flavors.keywords import check_save_keywords

        check_save_keywords("convert", options, signature_names(convert) | signature_names(save))


def _no_signature_beside(src: Any, checks: Mapping[str, Any]) -> None:
    if checks["signature"] == "require":
        raise UnsignedArtifactError(
            f"{src!r} is a model in an MLflow registry, which keeps no signature beside it, and signature='require' "
            "refuses what it cannot check. Download the model folder and its signature (FOLDER.sig) and convert "
            "the folder, or pass signature='auto'.", path=str(src), signature=None, fingerprint=None,
            reason="unsigned")


def _convert_remote(src: Any, dst: Any, storage_options: Mapping[str, Any] | None, checks: Mapping[str, Any], *,
                    overwrite: bool, **kwargs: Any) -> "Manifest":
    """Convert with a URL source (copied locally first; its signature, beside it in the store, checked on the
    copy) or destination (written and verified locally, then copied to the store as ``save`` to a URL writes:
    see :mod:`modelsafe._staging`)."""
    import tempfile

    from modelsafe._staging import copy_artifact, staged
    from modelsafe.artifact.location import resolve
    from modelsafe.signing.gate import check_before_convert

    with contextlib.ExitStack() as stack:
        if is_url(src):
            local_src = stack.enter_context(staged(src, storage_options))
            check_before_convert(resolve(src, storage_options), local_src, checks)
            checks = {"signature": "ignore"}  # checked here, on the bytes the conversion reads
        else:
            local_src = src
        if not is_url(dst):
            return convert(local_src, dst, overwrite=overwrite, **checks, **kwargs)
        remote = resolve(dst, storage_options)
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="modelsafe-convert-")))
        manifest = convert(local_src, folder / remote.name, overwrite=False, **checks, **kwargs)
        copy_artifact(folder / remote.name, remote, overwrite=overwrite, storage_options=storage_options)
        return manifest


def _family(report: "ScanReport") -> str:
    kind = report.kind
    if kind == "directory" and _pretrained_folder(report.path):
        return "huggingface"
    if kind.startswith("compressed:"):
        return "joblib"
    if kind == "tar" and not any(i.kind.startswith("torch-tar-") for i in report.items):
        kind = "tar (not a torch checkpoint)"
    family = _FAMILY.get(kind)
    if family is None:
        article = "an" if kind[:1] in "aeiou" else "a"
        what = "already a modelsafe artifact" if "modelsafe" in kind else f"{article} {kind} file"
        raise FormatError(
            f"Cannot convert {report.path!r}: it is {what}, and convert reads pickle, joblib, torch and Keras "
            "files. Nothing was read. For an artifact use ms.load; for other formats load the model with its "
            "framework and ms.save it.", path=report.path, kind=report.kind)
    return family


def _pretrained_folder(path: str) -> bool:
    """A Hugging Face ``save_pretrained`` folder (its file names are read, nothing else)."""
    from modelsafe.flavors.transformers.folder import is_pretrained_folder

    return is_pretrained_folder(Path(path))


def _is_trusted(name: str, trusted: tuple[str, ...]) -> bool:
    return name in trusted or any(t.endswith(".*") and name.startswith(t[:-1]) for t in trusted)


def _refuse_main_globals(report: "ScanReport") -> None:
    """Classes from the saving script's ``__main__`` that this process lacks: the cause ``doctor`` names.

    Trusting them cannot help (they do not exist here), so this is said before anything about trust.
    """
    from modelsafe.diagnosis.checks import main_globals

    missing = [p for p in main_globals(report) if not _defined_in_main(p.subject)]
    if not missing:
        return
    lines = "\n".join(f"  - {p.what}: {p.why}" for p in missing)
    raise FormatError(
        f"Cannot convert {report.path!r}: it needs {len(missing)} name(s) from the __main__ of the script that "
        f"saved it, and this process's __main__ ({_main_file()}) does not define them:\n{lines}\nNothing was "
        f"read. Fix: {missing[0].fix}. Or convert from a script that defines or imports them first: "
        f"`from mymodule import {missing[0].subject.split('.')[-1]}; ms.convert(...)` (the modelsafe command "
        "cannot: its __main__ is modelsafe's own).",
        path=report.path, globals=[p.subject for p in missing], problems=missing)


def _defined_in_main(name: str) -> bool:
    import sys

    module, _, qualname = name.partition(".")
    target: Any = sys.modules.get(module)
    for part in qualname.split("."):
        target = getattr(target, part, None)
    return target is not None


def _main_file() -> str:
    import sys

    return str(getattr(sys.modules.get("__main__"), "__file__", None) or "an interactive session")


def _refuse_findings(report: "ScanReport", family: str, trusted: tuple[str, ...], trust_code: bool = False) -> None:
    """Raise unless every finding is a global the caller trusts (nothing has been read yet)."""
    vetted = _READER_VETTED.get(family, set())
    untrusted = sorted({f.subject for f in report.findings if f.kind in _GLOBAL_KINDS
                        and not _is_trusted(f.subject, trusted)})
    if untrusted:
        dangerous = sorted({f.subject for f in report.findings if f.kind == "dangerous-global"} & set(untrusted))
        warn = (f" {', '.join(dangerous)} can run commands or code: trust them only if you wrote this file."
                if dangerous else "")
        raise UntrustedContentError(
            f"Refusing to convert {report.path!r}: it names {len(untrusted)} global(s) that are not on modelsafe's "
            f"allowlist: {', '.join(untrusted)}. Reading the file would import and call them, so a file from an "
            f"untrusted source could run code; nothing was read.{warn} If you trust the file's source, pass "
            f"trusted=[...] with exactly these names (modelsafe convert --trusted NAME).",
            globals=untrusted, path=report.path)
    others = [f for f in report.findings if f.kind not in _GLOBAL_KINDS and f.subject not in vetted
              and not (trust_code and _trusted_code(f))
              and not _pretrained_data(family, f)]
    if not others:
        return
    lines = "\n".join(f"  - {f.describe()}" for f in others)
    error = UntrustedContentError if any(f.kind in (*_TRUST_CODE_KINDS, "persistent-id", "torchscript-code",
                                                   "denial-of-service") for f in others) else \
        UnsafeArchiveError if any(f.kind in ("unsafe-archive", "archive-limit") for f in others) else FormatError
    facts: dict[str, Any] = {"path": report.path}
    if error is UntrustedContentError:
        facts["globals"] = sorted({f.subject for f in others})
    elif error is UnsafeArchiveError:
        facts["member"] = others[0].location
    raise error(
        f"Refusing to convert {report.path!r}: the scan found {len(others)} problem(s):\n{lines}\n"
        "A converted artifact must hold nothing that can run code and must be read completely; nothing was "
        "read. Run `modelsafe doctor` on the file for details.", **facts)


def _pretrained_data(family: str, finding: Any) -> bool:
    """A save_pretrained folder's JSON, vocabulary or sentencepiece file (read as data, never run), or a
    Python file (the folder's reader refuses the folder, naming trust_remote_code)."""
    if family != "huggingface" or finding.kind != "unknown-format":
        return False
    from modelsafe.flavors.transformers.folder import reader_vetted

    return reader_vetted(finding.location)


def _trusted_code(finding: Any) -> bool:
    """A Keras Lambda layer or a SavedModel graph op (allowed by trust_code; the readers apply the same gate)."""
    if finding.kind == "keras-code":
        return str(finding.subject).startswith("Lambda layer")
    return finding.kind == "graph-op"


def _read(path: Path, family: str, trusted: tuple[str, ...], trust_code: bool = False) -> Any:
    if family == "pickle":
        from modelsafe.security import restricted_loads

        return restricted_loads(path.read_bytes(), trusted=trusted)
    if family == "joblib":
        from modelsafe.security import restricted_load_joblib

        return restricted_load_joblib(path, trusted=trusted)
    reader = _reader(family)
    if family == "keras":
        return reader(path, trusted=trusted, trust_code=trust_code)
    if family == "huggingface":  # pickled .bin weights go through the torch reader, the one restricted door
        return reader(path, trusted=trusted, read_checkpoint=_reader("torch"))
    return reader(path, trusted=trusted)


def _reader(family: str) -> Callable[..., Any]:
    """The framework reader for ``family``, imported from its string path on first use."""
    target = READERS[family]
    module_name, attr = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise UnsupportedModelError(
                f"Cannot convert {family} files: this modelsafe has no {module_name} reader, so nothing was read. "
                "Upgrade modelsafe (pip install -U modelsafe), or load the model with its framework and ms.save it.",
                type_name=family) from exc
        raise FlavorNotInstalledError(
            f"Converting {family} files needs the {exc.name!r} package, which is not installed: nothing was read. "
            f"Install it with: pip install 'modelsafe[{family}]'", flavor=family, hint=f"pip install "
            f"'modelsafe[{family}]'", name=exc.name) from exc
    reader = getattr(module, attr, None)
    if reader is None:
        raise UnsupportedModelError(f"Cannot convert {family} files: {target} does not exist in this modelsafe. "
                                    "Upgrade modelsafe (pip install -U modelsafe).", type_name=family)
    return reader


def _save(obj: Any, src: Path, dst: Path, report: "ScanReport", trusted: tuple[str, ...], sample: Any,
          overwrite: bool, options: dict[str, Any]) -> "Manifest":
    from modelsafe._api import save

    source = {"path": str(src.resolve()), "kind": report.kind, "size": _size(src), "sha256": _sha256(src),
              "trusted": list(trusted), "converted": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    return save(obj, dst, sample=sample, overwrite=overwrite, source=source, **options)


def _verify(dst: Path, trusted: tuple[str, ...], trust_code: bool = False) -> None:
    """Load the artifact back and replay the sample; remove the artifact if it does not match."""
    from modelsafe._api import verify

    try:
        verify(dst, trusted=trusted, env="ignore", trust_code=trust_code).raise_if_failed()
    except BaseException:
        if dst.is_dir():
            shutil.rmtree(dst, ignore_errors=True)
        else:
            dst.unlink(missing_ok=True)
        raise


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    return path.stat().st_size


def _sha256(path: Path) -> str | None:
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(8 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
