"""pipeline.collector: tomopick's own processes collect young objects rarely while they start, then freeze
what the imports and models made and collect as usual; library use keeps Python's collector untouched."""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import collector
from tests.test_driver import make_cfg

REPO = Path(__file__).resolve().parents[1]

STEPS = """
import gc, json
from pipeline import collector
default = gc.get_threshold()
{before}
during = gc.get_threshold()
import torch  # many long-lived objects
collector.started()
print(json.dumps([default, during, gc.get_threshold(), gc.get_freeze_count()]))
"""


def _python(code: str) -> str:
    """stdout of ``code`` run by a fresh interpreter (a process's collector starts from Python's defaults)."""
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def _steps(before: str) -> list:
    import json

    return json.loads(_python(STEPS.format(before=before)).strip().splitlines()[-1])


def test_an_own_process_defers_then_freezes_and_restores():
    default, during, after, frozen = _steps("collector.defer_until_started()")
    assert during == [collector.STARTUP_GEN0_THRESHOLD, *default[1:]]
    assert after == default
    assert frozen > 10_000  # torch's objects, skipped by every later collection


def test_library_use_keeps_the_collector_as_it_was():
    default, during, after, frozen = _steps("")
    assert during == default == after
    assert frozen == 0


def test_a_user_threshold_above_ours_is_kept():
    default, during, after, _ = _steps("import gc\ngc.set_threshold(250_000, 3, 4)\n"
                                       "collector.defer_until_started()")
    assert during == [250_000, 3, 4]
    assert after == [250_000, 3, 4]


def test_declaring_an_own_process_takes_both_parts():
    # the entry points (CLI, worker processes, Ray actors) call only own_process.declare
    code = ("import gc\nfrom pipeline import collector, networks, own_process\n"
            "print(networks._lean, gc.get_threshold()[0] == collector.STARTUP_GEN0_THRESHOLD)\n"
            "own_process.declare()\n"
            "print(networks._lean, gc.get_threshold()[0] == collector.STARTUP_GEN0_THRESHOLD)")
    assert _python(code).split() == ["False", "False", "True", "True"]


def test_a_worker_context_marks_the_end_of_start_up(synth_project, tmp_path):
    # every process that runs runs opens one WorkerContext once its models are loaded: that is "started"
    from pipeline.run.context import WorkerContext

    default = gc.get_threshold()
    collector.defer_until_started()
    try:
        assert gc.get_threshold()[0] == collector.STARTUP_GEN0_THRESHOLD
        ctx = WorkerContext.open(make_cfg(synth_project, tmp_path, evaluate=None), "cpu")
        assert ctx.ensemble is not None
        assert gc.get_threshold() == default
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        collector._saved = None
        gc.set_threshold(*default)


def test_a_command_that_fails_before_its_models_load_leaves_the_thresholds_as_they_were(tmp_path):
    from pipeline.cli import main

    default = gc.get_threshold()
    assert main(["localize", "-c", str(tmp_path / "missing.json")]) == 2
    assert gc.get_threshold() == default and collector._saved is None
    with pytest.raises(SystemExit):
        main(["localize", "--no-such-flag"])
    assert gc.get_threshold() == default and collector._saved is None
