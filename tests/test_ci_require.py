"""TOMOPICK_REQUIRE turns skips of tests marked requires(NAME) into failures, and only those (tests/ci_require.py).

Each case runs an inner pytest session (pytester) with the plugin loaded and a small test file."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

TESTS = """
import os

import pytest

@pytest.mark.requires("octopi")
def test_parity_skips():
    pytest.skip("octopi missing")

@pytest.mark.requires("nvvm")
def test_ptx_passes():
    assert "TOMOPICK_REQUIRE" not in os.environ  # read once: a pytest started from a test is not held to it

def test_other_skips():
    pytest.skip("an unrelated optional thing")
"""


def _run(pytester, monkeypatch, require, source=TESTS):
    if require is None:
        monkeypatch.delenv("TOMOPICK_REQUIRE", raising=False)
    else:
        monkeypatch.setenv("TOMOPICK_REQUIRE", require)
    pytester.makepyfile(test_inner=source)
    return pytester.runpytest("-p", "tests.ci_require", "-rA")


def test_without_the_variable_a_skip_stays_a_skip(pytester, monkeypatch):
    result = _run(pytester, monkeypatch, None)
    result.assert_outcomes(passed=1, skipped=2)
    assert result.ret == pytest.ExitCode.OK


def test_a_required_skip_fails_and_names_the_requirement(pytester, monkeypatch):
    result = _run(pytester, monkeypatch, "octopi,nvvm")
    result.assert_outcomes(passed=1, skipped=1, failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        ["*test_parity_skips skipped, but TOMOPICK_REQUIRE=octopi,nvvm requires octopi*"]
    )


def test_a_requirement_that_passes_and_unmarked_skips_do_not_fail(pytester, monkeypatch):
    result = _run(pytester, monkeypatch, " nvvm ")
    result.assert_outcomes(passed=1, skipped=2)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["TOMOPICK_REQUIRE= nvvm : nvvm: 1 passed"])


def test_a_skip_in_a_fixture_fails_too(pytester, monkeypatch):
    source = """
import pytest

@pytest.fixture
def side():
    pytest.skip("not installed")

@pytest.mark.requires("octopi")
def test_uses_side(side):
    pass
"""
    result = _run(pytester, monkeypatch, "octopi", source)
    result.assert_outcomes(errors=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED


@pytest.mark.parametrize(
    "source",
    [
        "import pytest\npytestmark = pytest.mark.requires('nvvm')\npytest.skip('gone', allow_module_level=True)\n",
        "def test_unmarked():\n    pass\n",  # the required tests were renamed, deselected or never written
    ],
    ids=["module-skipped", "none-collected"],
)
def test_a_requirement_with_no_passed_test_fails_the_session(pytester, monkeypatch, source):
    result = _run(pytester, monkeypatch, "nvvm", source)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*no test marked requires('nvvm') passed*"])
