"""Where signing lives: cryptography only inside modelsafe.signing, and never imported when unused."""

from __future__ import annotations

import ast
import doctest
from pathlib import Path

import modelsafe as ms

PACKAGE = Path(ms.__file__).parent


def test_cryptography_is_imported_only_inside_signing():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.is_relative_to(PACKAGE / "signing"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            offenders += [f"{path.relative_to(PACKAGE)}:{node.lineno}" for n in names
                          if n.split(".")[0] in ("cryptography", "OpenSSL", "model_signing")]
    assert not offenders


def test_unsigned_loads_and_inspect_import_no_cryptography(tmp_path, kit, fresh):
    path = kit.save(tmp_path / "model.msafe")
    proc = fresh(f"""
        import sys, modelsafe as ms
        assert "modelsafe.signing" not in sys.modules
        ms.load({str(path)!r}).close()                      # auto, no trusted keys: nothing to check
        ms.load({str(path)!r}, signature="ignore").close()
        ms.inspect({str(path)!r})
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("cryptography", "model_signing")))
    """, env={"MODELSAFE_TRUSTED_KEYS": ""})
    assert proc.stdout.strip() == "[]"


def test_public_names():
    for name in ("sign", "verify_signature", "SignatureReport", "SignatureError", "UnsignedArtifactError",
                 "UntrustedSignerError", "InvalidSignatureError", "SignatureMismatchError", "SigningError"):
        assert name in ms.__all__ and getattr(ms, name) is not None
    assert issubclass(ms.SignatureError, ms.SecurityError) and issubclass(ms.SigningError, ValueError)


def test_docstring_examples_run():
    """The examples of ms.save (which writes /tmp/doc-model.msafe), ms.sign and ms.verify_signature."""
    from modelsafe.signing import api

    for function in (ms.save, api.sign, api.verify_signature):
        finder = doctest.DocTestFinder(recurse=False)
        for test in finder.find(function, globs={}):
            result = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS).run(test)
            assert result.failed == 0 and result.attempted > 0, function.__name__
