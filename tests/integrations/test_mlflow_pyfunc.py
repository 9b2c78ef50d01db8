"""Properties of the loader MLflow calls: an MLmodel can never loosen a check, and the caller's options reach
ms.load as given."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import modelsafe as ms
from modelsafe.integrations.mlflow_pyfunc import LOAD_DEFAULTS, load_options, load_pyfunc

_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=3), max_leaves=6)


@pytest.fixture(scope="module")
def exported(frame_model, tmp_path_factory) -> Path:
    return ms.export(frame_model["path"], tmp_path_factory.mktemp("pyfunc") / "model", to="mlflow")


def _with_config(exported: Path, folder: Path, config: dict[str, object]) -> Path:
    """A copy of the exported folder whose MLmodel declares ``config``; returns its data path."""
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(exported, folder)
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    mlmodel["flavors"]["python_function"]["config"] = config
    (folder / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    return folder / mlmodel["flavors"]["python_function"]["data"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(sorted(LOAD_DEFAULTS)), value=_JSON)
def test_an_mlmodel_declaring_anything_but_the_defaults_is_refused_before_anything_loads(exported, tmp_path, key,
                                                                                          value):
    assume(value != LOAD_DEFAULTS[key])
    data = _with_config(exported, tmp_path / "copy", {**LOAD_DEFAULTS, key: value})
    with pytest.raises(ms.UntrustedContentError) as caught:
        load_pyfunc(str(data), {**LOAD_DEFAULTS, key: value})
    assert caught.value.options == {key: value}


def test_the_defaults_load_and_the_callers_options_reach_load(exported, tmp_path, frame_model):
    data = _with_config(exported, tmp_path / "copy", dict(LOAD_DEFAULTS))
    model = load_pyfunc(str(data), {**LOAD_DEFAULTS, "env": "ignore"})
    rows = frame_model["frame"].iloc[:4]
    assert model.predict(rows).tolist() == frame_model["model"].predict(rows).tolist()
    assert model.get_raw_model() is model.bundle.model


@given(config=st.fixed_dictionaries({}, optional={
    "trusted": st.lists(st.text(min_size=1, max_size=10), max_size=3),
    "trusted_keys": st.lists(st.text(min_size=1, max_size=10), max_size=2),
    "env": st.sampled_from(["strict", "warn", "ignore"]), "verify": st.booleans(), "trust_code": st.booleans(),
    "unrelated": st.integers()}))
def test_load_options_are_the_callers_declared_keys_with_lists_as_tuples(config):
    options = load_options(config)
    assert set(options) == set(config) - {"unrelated"}
    for key, value in options.items():
        assert value == (tuple(config[key]) if key in ("trusted", "trusted_keys") else config[key])
