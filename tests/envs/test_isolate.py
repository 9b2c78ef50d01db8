"""load(isolate=...): the model in a worker process inside its recreated environment, from this one and from .venv-old."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import modelsafe as ms
from modelsafe.checks.environment import EnvironmentWarning, Level
from modelsafe.envs.isolated import IsolatedBundle

from .conftest import run


@pytest.fixture(scope="module")
def isolated(saved_in_old, old_env):
    bundle = ms.load(saved_in_old / "pipeline.msafe", isolate=True)
    yield bundle
    bundle.close()


def _gone(pid: int, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split()[2]
        except FileNotFoundError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def test_isolated_predicts_exactly_what_the_old_environment_predicted_on_100k_rows(isolated, saved_in_old, old_rows):
    assert isinstance(isolated, ms.Bundle) and isinstance(isolated, IsolatedBundle)
    assert len(old_rows) == 100_000
    np.testing.assert_array_equal(isolated.predict(old_rows), np.load(saved_in_old / "pipeline_predict.npy"))
    np.testing.assert_array_equal(isolated.predict_proba(old_rows), np.load(saved_in_old / "pipeline_proba.npy"))
    assert isolated.env_report.ok and {d.level for d in isolated.env_report.differences} == {Level.SAME}
    assert isolated.verify().ok and isolated.verify().checks


def test_the_recorded_outputs_match_while_the_same_model_here_is_refused(saved_in_old, old_rows, isolated):
    with pytest.raises(ms.EnvironmentMismatchError):
        ms.load(saved_in_old / "pipeline.msafe", env="strict")
    strict = ms.load(saved_in_old / "pipeline.msafe", isolate=True, env="strict")  # strict holds in its environment
    try:
        np.testing.assert_array_equal(strict.predict(old_rows.iloc[:1000]), isolated.predict(old_rows.iloc[:1000]))
    finally:
        strict.close()


def test_the_input_guard_runs_in_this_process(isolated, old_rows):
    pid = isolated.worker_pid
    with pytest.raises(ms.SchemaError) as caught:
        isolated.predict(old_rows.drop(columns="age").iloc[:10])
    assert caught.value.column == "age"
    assert not hasattr(caught.value, "remote_traceback")  # raised here, not rebuilt from the worker's
    shuffled = old_rows.iloc[:50][["city", "age", "income"]].assign(extra=1.0)  # realigned by name; extra warned
    with pytest.warns(UserWarning, match="extra"):
        got = isolated.predict(shuffled)
    np.testing.assert_array_equal(got, isolated.predict(old_rows.iloc[:50]))
    assert isolated.worker_pid == pid


def test_the_model_is_a_proxy_of_data_attributes(isolated):
    assert list(isolated.model.classes_) == [0, 1]
    assert isolated.model.n_features_in_ == 3
    assert hasattr(isolated, "predict_proba") and hasattr(isolated, "decision_function")
    assert not hasattr(isolated, "transform")
    assert getattr(isolated.model, "no_such_attribute", None) is None
    with pytest.raises(ms.IsolatedWorkerError, match="is a method"):
        isolated.model.predict  # noqa: B018 - the attribute access is the test
    with pytest.raises(ms.IsolatedWorkerError):
        isolated.model = None
    assert "isolated in" in repr(isolated) and "Pipeline" in repr(isolated.model)


def test_a_worker_killed_mid_call_gives_a_clear_error_and_the_next_call_restarts_it(sleeper, tmp_path):
    bundle = ms.load(sleeper, isolate=True, trust_code=True)
    try:
        first = bundle.worker_pid
        np.testing.assert_array_equal(bundle.predict(np.array([[0.0, 1.0], [2.0, 3.0]])), [0.0, 4.0])
        failure: list[BaseException] = []

        def call() -> None:
            try:
                bundle.predict(np.array([[60.0, 0.0]]))
            except BaseException as exc:  # noqa: BLE001 - kept for the assertion
                failure.append(exc)

        caller = threading.Thread(target=call)
        caller.start()
        time.sleep(1.0)  # the worker is asleep inside predict
        os.kill(first, signal.SIGKILL)
        caller.join(30)
        assert not caller.is_alive()
        error = failure[0]
        assert isinstance(error, ms.IsolatedWorkerError)
        assert error.returncode == -signal.SIGKILL and error.pid == first and error.operation == "call"
        assert "was killed by SIGKILL during 'call'" in str(error) and "The next call starts a new worker" in str(error)

        np.testing.assert_array_equal(bundle.predict(np.array([[0.0, 5.0]])), [0.0])  # restarted, loaded again
        assert bundle.worker_pid not in (None, first)
        with pytest.raises(ms.IsolatedWorkerError) as caught:
            bundle.predict(np.array([[-3.0, 0.0]]))  # the model ends its own process with status 3
        assert caught.value.returncode == 3 and "exited with status 3" in str(caught.value)
        assert bundle.verify().ok
    finally:
        bundle.close()


def test_close_and_interpreter_exit_stop_the_worker(sleeper, tmp_path):
    bundle = ms.load(sleeper, isolate=True, trust_code=True)
    pid = bundle.worker_pid
    bundle.close()
    assert _gone(pid)

    proc = run(sys.executable, f"""
        import modelsafe as ms
        bundle = ms.load({str(sleeper)!r}, isolate=True, trust_code=True)
        print(bundle.worker_pid)
    """, tmp_path)
    assert _gone(int(proc.stdout.strip().splitlines()[-1]))


def test_errors_of_the_worker_cross_back_as_their_own_class(saved_in_old, old_env, tmp_path):
    with pytest.raises(ms.NoPortableMemberError) as crossed:  # the worker's load finds no ONNX member
        ms.load(saved_in_old / "pipeline.msafe", isolate=True, runtime="onnx")
    assert crossed.value.remote_traceback
    with pytest.raises(ms.IsolatedWorkerError, match="needs the artifact on this machine"):
        ms.load("memory://somewhere/model.msafe", isolate=True)
    with pytest.raises(ms.EnvironmentBuildError) as missing:
        ms.load(saved_in_old / "pipeline.msafe", isolate=str(tmp_path / "no-env"))
    assert missing.value.reason == "destination"


def test_an_unknown_keyword_is_refused_here_before_any_environment_is_built(saved_in_old, tmp_path, monkeypatch):
    """Checked in this process against load's and the artifact's flavors' keywords: no build, no worker."""
    from modelsafe.envs import build

    def no_build(*args, **kwargs):
        raise AssertionError("an environment was built for a call with an unknown keyword")

    monkeypatch.setattr(build, "ensure_env", no_build)
    artifact = saved_in_old / "pipeline.msafe"
    with pytest.raises(ms.UnknownKeywordError) as caught:
        ms.load(artifact, isolate=True, mmap=True)  # a torch / transformers option
    assert caught.value.keywords == ["mmap"] and not hasattr(caught.value, "remote_traceback")
    assert "torch" in str(caught.value)
    with pytest.raises(ms.UnknownKeywordError, match="did you mean 'trust_code'"):
        ms.load(artifact, isolate=str(tmp_path / "not-built-either"), trust_cod=True)
    with pytest.raises(ms.UnknownKeywordError) as caught:
        ms.recreate_env(artifact, tmp_path / "env", trusted_keyz=[])
    assert caught.value.keywords == ["trusted_keyz"] and "trusted_keys" in str(caught.value)
    assert not (tmp_path / "env").exists()


def test_an_explicit_environment_is_checked_like_this_one(saved_in_old, old_env, main_env, old_rows):
    """The old artifact in the environment of current releases: refused under strict, warned about otherwise."""
    with pytest.raises(ms.EnvironmentMismatchError) as caught:
        ms.load(saved_in_old / "pipeline.msafe", isolate=main_env.location, env="strict")
    assert "scikit-learn" in caught.value.packages
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        other = ms.load(saved_in_old / "pipeline.msafe", isolate=main_env.location)
    try:
        assert any(issubclass(w.category, EnvironmentWarning) for w in seen)
        assert {d.package: d.level for d in other.env_report.differences}["scikit-learn"] is not Level.SAME
        assert other.verify().ok  # this pipeline survives the upgrade, as the compatibility suite shows
    finally:
        other.close()
    same = ms.load(saved_in_old / "pipeline.msafe", isolate=old_env.location)
    try:
        np.testing.assert_array_equal(same.predict(old_rows.iloc[:100]),
                                      np.load(saved_in_old / "pipeline_predict.npy")[:100])
    finally:
        same.close()


def test_the_other_way_round_a_model_saved_here_runs_from_the_old_environment(saved_in_main, main_env, old_python,
                                                                              tmp_path):
    # isolate=True from .venv-old (which has modelsafe[envs]): the environment of the artifact saved here is found
    # in the shared cache by its requirements' hash (main_env built it, with pip), or built; then used by path too.
    frame = pd.read_parquet(saved_in_main / "rows.parquet")  # .venv-old has no parquet reader: .npz it is
    np.savez(tmp_path / "rows.npz", income=frame["income"].to_numpy(), city=frame["city"].to_numpy(dtype=str))
    proc = run(old_python, f"""
        import json, numpy as np, pandas as pd, sklearn
        import modelsafe as ms
        frame = pd.DataFrame(dict(np.load("rows.npz")))
        found = {{}}
        for isolate in (True, {main_env.location!r}):
            bundle = ms.load({str(saved_in_main / 'pipeline.msafe')!r}, isolate=isolate)
            np.save(f"proba-{{isolate is True}}.npy", bundle.predict_proba(frame))
            found[str(isolate)] = bundle.env_report.to_dict()["differences"]
            bundle.close()
        print(json.dumps({{"here": sklearn.__version__, "there": found["True"], "by_path": found[{main_env.location!r}]}}))
    """, tmp_path)
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    assert data["here"] == "1.4.2"  # the calling process keeps its old scikit-learn
    assert data["by_path"] == data["there"]
    assert {d["package"]: d["level"] for d in data["there"]} == {
        "python": "same", "numpy": "same", "pandas": "same", "scikit-learn": "same"}
    for isolate in (True, False):
        np.testing.assert_array_equal(np.load(tmp_path / f"proba-{isolate}.npy"), np.load(saved_in_main / "proba.npy"))


def test_predict_file_scores_a_file_through_the_worker(saved_in_old, old_env, old_rows, tmp_path):
    source = tmp_path / "rows.parquet"
    old_rows.iloc[:20_000].to_parquet(source)
    report = ms.predict_file(saved_in_old / "pipeline.msafe", source, tmp_path / "scores.parquet",
                             method="predict_proba", isolate=True)
    assert report.ok and report.rows_out == 20_000
    scores = pd.read_parquet(tmp_path / "scores.parquet")
    assert list(scores.columns) == ["0", "1"]  # named by the class labels the proxy read from the worker
    np.testing.assert_array_equal(scores.to_numpy(), np.load(saved_in_old / "pipeline_proba.npy")[:20_000])


def test_serve_isolate_answers_with_the_recorded_environments_predictions(saved_in_old, old_env, old_rows, tmp_path):
    import socket

    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PROMETHEUS_MULTIPROC_DIR")}
    with open(tmp_path / "serve.err", "wb") as err:
        server = subprocess.Popen([sys.executable, "-m", "modelsafe", "serve", str(saved_in_old / "pipeline.msafe"),
                                   "--isolate", "--env", "strict", "--port", str(port)], cwd=tmp_path,
                                  stdout=subprocess.DEVNULL, stderr=err, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert server.poll() is None, (tmp_path / "serve.err").read_text()
            try:
                if httpx.get(url + "/v2/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        rows = old_rows.iloc[:200]
        body = {"dataframe_split": {"columns": list(rows.columns), "data": rows.values.tolist()}}
        answer = httpx.post(url + "/invocations", json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        np.testing.assert_array_equal(answer.json()["predictions"],
                                      np.load(saved_in_old / "pipeline_predict.npy")[:200])
        bad = httpx.post(url + "/invocations", json={"dataframe_split": {"columns": ["income"], "data": [[1.0]]}})
        assert bad.status_code == 422 and bad.json()["error"]["type"] == "SchemaError"  # guarded in the server
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
