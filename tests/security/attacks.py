"""Attack files of the classes issue 21 added, written by hand (``make_corpus.py`` calls each).

Each function returns ``{file name: (content bytes, finding kinds, subjects)}``. Payloads,
if they ever ran, would create ``MODELSAFE_CANARY_<name>`` in the current directory. The
SavedModel attack is a folder and is written by :func:`savedmodel_writefile`.
"""

from __future__ import annotations

import base64
import bz2
import gzip
import io
import lzma
import pickle
import struct
import tarfile
import zipfile
from pathlib import Path

CANARY = "MODELSAFE_CANARY_"
Files = dict[str, tuple[bytes, list[str], list[str]]]


def _reduce(module: str, name: str, arg: str) -> bytes:
    """``module.name(arg)`` at protocol 2, written with GLOBAL (the module as the payload spells it)."""
    text = arg.encode()
    return (b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\nX" + struct.pack("<I", len(text)) + text
            + b"\x85R.")


def _touch(name: str) -> str:
    return f"touch {CANARY}{name}"


def _system(name: str) -> bytes:
    return _reduce("posix", "system", _touch(name))


def _frame(body: bytes) -> bytes:
    return b"\x95" + struct.pack("<Q", len(body)) + body


def frames() -> Files:
    """Streams whose FRAME boundaries do not match their opcodes (CPython gh-154848)."""
    evil = b"0\x8c\x05posix\x8c\x06system\x93\x8c" + bytes([len(_touch("frame"))]) + _touch("frame").encode() + b"\x85R."
    # Read straight through, the string swallows the frame's end and a BINBYTES hides the payload: no global.
    # CPython <= 3.13.14 reading from io.BytesIO (torch.load does) drops the frame's rest: posix.system.
    n = 10
    after = b"x" * (n - 2) + b"C" + bytes([len(evil)]) + evil + b"00N."
    straddle = b"\x80\x04" + _frame(b"\x8c" + bytes([n]) + b"ab") + after
    # A GLOBAL whose module line runs past the frame's end.
    line = b"\x80\x04" + _frame(b"czz") + b"posix\nsystem\n)R."
    # A frame that claims 2**62 bytes around a complete stream.
    huge = b"\x80\x04\x95" + struct.pack("<Q", 1 << 62) + b"N."
    # STOP inside a frame that goes on: a second stream hides in the frame's rest.
    inside = b"\x80\x04" + _frame(b"N." + _system("frame_tail")) + b""
    torch_zip = _zip({"archive/data.pkl": straddle, "archive/version": b"3\n", "archive/byteorder": b"little"})
    return {
        "frame_straddle_string.pkl": (straddle, ["incomplete"], []),
        "frame_straddle_line.pkl": (line, ["incomplete"], []),
        "frame_claims_2e62_bytes.pkl": (huge, ["incomplete"], []),
        "frame_stop_inside.pkl": (inside, ["incomplete"], []),
        "torch_frame_straddle.pt": (torch_zip, ["incomplete"], []),
    }


#: Payloads ``doctor`` used to pass as "ok" with a warning (issue 21 §2), and aliases (§3).
_GLOBALS = {
    "collect_env_run": ("torch.utils.collect_env", "run", "torch.utils.collect_env.run"),
    "uuid_command": ("uuid", "_get_command_stdout", "uuid._get_command_stdout"),
    "pydoc_pipepager": ("pydoc", "pipepager", "pydoc.pipepager"),
    "ensurepip_run_pip": ("ensurepip", "_run_pip", "ensurepip._run_pip"),
    "pkgutil_resolve_name": ("pkgutil", "resolve_name", "pkgutil.resolve_name"),
    "ssl_certificate": ("ssl", "get_server_certificate", "ssl.get_server_certificate"),
    "logging_filehandler": ("logging", "FileHandler", "logging.FileHandler"),
    "io_fileio_c_alias": ("_io", "FileIO", "io.FileIO"),
    "operator_methodcaller_c_alias": ("_operator", "methodcaller", "operator.methodcaller"),
    "torch_serialization_load": ("torch.serialization", "load", "torch.load"),
    "nt_system": ("nt", "system", "os.system"),
    "posixsubprocess_fork_exec": ("_posixsubprocess", "fork_exec", "subprocess.fork_exec"),
    "npyio_load": ("numpy.lib.npyio", "load", "numpy.load"),
}


def globals_and_aliases() -> Files:
    out: Files = {}
    for label, (module, name, subject) in _GLOBALS.items():
        out[f"global_{label}.pkl"] = (_reduce(module, name, _touch(label)), ["dangerous-global"], [subject])
    # protocol 4: a module reached as an attribute of another (pathlib imports os).
    chain = (b"\x80\x04\x8c\x07pathlib\x8c\tos.system\x93\x8c" + bytes([len(_touch("chain"))])
             + _touch("chain").encode() + b"\x85R.")
    out["dotted_pathlib_os_system.pkl"] = (chain, ["dangerous-global"], ["os.system"])
    return out


def _zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0)), data)
    return out.getvalue()


def tar_bytes(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def archives() -> Files:
    """Compressed tars (each crashed the scan), a zip holding one, and pickles hidden in values."""
    tar = tar_bytes({"model/weights.pkl": pickle.dumps([1.0, 2.0]), "model/extra.pkl": _system("tar")})
    expected = (["dangerous-global"], ["os.system"])
    inner = _system("embedded")
    return {
        "payload.tar.gz": (gzip.compress(tar, mtime=0), *expected),
        "payload.tgz": (gzip.compress(tar, mtime=0), *expected),
        "payload.tar.bz2": (bz2.compress(tar), *expected),
        "payload.tar.xz": (lzma.compress(tar), *expected),
        "zip_holding_tgz.zip": (_zip({"bundle/model.tar.gz": gzip.compress(tar, mtime=0)}), *expected),
        "embedded_raw.pkl": (pickle.dumps({"weights": [1.0], "blob": inner}, protocol=4), *expected),
        "embedded_base64.pkl": (pickle.dumps({"blob": base64.b64encode(inner).decode()}, protocol=4), *expected),
        "embedded_hex.pkl": (pickle.dumps({"blob": inner.hex()}, protocol=2), *expected),
    }


def resource_exhaustion() -> Files:
    """Small files that describe huge structures ("billion laughs") or a huge memo."""
    # Level 0: an empty list; level k: a list holding level k-1 ten times, through the memo.
    laughs = bytearray(b"\x80\x04]\x94")
    for level in range(1, 12):
        laughs += b"(" + b"h" + bytes([level - 1]) * 1 + (b"h" + bytes([level - 1])) * 9 + b"l\x94"
    laughs += b"."
    # Nested tuples used as a dict key: building the dict hashes 2**40 tuples.
    hashes = bytearray(b"\x80\x04)\x94")
    for level in range(1, 41):
        hashes += b"h" + bytes([level - 1]) + b"h" + bytes([level - 1]) + b"\x86\x94"
    hashes += b"}h" + bytes([40]) + b"N\x73."
    memo = b"\x80\x02Nr\xff\xff\xff\x7f."  # LONG_BINPUT 2**31 - 1: a memo table of 2**32 entries
    return {
        "billion_laughs_list.pkl": (bytes(laughs), ["denial-of-service"], []),
        "tuple_hash_bomb.pkl": (bytes(hashes), ["denial-of-service"], []),
        "memo_index_bomb.pkl": (memo, ["denial-of-service"], []),
    }


def savedmodel_writefile(folder: Path) -> tuple[list[str], list[str]]:
    """A SavedModel whose serving function writes a file (``scan`` used to say "not analysed")."""
    import tensorflow as tf

    class Writer(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def __call__(self, x):
            tf.io.write_file(CANARY + "savedmodel", tf.strings.as_string(tf.reduce_sum(x)))
            return {"y": x * 2.0}

    tf.saved_model.save(Writer(), str(folder))
    return ["graph-op"], ["WriteFile"]


def all_files() -> Files:
    return {**frames(), **globals_and_aliases(), **archives(), **resource_exhaustion()}
