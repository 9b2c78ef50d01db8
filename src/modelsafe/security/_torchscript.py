"""Static checks of a TorchScript archive's code (``code/**/*.py``, written by ``torch.jit.save``).

TorchScript code is not run by Python: ``torch.jit.load`` compiles it with TorchScript's
own compiler, and what it can call is what the interpreter has registered: ATen tensor
ops (``torch.<op>``, ``ops.aten.<op>``), interpreter primitives (``ops.prim.<op>``) and the
archive's own classes and functions (``__torch__.<...>``). The source is parsed with
:mod:`ast` (nothing is compiled or run) and every call outside those namespaces is
reported: custom operators and classes (``ops.<namespace>.<op>``, ``torch.classes``)
come from native libraries loaded into the process, and the few ATen ops that reach the
file system (``torch.from_file``...) are reported by name.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

#: Operator namespaces every TorchScript interpreter registers (tensor math and primitives).
BUILTIN_NAMESPACES = frozenset({"aten", "prim", "quantized", "_quantized", "profiler", "_caffe2", "fbgemm",
                                "_nnapi", "cuda", "_test"})
#: ATen ops that read or write files or load code.
FILE_OPS = frozenset({"from_file", "save", "load", "_load_for_mobile", "_save_for_mobile", "jit", "classes",
                      "ops", "hub"})
MAX_SOURCE = 16 << 20


@dataclass(frozen=True)
class CodeIssue:
    subject: str
    message: str


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def check_source(source: bytes) -> list[CodeIssue]:
    """Calls outside TorchScript's built-in namespaces in one code member (empty when none)."""
    if len(source) > MAX_SOURCE:
        return [CodeIssue("code", f"the code member holds {len(source)} bytes, more than modelsafe reads")]
    try:
        tree = ast.parse(source.decode("utf-8"))
    except (SyntaxError, ValueError, UnicodeDecodeError) as exc:
        return [CodeIssue("code", f"the code member is not TorchScript source modelsafe can read ({exc})")]
    issues: dict[str, CodeIssue] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        name = _dotted(node)
        if name is None:
            continue
        parts = name.split(".")
        if parts[0] == "ops" and len(parts) >= 3 and parts[1] not in BUILTIN_NAMESPACES:
            key = ".".join(parts[:3])
            issues[key] = CodeIssue(key, f"the code calls the operator {key} from the {parts[1]!r} namespace, "
                                         "which comes from a native library loaded into the process, not from torch")
        elif parts[0] == "torch" and len(parts) >= 2 and parts[1] in FILE_OPS:
            key = ".".join(parts[:2])
            issues[key] = CodeIssue(key, f"the code calls {key}, which reaches files or loads code")
    return list(issues.values())
