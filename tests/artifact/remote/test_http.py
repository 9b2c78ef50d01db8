"""http(s):// is a read-only store: an artifact served by a plain web server (with byte ranges, as static file
servers and CDNs serve files) inspects, loads, verifies and scans; a changed byte is an IntegrityError."""

from __future__ import annotations

import re
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

import modelsafe as ms


class _Ranges(SimpleHTTPRequestHandler):
    """The standard library's file server, plus ``Range: bytes=a-b`` (and a count of the bytes it sent)."""

    sent = 0

    def log_message(self, *args):  # quiet
        pass

    def send_head(self):
        found = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        path = self.translate_path(self.path)
        if found is None or not path.endswith(".msafe"):
            return super().send_head()
        data = open(path, "rb").read()
        start, end = int(found[1]), int(found[2] or len(data) - 1)
        body = data[start:min(end, len(data) - 1) + 1]
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{start + len(body) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        type(self).sent += len(body)
        import io

        return io.BytesIO(body)


@pytest.fixture
def served(tmp_path):
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(5000, 4))  # a forest of a few MB: more than the reads inspect makes
    model = RandomForestClassifier(60, random_state=0).fit(X, X[:, 0] + rng.normal(size=5000) > 0)
    ms.save(model, tmp_path / "forest.msafe", sample=X[:8])
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Ranges, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", tmp_path, model, X
    server.shutdown()
    server.server_close()


def test_an_artifact_on_a_web_server_loads_verifies_and_scans(served):
    base, folder, model, X = served
    url = f"{base}/forest.msafe"
    size = (folder / "forest.msafe").stat().st_size
    _Ranges.sent = 0
    assert ms.inspect(url).flavor == ms.inspect(folder / "forest.msafe").flavor
    assert _Ranges.sent < min(size, 1 << 20)  # the end records and the manifest, not the file
    bundle = ms.load(url)
    assert (bundle.predict(X) == model.predict(X)).all() and bundle.verify().ok
    assert ms.check_env(url).ok
    assert ms.scan(url).ok


def test_a_changed_byte_on_the_web_server_is_an_integrity_error(served):
    base, folder, _, _ = served
    path = folder / "forest.msafe"
    data = bytearray(path.read_bytes())
    data[data.index(b"sklearn")] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ms.IntegrityError):
        ms.load(f"{base}/forest.msafe")
