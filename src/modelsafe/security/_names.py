"""Canonical names for the globals a pickle names, and the names known to be dangerous.

A pickle names a global as ``module`` + ``qualified name``, and unpickling imports
``module`` and walks the name's dotted parts with ``getattr``. The same object is
reachable under many spellings: the C module behind a public one (``_io.FileIO`` is
``io.FileIO``, ``posix.system`` is ``os.system``), a re-export (``torch.serialization.load``
is ``torch.load``), a module reached as an attribute of another one (``pathlib`` +
``os.system``), or a Python 2 name (``__builtin__.eval``). :func:`resolve` maps each
spelling to one canonical name, from the tables below and without importing anything,
so that every spelling gets the same verdict.
"""

from __future__ import annotations

import sys

#: C (or pure-Python twin) modules -> the public module that re-exports them.
MODULE_ALIASES: dict[str, str] = {
    "posix": "os", "nt": "os", "_io": "io", "_pyio": "io", "_operator": "operator", "_pickle": "pickle",
    "_compat_pickle": "pickle", "_socket": "socket", "_ssl": "ssl", "_functools": "functools",
    "_collections": "collections", "_collections_abc": "collections.abc", "_codecs": "codecs",
    "_signal": "signal", "_sqlite3": "sqlite3", "_ctypes": "ctypes", "_json": "json", "_weakref": "weakref",
    "_frozen_importlib": "importlib._bootstrap", "_frozen_importlib_external": "importlib._bootstrap_external",
    "_imp": "importlib", "_bz2": "bz2", "_lzma": "lzma", "_random": "random", "_struct": "struct",
    "_datetime": "datetime", "_pydatetime": "datetime", "_decimal": "decimal", "_pydecimal": "decimal",
    "_heapq": "heapq", "_bisect": "bisect", "_csv": "csv", "_elementtree": "xml.etree.ElementTree",
    "_multiprocessing": "multiprocessing", "_asyncio": "asyncio", "_contextvars": "contextvars",
    "_abc": "abc", "_locale": "locale", "_stat": "stat", "_warnings": "warnings", "_string": "string",
    "_posixsubprocess": "subprocess", "_winapi": "subprocess", "_sre": "re", "_thread": "threading",
    "_tracemalloc": "tracemalloc", "_osx_support": "os", "_sitebuiltins": "site",
    "numpy.lib._npyio_impl": "numpy", "numpy.lib.npyio": "numpy",
}
#: Re-exported names: ``module.name`` -> the canonical ``module.name`` (the public spelling).
RE_EXPORTS: dict[str, str] = {
    "torch.serialization.load": "torch.load", "torch.serialization.save": "torch.save",
    "torch.functional.load": "torch.load", "io.open": "builtins.open",
    "numpy.core.multiarray.fromfile": "numpy.fromfile", "numpy._core.multiarray.fromfile": "numpy.fromfile",
    "numpy.core.records.fromfile": "numpy.fromfile", "numpy.lib.format.read_array": "numpy.lib.format.read_array",
    "joblib.numpy_pickle.load": "joblib.load", "pandas.io.pickle.read_pickle": "pandas.read_pickle",
}
#: Names modules are commonly imported as (``numpy.lib.npyio`` + ``np.load``).
IMPORT_ALIASES: dict[str, str] = {"np": "numpy", "pd": "pandas", "tf": "tensorflow", "sp": "scipy", "th": "torch"}
#: Packages a dotted chain may reach (besides the standard library): ``sklearn.utils`` + ``np.load``.
_CHAIN_ROOTS = frozenset(sys.stdlib_module_names) | {"numpy", "torch", "sklearn", "scipy", "pandas", "joblib", "dill",
                                                      "cloudpickle", "keras", "tensorflow", "builtins"}

#: Known-dangerous names: they run commands, evaluate code, import modules, or reach files,
#: the network or the interpreter. Matched as a module prefix or an exact canonical name.
DANGEROUS: tuple[str, ...] = (
    # the interpreter, processes, code
    "os", "sys", "subprocess", "importlib", "runpy", "pty", "code", "codeop", "marshal", "pickle", "cloudpickle",
    "dill", "joblib", "multiprocessing", "concurrent", "asyncio", "signal", "types", "ctypes", "cffi", "threading",
    "atexit", "pdb", "bdb", "timeit", "trace", "profile", "cProfile", "pstats", "idlelib",
    "lib2to3", "distutils", "setuptools", "pip", "ensurepip", "venv", "site", "zipimport", "imp",
    "pkgutil", "compileall", "py_compile", "pydoc", "mailcap", "pipes", "commands", "popen2", "platform",
    "resource", "fcntl", "termios", "mmap", "faulthandler", "tracemalloc", "sched", "copyreg.add_extension",
    "builtins.eval", "builtins.exec", "builtins.compile", "builtins.getattr", "builtins.setattr",
    "builtins.delattr", "builtins.__import__", "builtins.open", "builtins.input", "builtins.breakpoint",
    "builtins.globals", "builtins.locals", "builtins.vars", "builtins.help", "builtins.exit", "builtins.quit",
    "builtins.memoryview", "builtins.type",
    "operator.attrgetter", "operator.methodcaller", "functools.reduce", "uuid._get_command_stdout",
    "uuid._popen", "codecs.open", "codecs.EncodedFile",
    # files and the network
    "io", "pathlib", "tempfile", "shutil", "glob", "fileinput", "linecache", "filecmp", "tarfile", "zipfile",
    "shelve", "dbm", "sqlite3", "socket", "socketserver", "ssl", "select", "selectors", "urllib", "http",
    "requests", "httpx", "aiohttp", "ftplib", "poplib", "imaplib", "nntplib", "smtplib", "smtpd", "telnetlib",
    "xmlrpc", "wsgiref", "cgi", "cgitb", "webbrowser", "antigravity", "turtle", "tkinter",
    "logging.FileHandler", "logging.handlers", "logging.config", "logging.basicConfig",
    # frameworks: their loaders, file I/O, code generation
    "numpy.testing", "numpy.f2py", "numpy.distutils", "numpy.ctypeslib", "numpy.load", "numpy.save",
    "numpy.savez", "numpy.savez_compressed", "numpy.savetxt", "numpy.loadtxt", "numpy.genfromtxt",
    "numpy.fromregex", "numpy.fromfile", "numpy.memmap", "numpy.DataSource", "numpy.lib.format",
    "numpy.lib._datasource", "torch.load", "torch.save", "torch.hub", "torch._C", "torch.jit", "torch.ops",
    "torch._ops", "torch.classes", "torch.utils.collect_env", "torch.utils.cpp_extension",
    "torch.utils.bottleneck", "torch.distributed", "torch.multiprocessing", "torch.package", "torch.fx",
    "torch._dynamo", "torch._inductor", "torch.compiler", "torch.storage._load_from_bytes",
    "torch.serialization._load", "torch.serialization._legacy_load", "torch.serialization.load",
    "pandas.io", "pandas.read_pickle", "scipy.io", "scipy.weave", "sklearn.utils._testing", "sklearn.datasets",
    "keras.src.layers.core.lambda_layer", "keras.saving", "keras.models.load_model", "keras.utils.get_file",
    "keras.src.saving", "tensorflow.io", "tensorflow.python.lib.io", "tensorflow.keras.models.load_model",
)
#: Attribute names that, reached through a dotted chain (``numpy.lib.npyio.os.system``), run code.
DANGEROUS_ATTRIBUTES = frozenset(["system", "popen", "spawnl", "spawnv", "execv", "execve", "execl", "fork",
                                  "eval", "exec", "compile", "getattr", "setattr", "open", "import_module",
                                  "check_output", "check_call", "Popen", "run_path", "run_module", "loads",
                                  "load", "tofile", "dump", "dumps", "fromfile", "read_pickle", "remove",
                                  "unlink", "rmtree", "rename", "write_text", "write_bytes", "urlopen"])


def matches(qualname: str, prefixes: tuple[str, ...] | frozenset[str]) -> bool:
    return any(qualname == p or qualname.startswith(p + ".") for p in prefixes)


def resolve(module: str, name: str) -> tuple[str, str]:
    """The canonical ``(module, name)`` of a global, without importing anything."""
    import _compat_pickle

    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING and module.split(".")[0] not in sys.stdlib_module_names:
        module = _compat_pickle.IMPORT_MAPPING[module]
    parts = name.split(".")
    if len(parts) > 1:  # module + "os.system": a module reached as an attribute of another one
        for i, part in enumerate(parts[:-1]):
            root = IMPORT_ALIASES.get(part, part)
            if root in _CHAIN_ROOTS and not part.startswith("__"):
                module, name = ".".join([root, *parts[i + 1 : -1]]), parts[-1]
                break
    module = _alias(module)
    qualname = RE_EXPORTS.get(f"{module}.{name}")
    if qualname is not None:
        module, _, name = qualname.rpartition(".")
    return module, name


def _alias(module: str) -> str:
    """``_io`` -> ``io``; ``posixpath.x`` stays a module path with its alias applied to the root."""
    if module in MODULE_ALIASES:
        return MODULE_ALIASES[module]
    root, dot, rest = module.partition(".")
    if root in MODULE_ALIASES and dot:
        return f"{MODULE_ALIASES[root]}.{rest}"
    return module
