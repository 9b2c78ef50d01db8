"""The optional portable program: a ``torch.export`` graph that runs without the model's class.

``torch.export.save`` writes a "pt2" archive whose sample inputs (and some constants) are
pickles, and ``torch.export.load`` reads them with ``torch.load``; its JSON graph is not
inert either: symbolic shapes are parsed with ``sympy.sympify`` (``eval``), ``guards_code``
is ``exec``-ed, and node targets name any ``torch`` attribute. So modelsafe stores the
program its own way, with no pickle at all:

* ``program/program.json``: the graph, as ``torch._export.serde`` serializes it, with node
  metadata (stack traces, module paths) removed and no guards code;
* ``program/weights.safetensors`` and ``program/constants.safetensors``: its tensors
  (a program with non-tensor constants, e.g. TorchScript objects, is not exported).

:func:`audit_program` checks the JSON before anything is built: every node target must
be an ATen/prims/higher-order operator or a plain Python operator, every symbolic
expression must consist of sympy numbers, symbols and arithmetic only, every name an
identifier, and there must be no guards code, custom objects or metadata. The program
is verified against the sample at save.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from modelsafe.errors import SaveError, UntrustedContentError
from modelsafe.flavors.torch.tensors import write_tensors
from modelsafe.flavors.torch.tensors_read import read_tensors

if TYPE_CHECKING:
    from modelsafe.flavors._base import ComponentSource, ComponentStore, LoadOptions

PROGRAM = "program/program.json"
WEIGHTS = "program/weights.safetensors"
CONSTANTS = "program/constants.safetensors"

_OP_TARGET = re.compile(r"torch\.ops\.(aten|prims|higher_order)\.[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")
_PY_TARGETS = frozenset(
    [f"_operator.{n}" for n in ("getitem", "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "neg",
                                "pos", "abs", "eq", "ne", "lt", "le", "gt", "ge", "and_", "or_", "not_",
                                "invert", "lshift", "rshift")]
    + [f"math.{n}" for n in ("sqrt", "floor", "ceil", "trunc", "exp", "log", "sin", "cos")]
    + [f"torch.{n}" for n in ("sym_int", "sym_float", "sym_max", "sym_min", "sym_not", "sym_ite", "sym_sum",
                              "_sym_sqrt")])
#: Tokens a symbolic-shape expression may contain (sympy srepr of integer arithmetic).
_SYMPY_TOKEN = re.compile(r"\s+|[A-Za-z_][A-Za-z0-9_]*|\d+(?:\.\d+)?(?:e[+-]?\d+)?|'[a-z]+\d*'|[(),=\-+*/]")
_SYMPY_NAMES = frozenset(
    "Symbol Integer Rational Float Mul Add Pow Mod Max Min Abs Eq Ne Lt Le Gt Ge StrictLessThan LessThan "
    "GreaterThan StrictGreaterThan Equality Unequality And Or Not true false True False positive integer "
    "nonnegative negative real finite oo zoo nan FloorDiv CeilDiv CleanDiv ModularIndexing Where PythonMod "
    "IntTrueDiv FloatTrueDiv PowByNatural FloatPow TruncToFloat TruncToInt ToFloat CeilToInt FloorToInt LShift "
    "RShift Identity IsNonOverlappingAndDenseIndicator BooleanAtom S One Zero NegativeOne Half".split())
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FQN = re.compile(r"[A-Za-z0-9_.\[\]]*")
_SYMBOL = re.compile(r"[a-z]+\d+")


# ---------------------------------------------------------------------------------------
# save
# ---------------------------------------------------------------------------------------


def export_program(model: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any], store: "ComponentStore",
                   check: Any) -> dict[str, Any]:
    """Export ``model`` on the sample, store the program, check it reproduces ``check(program)``.

    ``check`` is called with the rebuilt program module and raises SaveError on a difference.
    """
    import torch

    try:
        program = torch.export.export(model, args, dict(kwargs), dynamic_shapes=_batch_dynamic(args, kwargs),
                                      strict=False)
    except Exception as exc:  # noqa: BLE001 - any export failure is reported the same way
        raise SaveError(
            f"export=True: torch.export could not trace the model on the sample ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). A portable program needs a model torch.export "
            "supports (no data-dependent Python control flow). Save without export=True, or adapt forward().",
            cause=f"{type(exc).__name__}: {exc}") from exc
    graph = _program_json(program)
    params = set(program.graph_signature.parameters)
    weights = {k: v for k, v in program.state_dict.items()}
    constants = _tensor_constants(program)
    audit_program(graph, trusted=())
    rebuilt = build_program(graph, weights, constants, params)
    check(rebuilt)
    store.write(PROGRAM, json.dumps(graph, separators=(",", ":")).encode("utf-8"))
    write_tensors(store, WEIGHTS, weights)
    write_tensors(store, CONSTANTS, constants)
    return {"program": PROGRAM, "weights": WEIGHTS, "constants": CONSTANTS, "parameters": sorted(params),
            "torch": torch.__version__}


def _batch_dynamic(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
    """Let the first dimension of every tensor input vary (the batch); static when args and kwargs mix."""
    import torch

    def spec(value: Any) -> Any:
        return {0: torch.export.Dim.AUTO} if isinstance(value, torch.Tensor) and value.dim() > 0 else None

    if args and kwargs:
        return None
    if kwargs:
        return {k: spec(v) for k, v in kwargs.items()}
    return tuple(spec(a) for a in args)


def _program_json(program: Any) -> dict[str, Any]:
    from torch._export.serde.serialize import serialize

    artifact = serialize(program, serialize_state_dict=False, serialize_constants=False,
                         serialize_example_inputs=False)
    graph = json.loads(artifact.exported_program)
    graph["guards_code"] = []  # Python source that torch would exec; input checks are modelsafe's job
    for node in _nodes(graph):
        node["metadata"] = {}
    return graph


def _tensor_constants(program: Any) -> dict[str, Any]:
    import torch

    odd = sorted(k for k, v in program.constants.items() if not isinstance(v, torch.Tensor))
    if odd:
        raise SaveError(
            f"export=True: the exported program holds non-tensor constants ({', '.join(odd)}), e.g. TorchScript "
            "objects, which can only be stored as pickle. Save without export=True.", constants=odd)
    return dict(program.constants)


# ---------------------------------------------------------------------------------------
# audit and load
# ---------------------------------------------------------------------------------------


def _nodes(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, dict):
        if "target" in value and "inputs" in value and "outputs" in value:
            yield value
        for item in value.values():
            yield from _nodes(item)
    elif isinstance(value, list):
        for item in value:
            yield from _nodes(item)


def _walk(value: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield k, v
            yield from _walk(v, k)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item, key)


def _operator_ok(target: Any, trusted: tuple[str, ...]) -> bool:
    return isinstance(target, str) and (_OP_TARGET.fullmatch(target) is not None or target in _PY_TARGETS
                                        or target in trusted)


def _sympy_ok(expr: Any) -> bool:
    if not isinstance(expr, str) or len(expr) > 10_000:
        return False
    position = 0
    for match in _SYMPY_TOKEN.finditer(expr):
        if match.start() != position:
            return False
        token = match.group()
        if _IDENTIFIER.fullmatch(token) and token not in _SYMPY_NAMES:
            return False
        position = match.end()
    return position == len(expr)


def program_problems(graph: Any, trusted: tuple[str, ...] = ()) -> list[str]:
    """Everything in a stored program's JSON that could run code or is not what modelsafe writes."""
    if not isinstance(graph, dict):
        return ["the program is not a JSON object"]
    problems: list[str] = []
    if graph.get("guards_code"):
        problems.append("it carries guards code (Python source torch would execute)")
    for node in _nodes(graph):
        if not _operator_ok(node.get("target"), trusted):
            problems.append(f"node target {node.get('target')!r} is not an operator modelsafe allows")
        if node.get("metadata"):
            problems.append("a node carries metadata")
    for key, value in _walk(graph):
        if key in ("as_custom_obj", "custom_obj", "custom_obj_values") and value:
            problems.append("it uses custom (TorchScript) objects")
        elif key == "as_operator" and not _operator_ok(value, trusted):
            problems.append(f"operator argument {value!r} is not an operator modelsafe allows")
        elif key == "expr_str" and not _sympy_ok(value):
            problems.append(f"symbolic expression {str(value)[:80]!r} holds more than integer arithmetic")
        elif key in ("name", "as_name") and value is not None and not (isinstance(value, str)
                                                                      and _IDENTIFIER.fullmatch(value)):
            problems.append(f"name {str(value)[:80]!r} is not an identifier")
        elif (key.endswith("_name") or key == "fqn") and key != "as_name" and isinstance(value, str) \
                and not _FQN.fullmatch(value):
            problems.append(f"{key} {value[:80]!r} is not a dotted name")
    for symbol in (graph.get("range_constraints") or {}):
        if not _SYMBOL.fullmatch(str(symbol)):
            problems.append(f"range constraint symbol {str(symbol)[:40]!r} is not a plain symbol")
    return problems


def audit_program(graph: Any, trusted: tuple[str, ...]) -> None:
    problems = program_problems(graph, trusted)
    if problems:
        shown = "\n".join(f"  - {p}" for p in sorted(set(problems))[:10])
        raise UntrustedContentError(
            f"Refusing the exported program stored in the artifact:\n{shown}\nBuilding a torch.export program runs "
            "parts of it as code, and modelsafe only writes plain operator graphs, so this one was crafted or "
            "tampered with. Nothing was built. Load the model from its class instead (program='class'), or "
            "re-export it from its source.", globals=[])


def read_program(source: "ComponentSource", data: Mapping[str, Any], options: "LoadOptions") -> dict[str, Any]:
    """Parse and audit the stored program's JSON (imports nothing)."""
    try:
        graph = json.loads(source.read(data["program"]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UntrustedContentError(f"The stored exported program is not JSON ({exc}); the artifact was damaged or "
                                    "tampered with. Re-export the model.", globals=[]) from None
    audit_program(graph, tuple(options.trusted))
    return graph


def load_program(source: "ComponentSource", data: Mapping[str, Any], graph: dict[str, Any], device: str) -> Any:
    """The stored program as a module (``GraphModule``) on ``device``."""
    weights = read_tensors(source, data["weights"])
    constants = read_tensors(source, data["constants"])
    module = build_program(graph, weights, constants, set(data.get("parameters", ())))
    return module.to(device) if device != "cpu" else module


def build_program(graph: dict[str, Any], weights: Mapping[str, Any], constants: Mapping[str, Any],
                  parameters: set[str]) -> Any:
    """Deserialize an audited program JSON with its tensors, and return ``program.module()``."""
    import torch
    from torch._export.serde import schema
    from torch._export.serde.serialize import (
        ExportedProgramDeserializer,
        _dict_to_dataclass,
    )

    wrapped: dict[int, Any] = {}
    state: dict[str, Any] = {}
    for name, tensor in weights.items():
        if name in parameters:
            key = id(tensor)
            if key not in wrapped:
                wrapped[key] = torch.nn.Parameter(tensor.detach(), requires_grad=False)
            state[name] = wrapped[key]
        else:
            state[name] = tensor
    serialized = _dict_to_dataclass(schema.ExportedProgram, graph)
    program = ExportedProgramDeserializer().deserialize(serialized, state, dict(constants), None)
    return program.module()
