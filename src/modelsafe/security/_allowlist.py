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

import functools
import importlib
import sys
from typing import Collection

#: Exact constructors that are safe to call while unpickling.
INVOKE_SAFE: frozenset[str] = frozenset(
    [f"builtins.{n}" for n in ("object", "set", "frozenset", "slice", "complex", "bytearray", "bytes",
                                "int", "float", "str", "list", "dict", "tuple", "bool", "range")]
    + ["copyreg._reconstructor", "copyreg.__newobj__", "copyreg.__newobj_ex__",
       "collections.OrderedDict", "collections.defaultdict", "collections.deque", "collections.Counter",
       "functools.partial", "datetime.datetime", "datetime.date", "datetime.time", "datetime.timedelta",
       "datetime.timezone", "decimal.Decimal", "fractions.Fraction", "_codecs.encode", "uuid.UUID",
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

#: Exact functions that may be referenced as values (they run only when the model runs).
VALUE_SAFE: frozenset[str] = frozenset(["scipy._lib.array_api_compat.numpy._aliases.asarray"]) | TORCH_VALUES

#: Packages whose *classes* may be constructed while unpickling.
CLASS_PACKAGES: tuple[str, ...] = ("sklearn.", "scipy.sparse.", "imblearn.")
#: Submodules excluded from CLASS_PACKAGES: test utilities and vendored code can touch files or run code.
CLASS_EXCLUDED: tuple[str, ...] = ("sklearn.utils._testing", "sklearn.externals", "sklearn.datasets",
                                   "sklearn.utils._show_versions", "scipy.sparse.linalg._dsolve")
#: Namespaces whose functions and types may be *referenced* (not invoked) as values.
VALUE_PACKAGES: tuple[str, ...] = ("numpy", "scipy.special", "scipy.stats", "math", "sklearn", "operator")

#: Known-dangerous names (the scanner's "dangerous" severity). Matched by module prefix or exact name.
DANGEROUS_MODULES: tuple[str, ...] = (
    "os", "posix", "nt", "subprocess", "sys", "importlib", "runpy", "pty", "socket", "shutil", "ctypes",
    "code", "codeop", "webbrowser", "marshal", "pickle", "_pickle", "cloudpickle", "dill", "joblib",
    "multiprocessing", "asyncio", "signal", "types", "io", "pathlib", "tempfile", "urllib", "http",
    "requests", "ftplib", "smtplib", "telnetlib", "platform", "pdb", "timeit", "trace", "profile", "cProfile",
    "idlelib", "lib2to3", "distutils", "setuptools", "pip", "site", "venv", "zipimport", "tarfile", "zipfile",
    "numpy.testing", "numpy.f2py", "numpy.distutils", "numpy.ctypeslib", "torch.hub", "torch._C", "torch.jit",
    "sklearn.utils._testing", "builtins.eval", "builtins.exec", "builtins.compile", "builtins.getattr",
    "builtins.setattr", "builtins.delattr", "builtins.__import__", "builtins.open", "builtins.input",
    "builtins.breakpoint", "builtins.globals", "builtins.locals", "builtins.vars", "builtins.help",
    "builtins.exit", "builtins.quit", "builtins.memoryview", "builtins.type", "operator.attrgetter",
    "operator.methodcaller", "numpy.load", "numpy.save", "numpy.loadtxt", "numpy.fromfile", "numpy.memmap",
    "torch.load", "torch.save", "functools.reduce", "keras.src.layers.core.lambda_layer",
)
#: Never allowed even by VALUE_PACKAGES (they reach files or code through a value).
_NEVER_VALUES = ("operator.attrgetter", "operator.methodcaller", "operator.itemgetter")


def _matches(qualname: str, prefixes: Collection[str]) -> bool:
    return any(qualname == p or qualname.startswith(p + ".") for p in prefixes)


#: Attribute names that, reached through a dotted chain (``numpy.lib.npyio.os.system``), run code.
_DANGEROUS_ATTRIBUTES = frozenset(["system", "popen", "spawnl", "spawnv", "execv", "execve", "execl", "fork",
                                   "eval", "exec", "compile", "getattr", "setattr", "open", "import_module",
                                   "check_output", "check_call", "Popen", "run_path", "run_module", "loads"])


def _attribute_chain(module: str, name: str) -> bool:
    """A dunder anywhere in the path (``numpy.__builtins__``, ``x.__class__.__subclasses__``), or a
    dotted name that walks into a dangerous module or function (``npyio.os.system``)."""
    parts = module.split(".")[1:] + name.split(".")  # the module's root may be __main__, __torch__
    if any(part.startswith("__") and part.endswith("__") and len(part) > 4 for part in parts):
        return True
    if "." not in name:
        return False
    inner = name.split(".")
    return inner[-1] in _DANGEROUS_ATTRIBUTES or any(_matches(part, DANGEROUS_MODULES) for part in inner)


def canonical(module: str, name: str) -> tuple[str, str]:
    """The Python 3 name of a Python 2 spelling (``copy_reg._reconstructor``, ``__builtin__.eval``,
    ``commands.Popen``), as pickle maps it below protocol 3; other names unchanged. Modules that
    also exist in Python 3 are left alone (a stream at protocol 3+ would resolve them as written)."""
    import _compat_pickle

    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    if module in _compat_pickle.IMPORT_MAPPING and module.split(".")[0] not in sys.stdlib_module_names:
        return _compat_pickle.IMPORT_MAPPING[module], name
    return module, name


@functools.lru_cache(maxsize=8192)
def classify(module: str, name: str) -> str:
    """"safe" (on the allowlist, judged by name alone), "dangerous", or "unknown". Imports nothing."""
    module, name = canonical(module, name)
    qualname = f"{module}.{name}"
    if _matches(qualname, DANGEROUS_MODULES) or _matches(module, DANGEROUS_MODULES) or module.startswith("__builtin"):
        return "dangerous"
    if qualname in INVOKE_SAFE or qualname in VALUE_SAFE:
        return "safe"
    if _attribute_chain(module, name):
        return "dangerous"
    if "." in name or name.startswith("__"):
        return "unknown"
    if module.startswith(CLASS_PACKAGES) and not _matches(module, CLASS_EXCLUDED) and name[:1].isupper():
        return "safe"
    if _matches(module, VALUE_PACKAGES) and qualname not in _NEVER_VALUES:
        return "safe"
    return "unknown"


@functools.lru_cache(maxsize=8192)
def verdict(module: str, name: str, *, invoked: bool) -> str:
    """The scanner's static judgement of one global: "safe", "dangerous" or "unknown".

    Stricter than :func:`classify` for globals the stream *calls*: only exact invoke-safe
    constructors and classes of :data:`CLASS_PACKAGES` pass (as in :func:`is_allowed`, which
    additionally checks, by importing the trusted package, that the name really is a class).
    Imports nothing.
    """
    kind = classify(module, name)
    if kind != "safe" or not invoked:
        return kind
    module, name = canonical(module, name)
    qualname = f"{module}.{name}"
    if qualname in INVOKE_SAFE:
        return "safe"
    if module.startswith(CLASS_PACKAGES) and not _matches(module, CLASS_EXCLUDED) and name[:1].isupper():
        return "safe"
    return "unknown"


def _trusted(qualname: str, module: str, trusted: Collection[str], allowed_modules: Collection[str]) -> bool:
    if qualname in trusted or f"{module}.*" in trusted:
        return True
    return module in allowed_modules


def _resolve_installed(module: str, name: str) -> object | None:
    """Look a name up in an installed trusted package (imports that package's module)."""
    root = module.split(".")[0]
    if root not in ("sklearn", "scipy", "numpy", "imblearn", "math", "operator"):
        return None
    try:
        mod = sys.modules.get(module) or importlib.import_module(module)
    except ImportError:
        return None
    return getattr(mod, name, None)


def is_allowed(module: str, name: str, *, invoked: bool, trusted: Collection[str] = (),
               allowed_modules: Collection[str] = ()) -> bool:
    """Whether the restricted unpickler may resolve ``module.name`` (see the module docstring)."""
    if _trusted(f"{module}.{name}", module, trusted, allowed_modules):
        return True
    module, name = canonical(module, name)
    qualname = f"{module}.{name}"
    if _trusted(qualname, module, trusted, allowed_modules):
        return True
    if qualname in INVOKE_SAFE or (qualname in VALUE_SAFE and not invoked):
        return True
    if classify(module, name) != "safe" or "." in name:
        return False
    if module.startswith(CLASS_PACKAGES) and not _matches(module, CLASS_EXCLUDED):
        obj = _resolve_installed(module, name)
        if isinstance(obj, type):
            return True
        if invoked:
            return False
    if invoked:
        return False
    obj = _resolve_installed(module, name)
    return obj is not None and (callable(obj) or isinstance(obj, type))
