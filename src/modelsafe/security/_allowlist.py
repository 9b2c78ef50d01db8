"""What a pickle may name: the allowlist shared by the restricted unpickler and the scanner.

Two questions are asked of every ``module.name`` a stream references:

* **Invoked while unpickling** (``REDUCE``, ``NEWOBJ``, ``BUILD``...): it runs during
  the load, so it must be a known-safe constructor: an exact entry of
  :data:`INVOKE_SAFE`, or a *class* (never a function) defined in a trusted package
  (:data:`CLASS_PACKAGES`), outside the excluded submodules.
* **Only referenced as a value** (``FunctionTransformer(func=np.log1p)``): it does not
  run during the load but may run later, at ``predict``. It must be invoke-safe, or a
  function/type of a numeric namespace (:data:`VALUE_PACKAGES`), and never dangerous.

Anything the caller lists in ``trusted`` ("module.name", or "module.*" for a whole
module) is accepted; ``allowed_modules`` accepts bundled code the caller trusts.
"""

from __future__ import annotations

import builtins
import functools
import importlib
import sys
from typing import Collection

from modelsafe.security._names import DANGEROUS, DANGEROUS_ATTRIBUTES, matches, resolve

#: Exact constructors that are safe to call while unpickling.
INVOKE_SAFE: frozenset[str] = frozenset(
    [f"builtins.{n}" for n in ("object", "set", "frozenset", "slice", "complex", "bytearray", "bytes",
                                "int", "float", "str", "list", "dict", "tuple", "bool", "range")]
    + ["copyreg._reconstructor", "copyreg.__newobj__", "copyreg.__newobj_ex__",
       "collections.OrderedDict", "collections.defaultdict", "collections.deque", "collections.Counter",
       "functools.partial", "datetime.datetime", "datetime.date", "datetime.time", "datetime.timedelta",
       "datetime.timezone", "decimal.Decimal", "fractions.Fraction", "codecs.encode", "uuid.UUID",
       "logging.getLogger",
       "pathlib.PosixPath", "pathlib.PurePosixPath", "pathlib.WindowsPath", "pathlib.PureWindowsPath"]
    + [f"{np}.{n}" for np in ("numpy.core.multiarray", "numpy._core.multiarray")
       for n in ("_reconstruct", "scalar")]
    + [f"{np}._frombuffer" for np in ("numpy.core.numeric", "numpy._core.numeric")]
    + ["numpy.ndarray", "numpy.dtype", "numpy.ma.core._mareconstruct", "numpy.ma.core.MaskedArray",
       "numpy.random._pickle.__randomstate_ctor", "numpy.random._pickle.__bit_generator_ctor",
       "numpy.random._pickle.__generator_ctor", "numpy.random.mtrand.RandomState",
       "numpy.random._generator.Generator", "numpy.random._mt19937.MT19937", "numpy.random._pcg64.PCG64",
       "numpy.random._pcg64.PCG64DXSM", "numpy.random._philox.Philox", "numpy.random._sfc64.SFC64",
       "numpy.random.bit_generator.SeedSequence", "numpy.random.bit_generator.__pyx_unpickle_SeedSequence"]
    # Cython helpers of scikit-learn's binary trees and distance metrics: `newObj(cls)` is
    # `cls.__new__(cls)`; the class it receives is itself audited.
    + ["sklearn.neighbors._kd_tree.newObj", "sklearn.neighbors._ball_tree.newObj",
       "sklearn.metrics._dist_metrics.newObj", "scipy.interpolate._bsplines.BSpline"]
    # scipy.sparse containers (module names differ between scipy versions).
    + [f"scipy.sparse.{sep}{fmt}.{fmt}_{kind}" for sep in ("_", "") for fmt in
       ("csr", "csc", "coo", "bsr", "dia", "dok", "lil") for kind in ("matrix", "array")]
)

#: What PyTorch checkpoints (``torch.save``) reference: tensor rebuild helpers, storage and
#: tensor types, sizes, devices, dtypes. The same set ``torch.load(weights_only=True)`` accepts;
#: tensors arrive through persistent ids, which only a caller's ``persistent_load`` resolves.
_TORCH_TYPES = ("BFloat16", "Bool", "Byte", "Char", "ComplexDouble", "ComplexFloat", "Double", "Float", "Half",
                "Int", "Long", "Short")
TORCH_SAFE: frozenset[str] = frozenset(
    [f"torch._utils._rebuild_{n}" for n in ("tensor", "tensor_v2", "tensor_v3", "parameter",
                                            "parameter_with_state", "qtensor", "sparse_tensor",
                                            "nested_tensor", "meta_tensor_no_storage", "wrapper_subclass",
                                            "device_tensor_from_cpu_tensor", "device_tensor_from_numpy")]
    + ["torch._tensor._rebuild_from_type_v2", "torch.serialization._get_layout", "torch.Size", "torch.device",
       "torch.Tensor", "torch.nn.parameter.Parameter", "torch.storage.TypedStorage", "torch.storage.UntypedStorage"]
    + [f"torch.{p}{t}{kind}" for p in ("", "cuda.") for t in _TORCH_TYPES for kind in ("Storage", "Tensor")]
    + [f"torch.Q{t}Storage" for t in ("Int32", "Int8", "UInt2x4", "UInt4x2", "UInt8")]
)
#: torch dtypes, layouts and quantization schemes, referenced as values.
TORCH_VALUES: frozenset[str] = frozenset(
    f"torch.{n}" for n in (
        "bfloat16", "bool", "complex32", "complex64", "complex128", "float16", "float32", "float64",
        "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "float8_e8m0fnu",
        "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "qint8", "qint32", "quint8",
        "quint4x2", "quint2x4", "strided", "sparse_coo", "sparse_csr", "sparse_csc", "sparse_bsr", "sparse_bsc",
        "_mkldnn", "per_tensor_affine", "per_channel_affine", "per_channel_affine_float_qparams",
        "per_tensor_symmetric", "per_channel_symmetric",
    )
)
INVOKE_SAFE = INVOKE_SAFE | TORCH_SAFE

#: Builtin exception classes: constructing one runs nothing (stored errors, warnings categories).
_EXCEPTIONS = frozenset(f"builtins.{n}" for n, v in vars(builtins).items()
                        if isinstance(v, type) and issubclass(v, BaseException) and n[:1].isupper())
INVOKE_SAFE = INVOKE_SAFE | _EXCEPTIONS
#: Builtins without side effects, referenced as values (``FunctionTransformer(func=len)``).
_PURE_BUILTINS = frozenset(f"builtins.{n}" for n in (
    "abs", "all", "any", "ascii", "bin", "bool", "callable", "chr", "classmethod", "complex", "dict", "divmod",
    "enumerate", "filter", "float", "format", "frozenset", "hash", "hex", "id", "int", "isinstance", "issubclass",
    "iter", "len", "list", "map", "max", "min", "next", "object", "oct", "ord", "pow", "print", "property",
    "range", "repr", "reversed", "round", "set", "slice", "sorted", "staticmethod", "str", "sum", "tuple", "zip",
    "bytes", "bytearray", "Ellipsis", "NotImplemented", "dir"))
#: ``from __future__`` features (``__future__.annotations`` is a plain record object).
_FUTURE = frozenset(f"__future__.{n}" for n in ("annotations", "division", "absolute_import", "print_function",
                                                 "unicode_literals", "generators", "nested_scopes",
                                                 "with_statement", "generator_stop", "barry_as_FLUFL"))
#: Exact functions that may be referenced as values (they run only when the model runs).
VALUE_SAFE: frozenset[str] = (frozenset(["scipy._lib.array_api_compat.numpy._aliases.asarray"]) | TORCH_VALUES
                              | _PURE_BUILTINS | _FUTURE | _EXCEPTIONS)

#: Packages whose *classes* may be constructed while unpickling (``torch.nn.modules``: the layers a
#: whole-module ``torch.save`` names; a layer's ``__setstate__`` only restores its attributes).
CLASS_PACKAGES: tuple[str, ...] = ("sklearn.", "scipy.sparse.", "imblearn.", "torch.nn.modules.")
#: Submodules excluded from CLASS_PACKAGES: test utilities and vendored code can touch files or run code.
CLASS_EXCLUDED: tuple[str, ...] = ("sklearn.utils._testing", "sklearn.externals", "sklearn.datasets",
                                   "sklearn.utils._show_versions", "scipy.sparse.linalg._dsolve")
#: Namespaces whose functions and types may be *referenced* (not invoked) as values.
VALUE_PACKAGES: tuple[str, ...] = ("numpy", "scipy.special", "scipy.stats", "math", "sklearn", "operator",
                                   "torch.nn.functional")
#: Cython's reconstructor of an extension type: ``__pyx_unpickle_<Type>(Type, checksum, state)``. Allowed for
#: scikit-learn types that are themselves allowed (every release pickles its Cython losses this way or by
#: ``__reduce__``): it rebuilds that type from its state after checking the layout checksum.
PYX_PREFIX = "__pyx_unpickle_"
_PYX_PACKAGES = ("sklearn.",)
#: Never allowed even by VALUE_PACKAGES (they reach files or code through a value).
_NEVER_VALUES = ("operator.attrgetter", "operator.methodcaller", "operator.itemgetter")
#: In-memory streams of the otherwise dangerous ``io`` module: not on the allowlist, but they reach no file.
_IN_MEMORY_IO = frozenset(["io.BytesIO", "io.StringIO"])
#: The roots whose installed modules :func:`is_allowed` may import to confirm a name is a class.
_RESOLVABLE_ROOTS = ("sklearn", "scipy", "numpy", "imblearn", "math", "operator", "torch")


def _attribute_chain(module: str, name: str) -> bool:
    """A dunder anywhere in the path (``numpy.__builtins__``, ``x.__class__.__subclasses__``), or a
    dotted name that walks into a dangerous module or function (``npyio.os.system``)."""
    parts = module.split(".")[1:] + name.split(".")  # the module's root may be __main__, __torch__
    if any(part.startswith("__") and part.endswith("__") and len(part) > 4 for part in parts):
        return True
    if "." not in name:
        return False
    inner = name.split(".")
    return inner[-1] in DANGEROUS_ATTRIBUTES or any(matches(part, DANGEROUS) for part in inner)


def canonical(module: str, name: str) -> tuple[str, str]:
    """The canonical spelling of a global (see :func:`._names.resolve`): Python 2 names as pickle maps
    them below protocol 3, C-module aliases, re-exports and module-attribute chains."""
    return resolve(module, name)


def _class_like(module: str, name: str) -> bool:
    """A class name (capitalized, possibly private: ``_BinMapper``; undotted) in a trusted package,
    outside the excluded submodules."""
    return (module.startswith(CLASS_PACKAGES) and not matches(module, CLASS_EXCLUDED)
            and name.lstrip("_")[:1].isupper() and "." not in name and not name.startswith("__"))


def pyx_type(module: str, name: str) -> str | None:
    """The extension type a ``__pyx_unpickle_<Type>`` reconstructor rebuilds, when that type is allowed."""
    if not name.startswith(PYX_PREFIX) or not module.startswith(_PYX_PACKAGES):
        return None
    target = name[len(PYX_PREFIX):]
    return target if _class_like(module, target) else None


@functools.lru_cache(maxsize=8192)
def classify(module: str, name: str) -> str:
    """"safe" (on the allowlist, judged by name alone), "dangerous", or "unknown". Imports nothing."""
    module, name = canonical(module, name)
    qualname = f"{module}.{name}"
    if qualname in INVOKE_SAFE or qualname in VALUE_SAFE:
        return "safe"
    if qualname in _IN_MEMORY_IO:
        return "unknown"
    if matches(qualname, DANGEROUS) or matches(module, DANGEROUS) or module.startswith("__builtin"):
        return "dangerous"
    if qualname.startswith("pandas.read_") or _attribute_chain(module, name):
        return "dangerous"
    if pyx_type(module, name):
        return "safe"
    if "." in name or name.startswith("__"):
        return "unknown"
    if _class_like(module, name):
        return "safe"
    if matches(module, VALUE_PACKAGES) and qualname not in _NEVER_VALUES:
        return "safe"
    return "unknown"


@functools.lru_cache(maxsize=8192)
def verdict(module: str, name: str, *, invoked: bool) -> str:
    """The scanner's static judgement of one global: "safe", "dangerous" or "unknown".

    Stricter than :func:`classify` for globals the stream *calls*: only exact invoke-safe
    constructors, classes of :data:`CLASS_PACKAGES` and their Cython reconstructors pass (as in
    :func:`is_allowed`, which additionally checks, by importing the trusted package, that the name
    really is a class). Imports nothing.
    """
    kind = classify(module, name)
    if kind != "safe" or not invoked:
        return kind
    module, name = canonical(module, name)
    if f"{module}.{name}" in INVOKE_SAFE or _class_like(module, name) or pyx_type(module, name):
        return "safe"
    return "unknown"


def _trusted(qualname: str, module: str, trusted: Collection[str], allowed_modules: Collection[str]) -> bool:
    if qualname in trusted or f"{module}.*" in trusted:
        return True
    return module in allowed_modules


_MISSING = object()


def _resolve_installed(module: str, name: str) -> object:
    """Look a name up in an installed trusted package (imports that package's module); ``_MISSING`` when
    the installed version has no such module or name, None when the package may not be imported."""
    if module.split(".")[0] not in _RESOLVABLE_ROOTS:
        return None
    try:
        mod = sys.modules.get(module) or importlib.import_module(module)
    except ImportError:
        return _MISSING
    return getattr(mod, name, _MISSING)


def is_allowed(module: str, name: str, *, invoked: bool, trusted: Collection[str] = (),
               allowed_modules: Collection[str] = ()) -> bool:
    """Whether the restricted unpickler may resolve ``module.name`` (see the module docstring).

    A trusted-package class (or its Cython reconstructor) that the installed version lacks is
    allowed by name: nothing can run from it, and the load then fails with the versions named
    (rather than a security refusal for what is a version difference).
    """
    if _trusted(f"{module}.{name}", module, trusted, allowed_modules):
        return True
    module, name = canonical(module, name)
    qualname = f"{module}.{name}"
    if _trusted(qualname, module, trusted, allowed_modules):
        return True
    if qualname in INVOKE_SAFE or (qualname in VALUE_SAFE and not invoked):
        return True
    if classify(module, name) != "safe":
        return False
    target = pyx_type(module, name)
    if target is not None or _class_like(module, name):
        obj = _resolve_installed(module, target or name)
        if target is not None and isinstance(obj, type):
            return callable(_resolve_installed(module, name)) or _resolve_installed(module, name) is _MISSING
        return obj is _MISSING or isinstance(obj, type)
    if invoked or "." in name:
        return False
    obj = _resolve_installed(module, name)
    return obj is not None and obj is not _MISSING and (callable(obj) or isinstance(obj, type))
