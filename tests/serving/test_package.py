"""``ms.serving`` is reached lazily: importing modelsafe imports no web framework, nor does ``ms.serving``."""

from __future__ import annotations

WEB = ("starlette", "uvicorn", "prometheus_client", "pandas", "sklearn")


def test_importing_modelsafe_and_its_serving_package_imports_no_web_framework(fresh, artifacts):
    proc = fresh(f"""
        import sys
        import modelsafe as ms
        assert "serving" in dir(ms)
        before = sorted(m for m in {WEB!r} if m in sys.modules)
        serving = ms.serving
        after = sorted(m for m in {WEB!r} if m in sys.modules)
        app = ms.serving.create_app({{"churn": {str(artifacts / "pipe.msafe")!r}}}, max_batch_size=8)
        print(before, after, sorted(app.state.service.models), serving.__name__)
    """)
    assert proc.stdout.strip() == "[] [] ['churn'] modelsafe.serving"


def test_create_app_refuses_bad_options(artifacts):
    import pytest

    import modelsafe as ms

    for options in ({"max_batch_size": 0}, {"max_latency_ms": -1}, {"max_rows": 0}):
        with pytest.raises(ValueError, match="Invalid `"):
            ms.serving.create_app(artifacts / "pipe.msafe", **options)
    with pytest.raises(ms.UnknownKeywordError):
        ms.serving.create_app(artifacts / "pipe.msafe", trust_cod=True)
