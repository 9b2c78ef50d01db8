"""The installer's output is read whatever width it was wrapped to (uv wraps its explanations to the terminal)."""

from __future__ import annotations

import textwrap

from hypothesis import given
from hypothesis import strategies as st

from modelsafe.envs.failures import classify

UV_NEEDED = ("error: No solution found when resolving dependencies\n  cause: Because only modelsafe==0.1.0 is available "
             "and modelsafe==0.1.0 depends on numpy>=1.24,<3, we can conclude that all versions of modelsafe depend "
             "on numpy>=1.24,<3. And because you require numpy==1.23.5 and modelsafe, we can conclude that your "
             "requirements are unsatisfiable.")
#: pip 25's own words (its ResolutionImpossible report), here on one line; ``_wrapped`` breaks it anywhere.
PIP_NEEDED = ("INFO: pip is looking at multiple versions of modelsafe to determine which version is compatible with "
              "other requirements. The conflict is caused by: The user requested numpy==1.23.5 modelsafe 0.1.0 "
              "depends on numpy<3 and >=1.24 To fix this you could try to: 1. loosen the range of package versions "
              "you've specified ERROR: Cannot install modelsafe==0.1.0 and numpy==1.23.5 because these package "
              "versions have conflicting dependencies.")
UV_MISSING = ("error: No solution found when resolving dependencies: Because there is no version of "
              "scikit-learn==0.0.7 and you require scikit-learn==0.0.7, we can conclude that your requirements "
              "are unsatisfiable.")
UV_NO_WHEEL = ("error: Distribution `torch==1.0.0 @ registry+https://pypi.org/simple` can't be installed because "
               "it doesn't have a source distribution or wheel for the current platform. Because torch==1.0.0 "
               "has no wheels with a matching Python ABI tag and you require torch==1.0.0, we can conclude that "
               "your requirements are unsatisfiable.")


def _wrapped(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(text, width=width, subsequent_indent="         ", break_on_hyphens=False,
                                   break_long_words=False))


@given(width=st.integers(min_value=20, max_value=200))
def test_what_this_modelsafe_needs_is_read_at_any_width(width):
    for installer, text, needs in (("uv", UV_NEEDED, ">=1.24,<3"), ("pip", PIP_NEEDED, "<3 and >=1.24")):
        error = classify(_wrapped(text, width), installer, "installing the recorded packages", ["numpy==1.23.5"])
        assert error.reason == "modelsafe", str(error)
        assert (error.package, error.version, error.needs) == ("numpy", "1.23.5", needs)


@given(width=st.integers(min_value=20, max_value=200))
def test_a_missing_version_and_a_missing_wheel_are_read_at_any_width(width):
    missing = classify(_wrapped(UV_MISSING, width), "uv", "installing", ["scikit-learn==0.0.7"])
    assert (missing.reason, missing.package, missing.version) == ("version-missing", "scikit-learn", "0.0.7")
    no_wheel = classify(_wrapped(UV_NO_WHEEL, width), "uv", "installing", ["torch==1.0.0"])
    assert (no_wheel.reason, no_wheel.package, no_wheel.version) == ("no-wheel", "torch", "1.0.0")
