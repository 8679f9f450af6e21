"""Under CI=true a skip fails the run (tests/conftest.py): checked on inner pytest sessions.

Each test writes a small test module, runs pytest on it in-process with the hooks of
tests/conftest.py (imported by the inner conftest, so the real ones), once with ``CI``
and once without, and reads the outcome.
"""

from __future__ import annotations

import pytest

# The hooks under test, loaded into the inner session; nothing else of tests/conftest.py
# (its fixtures need Redis).
INNER_CONFTEST = """
from tests.conftest import pytest_make_collect_report, pytest_runtest_makereport
"""

SKIPS = """
import pytest

def test_passes():
    pass

def test_skips_in_its_body():
    pytest.skip("no frobnicator here")

@pytest.mark.skipif(True, reason="not on this platform")
def test_skipped_by_a_marker():
    pass

@pytest.fixture
def tool():
    pytest.skip("the tool is missing")

def test_skipped_by_its_fixture(tool):
    pass
"""


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """An inner session's directory with the real hooks and no installed plugins.

    Installed plugins stay out (one, cloudcoil's, needs packages we do not have), and so
    does a CI variable of the outer run: each test sets its own.
    """
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.delenv("CI", raising=False)
    pytester.makeconftest(INNER_CONFTEST)
    return pytester


def test_without_ci_a_skip_is_a_skip(inner: pytest.Pytester) -> None:
    inner.makepyfile(SKIPS)
    result = inner.runpytest("-ra")
    result.assert_outcomes(passed=1, skipped=3)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.no_fnmatch_line("*CI=true*")


@pytest.mark.parametrize("value", ["true", "TRUE", "1"])
def test_under_ci_every_skip_fails_the_run_with_its_reason(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """A skip in the test's body fails it; one before it (a marker, a fixture) is an error
    at setup, as pytest reports any failure there. Either fails the run."""
    monkeypatch.setenv("CI", value)
    inner.makepyfile(SKIPS)
    result = inner.runpytest("-ra")
    result.assert_outcomes(passed=1, failed=1, errors=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    module = "test_under_ci_every_skip_fails_the_run_with_its_reason.py"
    would = "CI=true: this test would have been skipped:"
    result.stdout.fnmatch_lines_random(
        [
            f"FAILED {module}::test_skips_in_its_body - {would} no frobnicator here "
            f"(*{module}:7)",  # the line of the pytest.skip call
            f"ERROR {module}::test_skipped_by_a_marker - {would} not on this platform (*)",
            f"ERROR {module}::test_skipped_by_its_fixture - {would} the tool is missing (*)",
        ]
    )


@pytest.mark.parametrize("value", ["false", "0", ""])
def test_other_ci_values_leave_skips_alone(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("CI", value)
    inner.makepyfile(SKIPS)
    inner.runpytest().assert_outcomes(passed=1, skipped=3)


def test_under_ci_a_module_skipped_at_collection_fails(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    inner.makepyfile(
        """
        import pytest
        pytest.skip("needs a GPU", allow_module_level=True)

        def test_never_collected():
            pass
        """
    )
    inner.runpytest().assert_outcomes(skipped=1)  # without CI
    monkeypatch.setenv("CI", "true")
    result = inner.runpytest()
    result.assert_outcomes(errors=1)
    assert result.ret == pytest.ExitCode.INTERRUPTED  # a collection error stops the run
    result.stdout.fnmatch_lines(["*CI=true: this test would have been skipped: needs a GPU*"])


def test_under_ci_xfail_keeps_its_meaning(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An expected failure stays xfailed; a strict xfail that passes still fails."""
    monkeypatch.setenv("CI", "true")
    inner.makepyfile(
        """
        import pytest

        @pytest.mark.xfail(reason="known bug", strict=True)
        def test_known_bug():
            assert False

        def test_known_bug_said_inside():
            pytest.xfail("known bug")

        @pytest.mark.xfail(reason="fixed now", strict=True)
        def test_fixed_bug():
            pass
        """
    )
    result = inner.runpytest("-ra")
    result.assert_outcomes(xfailed=2, failed=1)
    result.stdout.fnmatch_lines(["*XPASS(strict)*fixed now*"])
    result.stdout.no_fnmatch_line("*would have been skipped*")


def test_under_ci_deselection_is_not_a_skip(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    inner.makeini("[pytest]\nmarkers =\n    slow: long\n")
    inner.makepyfile(
        """
        import pytest

        @pytest.mark.slow
        def test_slow():
            pass

        def test_quick():
            pass
        """
    )
    result = inner.runpytest("-m", "not slow")
    result.assert_outcomes(passed=1, deselected=1)
    assert result.ret == pytest.ExitCode.OK
