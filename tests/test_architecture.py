"""The architecture as written down: import-linter contracts, framework-free layers, module size."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "modelsafe"
FRAMEWORKS = ("torch", "tensorflow", "keras", "sklearn", "xgboost", "lightgbm", "pandas", "scipy", "safetensors",
              "h5py", "transformers", "onnxruntime", "pyarrow", "fsspec", "s3fs", "starlette", "uvicorn", "dask",
              "distributed", "pyspark", "mlflow", "cryptography", "polars")
#: Parts that must not import a framework when they are imported (lazily, inside a function, is fine).
FRAMEWORK_FREE = ("artifact", "checks", "security", "code")


def test_the_import_contracts_hold():
    lint = Path(sys.executable).parent / "lint-imports"
    proc = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _module_level_imports(path: Path) -> list[tuple[int, str]]:
    """Imports that run when the module is imported (not in functions, not under TYPE_CHECKING)."""
    found: list[tuple[int, str]] = []

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                found.extend((node.lineno, alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.append((node.lineno, node.module))
            elif isinstance(node, ast.If):
                if "TYPE_CHECKING" not in ast.unparse(node.test):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, (ast.Try, ast.With)):
                visit(node.body)
                for handler in getattr(node, "handlers", ()):
                    visit(handler.body)

    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    return found


def _framework_free_modules() -> list[Path]:
    top = [p for p in PACKAGE.glob("*.py")]
    return top + [p for part in FRAMEWORK_FREE for p in (PACKAGE / part).rglob("*.py")]


@pytest.mark.parametrize("path", _framework_free_modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_framework_is_imported_at_module_level(path):
    offenders = [(line, name) for line, name in _module_level_imports(path) if name.split(".")[0] in FRAMEWORKS]
    assert not offenders, f"{path.relative_to(REPO)} imports a framework at module level: {offenders}"


def test_importing_every_framework_free_module_imports_no_framework():
    modules = sorted({"modelsafe." + ".".join(p.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")
                      for p in _framework_free_modules() if p.name != "__main__.py"})
    code = (f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
            f"print(' '.join(sorted(m for m in {FRAMEWORKS!r} if m in sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert proc.stdout.strip() == "", f"importing {len(modules)} modules pulled in: {proc.stdout.strip()}"


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_module_is_small_enough_to_read_in_one_sitting(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= 400, f"{path.relative_to(REPO)} has {lines} lines: split it by concept"
