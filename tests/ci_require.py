"""Tests that must run, not skip, where ``TOMOPICK_REQUIRE`` says so (CI sets it; see .ci/run).

A test marked ``@pytest.mark.requires("NAME")`` skips as usual where its optional dependency is missing (octopi
for the parity tests, libNVVM for the PTX compile test). With ``TOMOPICK_REQUIRE=NAME[,NAME...]`` in the
environment, a skip of such a test is reported as a failure instead, and the session fails if no test marked
with a required name passed at all (a renamed, deselected or uncollected module cannot pass CI unseen). The
variable is taken out of the environment once read: a pytest that a test starts (tests/test_localize_cudasim.py
runs one) is not held to it.

tests/conftest.py imports these hooks; the module stays separate so tests/test_ci_require.py can load it into
an inner pytest run.
"""

from __future__ import annotations

import os

import pytest

ENV = "TOMOPICK_REQUIRE"
_STASH = pytest.StashKey[dict]()
_VALUE = pytest.StashKey[str]()


def required_names() -> set[str]:
    return {name.strip() for name in os.environ.get(ENV, "").split(",") if name.strip()}


def _marked_names(item) -> set[str]:
    return {name for marker in item.iter_markers("requires") for name in marker.args}


def pytest_configure(config):
    config.addinivalue_line(
        "markers", f"requires(name): needs an optional dependency; must not skip when {ENV} names it"
    )
    config.stash[_STASH] = {name: 0 for name in required_names()}
    # read once and removed: a pytest that a test starts is not CI's session
    config.stash[_VALUE] = os.environ.pop(ENV, "")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    passes = item.config.stash[_STASH]
    names = _marked_names(item) & passes.keys()
    if not names:
        return
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = (
            f"{item.nodeid} skipped, but {ENV}={item.config.stash[_VALUE]} requires {', '.join(sorted(names))} to run "
            f"(see .ci/run for how CI installs it): {reason}"
        )
    elif report.passed and report.when == "call":
        for name in names:
            passes[name] += 1


def _missing(config) -> list[str]:
    """Required names with no passed test."""
    return sorted(name for name, count in config.stash.get(_STASH, {}).items() if count == 0)


def pytest_sessionfinish(session, exitstatus):
    if _missing(session.config) and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    passes = config.stash.get(_STASH, {})
    if passes:  # CI's log shows that the required tests ran
        counts = ", ".join(f"{name}: {count} passed" for name, count in sorted(passes.items()))
        terminalreporter.write_line(f"{ENV}={config.stash[_VALUE]}: {counts}")
    for name in _missing(config):
        terminalreporter.write_line(
            f"FAILED {ENV}={config.stash[_VALUE]}: no test marked requires({name!r}) passed", red=True
        )
