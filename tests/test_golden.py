"""Golden artifacts of every format version keep loading and predicting as when they were made.

``tests/golden/v<N>/`` holds small artifacts written by ``tests/golden/make_golden.py`` with
format version N, and the predictions the original objects made. A change that cannot read
them must bump the format version and keep a reader for the old one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import modelsafe as ms
from modelsafe.artifact.manifest import FORMAT_VERSION, MIN_FORMAT_VERSION

GOLDEN = Path(__file__).resolve().parent / "golden"
#: How each golden model's reference predictions are recomputed from a loaded bundle.
PREDICT = {
    "sklearn_pipeline.msafe": "bundle.model.predict_proba(inputs)",
    "sklearn_forest": "bundle.model.predict_proba(inputs)",
    "custom_code.msafe": "bundle.model.predict_proba(inputs)",
    "torch_mlp.msafe": "bundle.predict(inputs)",
    "keras_sequential.msafe": "bundle.predict(inputs)",
    "xgboost_classifier.msafe": "bundle.model.predict_proba(inputs)",
    "lightgbm_regressor.msafe": "bundle.predict(inputs)",
}


def _versions() -> list[Path]:
    return sorted(p for p in GOLDEN.glob("v*") if p.is_dir())


def test_every_readable_format_version_has_golden_artifacts():
    found = {int(p.name[1:]) for p in _versions()}
    assert set(range(MIN_FORMAT_VERSION, FORMAT_VERSION + 1)) <= found


@pytest.mark.parametrize("version", _versions(), ids=lambda p: p.name)
def test_golden_artifacts_load_verify_and_predict_as_made(version, fresh):
    names = sorted(PREDICT)
    assert {p.name for p in version.iterdir() if not p.name.endswith(".npy")} == set(names)
    assert all(ms.inspect(version / name).format_version == int(version.name[1:]) for name in names)
    checks = "\n".join(
        f"bundle = ms.load({str(version / name)!r}, trust_code=True)\n"
        f"assert bundle.verify().ok, {name!r}\n"
        "inputs = bundle.sample_inputs()\n"
        f"expected = np.load({str(version / name.removesuffix('.msafe'))!r} + '.expected.npy')\n"
        f"assert np.allclose(np.asarray({PREDICT[name]}), expected, rtol=1e-5, atol=1e-6), {name!r}\n"
        "bundle.close()\n"
        f"print('ok', {name!r})" for name in names)
    proc = fresh("import warnings\nimport numpy as np, modelsafe as ms\nwarnings.simplefilter('ignore')\n" + checks)
    assert proc.stdout.count("ok ") == len(names)


def test_golden_bundled_code_still_needs_trust(fresh):
    fresh(f"""
        import modelsafe as ms
        try:
            ms.load({str(_versions()[-1] / "custom_code.msafe")!r})
            raise SystemExit("bundled code ran without trust_code")
        except ms.UntrustedContentError as exc:
            assert exc.modules == ["golden_code"]
    """)
