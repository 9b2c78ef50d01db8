"""What a failed verification blames: the environment only when it differs from the saved one."""

from __future__ import annotations

from modelsafe.checks.verify import OutputCheck, VerifyReport

FAILED = (OutputCheck("predict", False, "float64", (4,), mismatches=1, max_difference=0.5, position=(2,),
                      expected_value=1.0, actual_value=1.5, tolerance={"rtol": 1e-7, "atol": 1e-9}),)


def test_a_failure_in_an_unchanged_environment_does_not_blame_the_environment():
    text = str(VerifyReport(path="m.msafe", checks=FAILED, rows=4))
    assert "FAILED" in text and "a version change is not the cause" in text
    assert "modelsafe env" not in text


def test_a_failure_in_a_changed_environment_names_the_differences_and_the_fix():
    text = str(VerifyReport(path="m.msafe", checks=FAILED, rows=4, environment="numpy 1.26.4 -> 2.4.6 (major)"))
    assert "the environment differs from the one the model was saved in: numpy 1.26.4 -> 2.4.6" in text
    assert "compare environments with `modelsafe env`" in text
