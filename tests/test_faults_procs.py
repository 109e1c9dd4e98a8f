"""The fault matrix of issue 13 where the process is the point: SIGTERM / SIGUSR1 / SIGINT to a running
``run_all.py``, kill -9 mid-write then resume, two drivers on one project at once, shards at once merged by
``tomopick report``, two processes making one synthetic project, a read-only overlay (a real read-only mount
where this runs as root, file modes otherwise).

Processes that can run at once are started together (the machine has 2 cores; most of a process's time is its
imports), and each case is then checked in its own test. Picks are compared byte for byte with those of one
uninterrupted driver (``reference``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import run_all
from pipeline.cli import main as tomopick
from tests.faultlib import (
    HOLD_SEGMENT,
    KILL_WRITING,
    MEET,
    REPO,
    assert_no_traceback,
    copy_tree_project,
    done_marker,
    finish,
    one_thread_env,
    outputs_of,
    overlay,
    picks_files,
    run_doc,
    snapshot,
    start_driver,
    wait_for,
    write_yaml,
    writing_marker,
)

TRIO = ("TS_7_0", "TS_7_1", "TS_7_2")


@pytest.fixture(autouse=True)
def _keep_signal_handlers():
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


@pytest.fixture(scope="module")
def trio(tmp_path_factory):
    """A pristine 3-run project (not run yet) and a copy done by one uninterrupted driver, evaluated."""
    from pipeline.synthetic import make_synthetic_project

    base = tmp_path_factory.mktemp("trio")
    pristine = make_synthetic_project(base / "pristine", runs=3, shape=(40, 72, 64), seed=7, density=2.0)
    reference = copy_tree_project(pristine, base / "reference")
    # the drivers under test run with one compute thread (one_thread_env); so does the reference: bf16 kernels
    # (precision auto on a bf16 CPU) sum in an order that depends on the thread count
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert run_all.main([str(write_yaml(base / "reference.yaml", run_doc(reference, evaluate={})))]) == 0
    finally:
        torch.set_num_threads(threads)
    assert all(done_marker(reference, r).is_file() for r in TRIO)
    return pristine, reference


def same_picks(config, reference, runs=TRIO) -> None:
    for run_id in runs:
        got, want = picks_files(config, run_id), picks_files(reference, run_id)
        assert len(want) == 6 and got == want, run_id


def claims_left(config) -> list[Path]:
    return sorted((overlay(config) / "logs").glob("claim-*/*"))


# ---------------------------------------------------------------------------------------------------- item 9

SIGNALS = {"SIGTERM": (signal.SIGTERM, 143, "stopped by signal 15; runs in flight were finished or rolled back"),
           "SIGUSR1": (signal.SIGUSR1, 138, "stopped by signal 10; runs in flight were finished or rolled back"),
           "SIGINT": (signal.SIGINT, 130, "interrupted; runs in flight were finished or rolled back")}


@pytest.fixture(scope="module")
def stopped(trio, tmp_path_factory):
    """Four drivers at once: three are signalled while segmenting their second run, one kills itself (-9)
    after writing two of the six pick sets of TS_7_1. -> {case: (project, rc, stdout, stderr)}."""
    pristine, _ = trio
    base = tmp_path_factory.mktemp("stopped")
    procs, projects = {}, {}
    for case in [*SIGNALS, "kill-9"]:
        projects[case] = copy_tree_project(pristine, base / case)
        yml = write_yaml(base / f"{case}.yaml", run_doc(projects[case]))
        if case == "kill-9":
            setup = KILL_WRITING.format(run="TS_7_1", after=2)
        else:
            setup = HOLD_SEGMENT.format(at=2, flag=str(base / f"{case}.segmenting"))
        procs[case] = start_driver([str(yml)], setup)
    results = {}
    for case, (signum, _, _) in SIGNALS.items():
        wait_for(base / f"{case}.segmenting", [procs[case]])
        procs[case].send_signal(signum)
    for case, proc in procs.items():
        results[case] = (projects[case], *finish(proc))
    return results


@pytest.mark.parametrize("case", list(SIGNALS))
def test_a_signal_finishes_or_rolls_back_the_runs_in_flight_and_writes_the_report(case, stopped, trio):
    config, rc, out, err = stopped[case]
    _, code, message = SIGNALS[case]
    assert rc == code, err
    assert message in err and "the report is written" in err
    assert_no_traceback(err)
    # the first run finished (its write was in flight), the second was rolled back: nothing of it is there
    assert done_marker(config, "TS_7_0").is_file()
    same_picks(config, trio[1], ["TS_7_0"])
    for run_id in ("TS_7_1", "TS_7_2"):
        assert not done_marker(config, run_id).exists() and outputs_of(config, run_id) == {}
        assert not writing_marker(config, run_id).exists()
    assert claims_left(config) == []
    report = json.loads((overlay(config) / "tomopick" / "throughput.json").read_text())
    assert [(r["run_id"], r["status"]) for r in report["runs"]] == [("TS_7_0", "done")]
    by = {"SIGTERM": "stopped by signal 15", "SIGUSR1": "stopped by signal 10", "SIGINT": "interrupted (Ctrl-C)"}
    assert report["stopped"] == {"by": by[case], "runs_not_done": ["TS_7_1", "TS_7_2"]}


def test_a_resume_after_sigterm_gives_the_same_picks(stopped, trio, tmp_path, caplog):
    config = stopped["SIGTERM"][0]
    assert run_all.main([str(write_yaml(tmp_path / "resume.yaml", run_doc(config)))]) == 0
    same_picks(config, trio[1])


def test_kill_9_mid_write_then_resume_gives_byte_identical_picks(stopped, trio, tmp_path, caplog):
    config, rc, out, err = stopped["kill-9"]
    assert rc == -signal.SIGKILL
    # what a killed job leaves: TS_7_1 half-written (two pick sets), its writing marker, no done marker, claims
    assert done_marker(config, "TS_7_0").is_file() and not done_marker(config, "TS_7_1").exists()
    assert writing_marker(config, "TS_7_1").is_file() and len(picks_files(config, "TS_7_1")) == 2
    assert claims_left(config)
    assert run_all.main([str(write_yaml(tmp_path / "resume.yaml", run_doc(config)))]) == 0
    assert any("taking over the stale claim" in r.getMessage() for r in caplog.records)
    same_picks(config, trio[1])
    assert not writing_marker(config, "TS_7_1").exists() and claims_left(config) == []


# ---------------------------------------------------------------------------------------------------- item 8


@pytest.fixture(scope="module")
def at_once(trio, tmp_path_factory):
    """Two drivers with one config (made to segment at the same time), and two shards of another project,
    all four started together."""
    pristine, _ = trio
    base = tmp_path_factory.mktemp("at_once")
    shared = copy_tree_project(pristine, base / "shared")
    sharded = copy_tree_project(pristine, base / "sharded")
    (base / "meet").mkdir()
    shared_yml = write_yaml(base / "shared.yaml", run_doc(shared))
    sharded_yml = write_yaml(base / "sharded.yaml", run_doc(sharded, evaluate={}))
    procs = {
        "driver-a": start_driver([str(shared_yml)], MEET.format(folder=str(base / "meet"), n=2)),
        "driver-b": start_driver([str(shared_yml)], MEET.format(folder=str(base / "meet"), n=2)),
        "shard-0": start_driver([str(sharded_yml), "--shard", "0/2"]),
        "shard-1": start_driver([str(sharded_yml), "--shard", "1/2"]),
    }
    return {"shared": shared, "sharded": sharded, "sharded_yml": sharded_yml,
            **{name: finish(proc) for name, proc in procs.items()}}


def test_two_drivers_at_once_share_the_runs(at_once, trio):
    config = at_once["shared"]
    did = {}
    for name in ("driver-a", "driver-b"):
        rc, out, err = at_once[name]
        assert rc == 0, err
        assert_no_traceback(err)
        did[name] = set(re.findall(r"run (TS_7_\d): \d+ picks", err))
        assert did[name], f"{name} did no run:\n{err}"
    assert did["driver-a"] | did["driver-b"] == set(TRIO) and not did["driver-a"] & did["driver-b"]
    assert sum("being done by another driver" in at_once[n][2] for n in ("driver-a", "driver-b")) >= 1
    same_picks(config, trio[1])
    assert claims_left(config) == []


def test_shards_at_once_write_their_own_reports_and_tomopick_report_merges_them(at_once, trio, capsys):
    config, out_dir = at_once["sharded"], overlay(at_once["sharded"]) / "tomopick"
    for k, runs in ((0, ["TS_7_0", "TS_7_2"]), (1, ["TS_7_1"])):
        rc, out, err = at_once[f"shard-{k}"]
        assert rc == 0, err
        report = json.loads((out_dir / f"throughput-shard{k}of2.json").read_text())
        assert [r["run_id"] for r in report["runs"] if r["status"] == "done"] == runs
        scored = json.loads((out_dir / f"scores-shard{k}of2" / "metrics.json").read_text())
        assert sorted(scored["metrics"]) == runs  # a shard scores its own runs
    assert not (out_dir / "throughput.json").exists() and not (out_dir / "scores").exists()
    same_picks(config, trio[1])

    assert tomopick(["report", str(at_once["sharded_yml"])]) == 0
    merged = json.loads((out_dir / "throughput.json").read_text())
    assert merged["summary"]["runs_done"] == 3 and merged["merged_from"] == [
        "throughput-shard0of2.json", "throughput-shard1of2.json"]
    reference_scores = overlay(trio[1]) / "tomopick" / "scores" / "average_metrics.yaml"
    assert (out_dir / "scores" / "average_metrics.yaml").read_text() == reference_scores.read_text().replace(
        str(trio[1]), str(config))
    assert "merged 2 shard report(s)" in capsys.readouterr().out

    # a shard resumed with nothing to do keeps its report (the earlier timings) as it was
    shard0 = (out_dir / "throughput-shard0of2.json").read_bytes()
    assert run_all.main([str(at_once["sharded_yml"]), "--shard", "0/2"]) == 0
    assert (out_dir / "throughput-shard0of2.json").read_bytes() == shard0


MAKE = """
import os, sys, time
sys.path.insert(0, {repo!r})
from pipeline.synthetic import make_synthetic_project
open({ready!r}, "w").close()
while not os.path.exists({go!r}):
    time.sleep(0.01)
print(make_synthetic_project({out!r}, runs=2, shape=(24, 40, 40), seed=3))
"""


def test_two_processes_making_one_synthetic_project_both_succeed(tmp_path):
    from pipeline import copick_io

    out = tmp_path / "project"
    procs = [subprocess.Popen([sys.executable, "-c", MAKE.format(repo=str(REPO), ready=str(tmp_path / f"ready{i}"),
                                                                 go=str(tmp_path / "go"), out=str(out))],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=one_thread_env())
             for i in range(2)]
    for i in range(2):
        wait_for(tmp_path / f"ready{i}", procs)
    (tmp_path / "go").touch()
    for proc in procs:
        rc, printed, err = finish(proc)
        assert rc == 0, err
        assert printed.strip() == str(out / "config.json")
    root = copick_io.open_project(out / "config.json")
    assert sorted(r.name for r in root.runs) == ["TS_3_0", "TS_3_1"]
    for run_id in ("TS_3_0", "TS_3_1"):
        assert copick_io.read_tomogram(root, run_id, 10.0, "wbp").shape == (24, 40, 40)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".project")] == []


# ---------------------------------------------------------------------------------------------------- item 7

READ_ONLY = """
import sys
sys.path.insert(0, {repo!r})
from pipeline.cli import main
print("RC", main(["run", {yml!r}]), flush=True)
print("---", file=sys.stderr, flush=True)
print("RC", main(["run", {yml!r}, "--overwrite"]), flush=True)
"""


def _read_only_mount_available() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        probe = subprocess.run(["unshare", "-m", "sh", "-c", 'mount --bind -o ro "$0" "$0" && ! touch "$0/x"', folder],
                               capture_output=True)
    return probe.returncode == 0


def test_a_read_only_overlay_re_evaluates_and_refuses_work_with_the_path(trio, tmp_path):
    """All runs done and evaluated: the same job again from a read-only overlay scores them (exit 0) and writes
    nothing; with --overwrite it stops before any work, one line naming the overlay, exit 74."""
    config = copy_tree_project(trio[1], tmp_path / "project")
    yml = write_yaml(tmp_path / "run.yaml", run_doc(config, evaluate={}))
    assert run_all.main([str(yml)]) == 0  # the scores of this copy (they name its config)
    ov = overlay(config)
    before = snapshot(ov)
    code = READ_ONLY.format(repo=str(REPO), yml=str(yml))
    if os.geteuid() != 0:  # file modes stop this user
        for path in [ov, *ov.rglob("*")]:
            path.chmod(path.stat().st_mode & ~0o222)
        try:
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                                  env=one_thread_env())
        finally:
            for path in [ov, *ov.rglob("*")]:
                path.chmod(path.stat().st_mode | 0o200)
        expected = f"{ov}: Permission denied"
    elif _read_only_mount_available():  # root writes through modes: a read-only bind mount in its own namespace
        proc = subprocess.run(["unshare", "-m", "sh", "-c", 'mount --bind -o ro "$0" "$0" && exec "$1" -c "$2"',
                               str(ov), sys.executable, code], capture_output=True, text=True, cwd=REPO,
                              env=one_thread_env())
        expected = f"{ov}: Read-only file system"
    else:
        pytest.skip("root without mount namespaces: no way to make the overlay read-only here")
    assert [line for line in proc.stdout.splitlines() if line.startswith("RC")] == ["RC 0", "RC 74"], proc.stderr
    first, second = proc.stderr.split("---\n")
    assert " ERROR " not in first and " WARNING " not in first, first
    errors = [line.split(": ", 1)[1] for line in second.splitlines() if " ERROR " in line]
    assert errors == [expected], second
    assert_no_traceback(proc.stderr)
    assert snapshot(ov) == before
    same_picks(config, trio[1])
