"""Generate the attack corpus in ``tests/security/corpus/`` (the files are committed).

Run: ``python tests/security/make_corpus.py``. Every file would run code (or hide
content) if loaded with the usual loader; nothing here ever loads one. Each payload, if
it ever ran, creates a file named ``MODELSAFE_CANARY_<name>`` in the current directory,
so tests run in an empty folder and assert that no canary appears.

``EXPECTED.json`` lists, per file, the finding kinds and subjects the scanner must report.
Torch files are written with ``torch.save`` of a malicious object (never loaded); the
Keras archives, tars and wrappers are written by hand.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import shutil
import struct
import subprocess
import zipfile
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "corpus"
CANARY = "MODELSAFE_CANARY_"
_EXPECTED: dict[str, dict[str, list[str]]] = {}
_FIXED_TIME = (2020, 1, 1, 0, 0, 0)


class Payload:
    """Pickles to ``target(*args)``: the classic ``__reduce__`` exploit."""

    def __init__(self, target, args):
        self.target, self.args = target, args

    def __reduce__(self):
        return self.target, self.args


def _system(name):
    return Payload(os.system, (f"touch {CANARY}{name}",))


def _eval(name):
    return Payload(eval, (f"open({CANARY + name!r}, 'w').close()",))


def _exec(name):
    return Payload(exec, (f"open({CANARY + name!r}, 'w').close()",))


def _popen(name):
    return Payload(subprocess.Popen, (["touch", f"{CANARY}{name}"],))


_ATTACKS = {"system": (_system, "os.system"), "eval": (_eval, "builtins.eval"),
            "exec": (_exec, "builtins.exec"), "popen": (_popen, "subprocess.Popen")}


def _write(name: str, data: bytes, kinds: list[str], subjects: list[str] = ()) -> None:
    (CORPUS / name).write_bytes(data)
    _EXPECTED[name] = {"kinds": sorted(set(kinds)), "subjects": sorted(set(subjects))}


def _zip(members: dict[str, bytes], *, compress: int = zipfile.ZIP_STORED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compress) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name, _FIXED_TIME), data)
    return out.getvalue()


def reduce_payloads() -> None:
    for attack, (make, subject) in _ATTACKS.items():
        for protocol in (0, 2, 4, 5):
            name = f"reduce_{attack}_p{protocol}.pkl"
            _write(name, pickle.dumps(make(name), protocol=protocol), ["dangerous-global"], [subject])


def attribute_chains() -> None:
    code = f"open({CANARY + 'getattr'!r}, 'w').close()".encode()
    # builtins.getattr(numpy.__builtins__, "get")("eval")(code), with protocol-2 opcodes.
    stream = (b"\x80\x02cbuiltins\ngetattr\ncnumpy\n__builtins__\nX\x03\x00\x00\x00get\x86R"
              b"X\x04\x00\x00\x00eval\x85R" + b"X" + struct.pack("<I", len(code)) + code + b"\x85R.")
    _write("getattr_numpy_builtins.pkl", stream, ["dangerous-global"], ["builtins.getattr", "numpy.__builtins__"])
    # Protocol 4 dotted qualname: find_class walks numpy -> __builtins__ -> get.
    stream = (b"\x80\x04\x8c\x05numpy\x8c\x10__builtins__.get\x93\x8c\x04eval\x85R"
              + b"\x8c" + bytes([len(code)]) + code + b"\x85R.")
    _write("dotted_builtins_chain.pkl", stream, ["dangerous-global"], ["numpy.__builtins__.get"])
    stream = b"\x80\x04\x8c\tnumpy.lib\x8c\x0fnpyio.os.system\x93\x8c\x05touch\x85R."
    _write("dotted_os_chain.pkl", stream, ["dangerous-global"], ["os.system"])
    inst = f"(S'touch {CANARY}inst'\nios\nsystem\n.".encode()
    _write("inst_opcode_p0.pkl", inst, ["dangerous-global"], ["os.system"])


def torch_files() -> None:
    import torch

    weights = {"weight": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    out = io.BytesIO()
    torch.save({**weights, "extra": _system("torch_zip")}, out)
    _write("torch_zip_payload.pt", out.getvalue(), ["dangerous-global"], ["os.system"])
    _write("pytorch_model.bin", out.getvalue(), ["dangerous-global"], ["os.system"])
    out = io.BytesIO()
    torch.save({**weights, "extra": _eval("torch_legacy")}, out, _use_new_zipfile_serialization=False)
    _write("torch_legacy_payload.pth", out.getvalue(), ["dangerous-global"], ["builtins.eval"])
    out = io.BytesIO()
    torch.save({"model": weights, "callback": _popen("torch_ckpt")}, out)
    _write("lightning.ckpt", out.getvalue(), ["dangerous-global"], ["subprocess.Popen"])
    _write("torch_tar_payload.pt", _legacy_tar(), ["dangerous-global"], ["os.system"])


def _legacy_tar() -> bytes:
    """torch's oldest format: a tar of sys_info, pickle, storages, tensors; the payload is in 'pickle'."""
    import torch

    storage_record = pickle.dumps(("0", "cpu", torch.FloatStorage), protocol=2)
    storages = (pickle.dumps(1, protocol=2) + storage_record + struct.pack("<q", 2) + struct.pack("<2f", 1.0, 2.0)
                + pickle.dumps([], protocol=2))
    tensors = (pickle.dumps(1, protocol=2) + pickle.dumps(("t0", "0", torch.FloatTensor), protocol=2)
               + struct.pack("<ii", 1, 0) + struct.pack("<q", 2) + struct.pack("<q", 1) + struct.pack("<q", 0))
    members = {"sys_info": pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2),
               "pickle": pickle.dumps({"weight": _system("torch_tar")}, protocol=2),
               "storages": storages, "tensors": tensors}
    from attacks import tar_bytes

    return tar_bytes(members)


def joblib_and_numpy() -> None:
    import joblib
    import numpy as np

    for name, payload, compress, subject in (
        ("payload.joblib", _exec("joblib"), 0, "builtins.exec"),
        ("payload_zlib.joblib", _system("joblib_zlib"), 3, "os.system"),
        ("payload_gzip.data", _eval("joblib_gzip"), ("gzip", 3), "builtins.eval"),
    ):
        path = CORPUS / name
        joblib.dump({"coef": np.arange(4.0), "hook": payload}, path, compress=compress)
        _write(name, path.read_bytes(), ["dangerous-global"], [subject])
    path = CORPUS / "object_array.joblib"
    joblib.dump({"coef": np.arange(4.0), "rows": np.array([1, _popen("joblib_objarray")], dtype=object)}, path)
    _write("object_array.joblib", path.read_bytes(), ["dangerous-global"], ["subprocess.Popen"])
    buf = io.BytesIO()
    np.save(buf, np.array([_system("npy"), 2], dtype=object), allow_pickle=True)
    _write("object_array.npy", buf.getvalue(), ["dangerous-global"], ["os.system"])
    _write("features.data", buf.getvalue(), ["dangerous-global"], ["os.system"])
    npz = io.BytesIO()
    np.savez(npz, weights=np.arange(3.0), meta=np.array([_eval("npz")], dtype=object))
    _write("object_array.npz", npz.getvalue(), ["dangerous-global"], ["builtins.eval"])


def wrappers_and_archives() -> None:
    evil = pickle.dumps(_system("wrapped"), protocol=4)
    cut = pickle.dumps(_system("truncated"), protocol=2)
    _write("truncated_after_payload.pkl", cut[: cut.index(b"R") + 1], ["dangerous-global", "incomplete"],
           ["os.system"])
    _write("model.ckpt", pickle.dumps(_exec("ckpt"), protocol=4), ["dangerous-global"], ["builtins.exec"])
    _write("model", pickle.dumps(_eval("noext"), protocol=2), ["dangerous-global"], ["builtins.eval"])
    _write("wrapped.7z", b"7z\xbc\xaf\x27\x1c\x00\x04" + evil, ["unknown-format"])
    _write("custom_wrapper.pt", b"MYMODEL\x00\x01" + evil, ["unknown-format"])
    _write("payload.pkl.gz", gzip.compress(evil, mtime=0), ["dangerous-global"], ["os.system"])
    inner = _zip({"model.pkl": pickle.dumps(_popen("nested"), protocol=5)})
    _write("nested.zip", _zip({"outer/inner.zip": _zip({"deep.zip": inner})}, compress=zipfile.ZIP_DEFLATED),
           ["dangerous-global"], ["subprocess.Popen"])
    _write("traversal.zip", _zip({"../../evil.pkl": evil, "ok.pkl": pickle.dumps([1, 2])}), ["unsafe-archive"])
    _write("trailing_payload.pkl", pickle.dumps({"w": [1.0]}, protocol=4) + evil, ["dangerous-global"],
           ["os.system"])
    ext = b"\x80\x02\x82\x01)R."  # EXT1 code 1: resolved through copyreg's registry
    _write("ext_opcode.pkl", ext, ["incomplete"])


def keras_archives() -> None:
    lam = {"class_name": "Lambda", "module": "keras.layers", "registered_name": None,
           "config": {"name": "shell", "function": {"class_name": "__lambda__", "config": {
               "code": "4wEAAAAAAAAAAAAAAAEAAAADAAAAQwAAAHMMAAAAdABqAWQBgwEBAHwAUwCpAk56B3RvdWNoIFhykAIAAA==",
               "defaults": None, "closure": None}}}}
    dense = {"class_name": "Dense", "module": "keras.layers", "registered_name": None,
             "config": {"name": "dense", "units": 1}}
    model = {"class_name": "Sequential", "module": "keras", "registered_name": None,
             "config": {"name": "sequential", "layers": [dense, lam]}}
    meta = json.dumps({"keras_version": "3.5.0", "date_saved": "2020-01-01@00:00:00"}).encode()
    _write("lambda_layer.keras", _zip({"metadata.json": meta, "config.json": json.dumps(model).encode()}),
           ["keras-code"], ["Lambda layer shell"])
    unsafe = {"class_name": "function", "module": "keras.config", "registered_name": "enable_unsafe_deserialization",
              "config": "enable_unsafe_deserialization"}
    model = {"class_name": "Sequential", "module": "keras", "registered_name": None,
             "config": {"name": "sequential", "layers": [dense], "build_config": unsafe}}
    _write("unsafe_mode.keras", _zip({"metadata.json": meta, "config.json": json.dumps(model).encode()}),
           ["keras-code"], ["keras.config.enable_unsafe_deserialization"])
    custom = {"class_name": "Runner", "module": "os", "registered_name": "system", "config": {}}
    model = {"class_name": "Functional", "module": "keras", "config": {"layers": [custom]}}
    _write("custom_module.keras", _zip({"metadata.json": meta, "config.json": json.dumps(model).encode()}),
           ["keras-code"], ["os.Runner"])
    _h5_lambda()


def _h5_lambda() -> None:
    import h5py

    config = {"class_name": "Sequential", "config": {"name": "seq", "layers": [
        {"class_name": "Lambda", "config": {"name": "shell", "function": ["4wEAAAAA", None, None],
                                            "function_type": "lambda", "module": "__main__"}}]}}
    path = CORPUS / "lambda_layer.h5"
    with h5py.File(path, "w", track_order=True) as h5:
        h5.attrs["model_config"] = json.dumps(config)
        h5.attrs["keras_version"] = "2.15.0"
        h5.attrs["backend"] = "tensorflow"
    _write("lambda_layer.h5", path.read_bytes(), ["keras-code"], ["Lambda layer shell"])


def tampered_artifact() -> None:
    """A real modelsafe artifact whose pickle stream was swapped for a payload."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    import modelsafe as ms

    X = np.arange(20.0).reshape(10, 2)
    y = (X[:, 0] > 8).astype(int)
    tmp = CORPUS / "_tmp.msafe"
    ms.save(LogisticRegression().fit(X, y), tmp, overwrite=True)
    with zipfile.ZipFile(tmp) as src:
        members = {i.filename: src.read(i) for i in src.infolist()}
    tmp.unlink()
    members["model/graph.pkl"] = pickle.dumps(_system("artifact"), protocol=5)
    _write("tampered.msafe", _zip(members), ["dangerous-global", "integrity"], ["os.system"])


def issue_21_classes() -> None:
    """Framing, doctor-vs-scan globals and aliases, compressed tars, embedded pickles, resource exhaustion."""
    import attacks

    for name, (data, kinds, subjects) in attacks.all_files().items():
        _write(name, data, kinds, subjects)
    kinds, subjects = attacks.savedmodel_writefile(CORPUS / "savedmodel_writefile")
    _EXPECTED["savedmodel_writefile"] = {"kinds": kinds, "subjects": subjects}


def main() -> None:
    if CORPUS.exists():
        shutil.rmtree(CORPUS)
    CORPUS.mkdir()
    issue_21_classes()
    reduce_payloads()
    attribute_chains()
    wrappers_and_archives()
    joblib_and_numpy()
    keras_archives()
    torch_files()
    tampered_artifact()
    (CORPUS / "EXPECTED.json").write_text(json.dumps(_EXPECTED, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(_EXPECTED)} files to {CORPUS}")


if __name__ == "__main__":
    main()
