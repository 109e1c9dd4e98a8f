"""The streaming driver end to end on a tiny synthetic project: picks, reports, failures, resume, shards, workers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline import copick_io, overlay_files
from pipeline.config import config_from_dict
from pipeline.selectors import SegSelector

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "configs" / "models" / "demo_unet.yaml"
DEMO_WEIGHTS = REPO / "configs" / "models" / "demo_unet.pth"



def make_cfg(project_config: Path, tmp_path: Path, **over):
    doc = {
        "copick_config": str(project_config),
        "device": "cpu",
        "model": {"configs": [str(DEMO_CONFIG)], "weights": [str(DEMO_WEIGHTS)]},
        "segment": {"mode": "fast", "ntta": 2},
        "localize": {"n_procs": 1},
        "evaluate": {"metric": "octopi"},
        "output": {"dir": str(tmp_path / "out")},
    }
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            doc[key] = {**doc[key], **value}
        else:
            doc[key] = value
    return config_from_dict(doc, source="test.yaml")


def picks_of(config_path, run_id, user="octopi", session="1"):
    root = copick_io.open_project(config_path)
    return {o.name: copick_io.read_picks(root, run_id, o.name, user, session, 10.0)
            for o in copick_io.particle_objects(root)}


def test_driver_end_to_end_reports_and_resume(synth_project, tmp_path, monkeypatch):
    from pipeline.run import run_pipeline

    cfg = make_cfg(synth_project, tmp_path)
    result = run_pipeline(cfg, progress=False)
    assert [r.status for r in result.records] == ["done", "done"]
    assert not result.failed
    # the picks hit real particles, and the driver's score is what evaluating the written picks gives
    assert result.evaluation is not None
    assert sum(c.tp for c in result.evaluation.aggregated.values()) > 0
    from pipeline.evaluate_io import evaluate_project

    rescored = evaluate_project(
        copick_io.open_project(synth_project), result.evaluation.objects, ["TS_7_0", "TS_7_1"],
        ground_truth_user_id="data-portal", ground_truth_session_id="0", pick_user_id="octopi", pick_session_id="1", voxel_size=10.0)
    assert rescored.final_fbeta_score == result.evaluation.final_fbeta_score
    root = copick_io.open_project(synth_project)
    for run_id in ("TS_7_0", "TS_7_1"):
        assert copick_io.segmentation_exists(root, run_id, 10.0, SegSelector("predict", "octopi", "1"))
        total = sum(len(v) for v in picks_of(synth_project, run_id).values())
        assert total > 0
    labels = overlay_files.read_segmentation_labels(root, SegSelector("predict", "octopi", "1"))
    assert labels["ribosome"] == 4
    report = json.loads(result.report_path.read_text())
    assert report["summary"]["runs_done"] == 2
    assert set(report["runs"][0]["seconds"]) >= {"read", "segment", "localize", "write"}
    assert report["summary"]["tomograms_per_minute"] > 0
    assert report["evaluation"]["final_fbeta_score"] == pytest.approx(result.evaluation.final_fbeta_score)
    manifest = json.loads(result.manifest_path.read_text())
    assert manifest["device"]["name"] == "cpu" and "asked for cpu" in manifest["device"]["reason"]
    assert manifest["versions"]["torch"] and manifest["resolved_config"]["segment"]["ntta"] == 2
    assert (tmp_path / "out" / "scores" / "average_metrics.yaml").is_file()

    # a second run skips what is done, without segmenting anything
    import pipeline.segment

    def no_segmenting(*a, **k):
        raise AssertionError("segmented a run that was already done")

    monkeypatch.setattr(pipeline.segment, "segment_volume", no_segmenting)
    again = run_pipeline(cfg, progress=False)
    assert [r.status for r in again.records] == ["skipped-done", "skipped-done"]
    assert again.evaluation.final_fbeta_score == pytest.approx(result.evaluation.final_fbeta_score)
    monkeypatch.undo()

    # a process killed while writing TS_7_1 (copick's new_picks stores an empty pick file before from_numpy
    # fills it) leaves its writing marker and no completion marker: that run is redone, the finished one is not
    finished = picks_of(synth_project, "TS_7_1")
    marker = overlay_files.run_done_marker(root, "TS_7_1", "octopi_1")
    writing = overlay_files.writing_marker(root, "TS_7_1", "octopi_1")
    assert json.loads(marker.read_text())["picks"] == {k: len(v) for k, v in finished.items()}
    assert not writing.exists()  # gone once the run was written
    marker.unlink()
    overlay_files.mark_writing(writing, "TS_7_1")
    emptied = max(finished, key=lambda name: len(finished[name]))
    root = copick_io.open_project(synth_project)
    copick_io.remove_picks(root, "TS_7_1", emptied, "octopi", "1")
    root.get_run("TS_7_1").new_picks(object_name=emptied, session_id="1", user_id="octopi")  # the empty file
    assert copick_io.picks_exist(root, "TS_7_1", emptied, "octopi", "1")
    assert len(picks_of(synth_project, "TS_7_1")[emptied]) == 0 < len(finished[emptied])
    third = run_pipeline(cfg, progress=False)
    assert [r.status for r in third.records] == ["skipped-done", "done"]
    for name, centres in picks_of(synth_project, "TS_7_1").items():
        np.testing.assert_allclose(centres, finished[name])
    assert marker.is_file() and not writing.exists()

    # the same half-written state without the writing marker: picks someone else wrote; never replaced silently
    marker.unlink()
    from pipeline.errors import RunError

    with pytest.raises(RunError, match=r"TS_7_1: segmentation predict:octopi/1, picks octopi/1 of .*--overwrite"):
        run_pipeline(cfg, progress=False)
    assert picks_of(synth_project, "TS_7_1").keys() == finished.keys()


@pytest.mark.parametrize("on_error", ["skip", "raise"])
def test_failed_run_leaves_no_partial_output(synth_project, tmp_path, monkeypatch, on_error):
    from pipeline import run as driver
    from pipeline.errors import RunFailed

    real_write_picks = copick_io.write_picks

    def flaky_write_picks(root, run_id, object_name, *a, **k):
        if run_id == "TS_7_1" and object_name == "ribosome":
            raise OSError("disk full")
        return real_write_picks(root, run_id, object_name, *a, **k)

    monkeypatch.setattr(copick_io, "write_picks", flaky_write_picks)
    cfg = make_cfg(synth_project, tmp_path, output={"on_error": on_error}, run_ids=["TS_7_0", "TS_7_1"])
    if on_error == "raise":
        with pytest.raises(RunFailed, match="stopped after run TS_7_1 failed"):
            driver.run_pipeline(cfg, progress=False)
    else:
        result = driver.run_pipeline(cfg, progress=False)
        assert [r.run_id for r in result.failed] == ["TS_7_1"]
        assert "disk full" in result.failed[0].error
        report = json.loads(result.report_path.read_text())
        assert report["summary"]["runs_failed"] == 1
    root = copick_io.open_project(synth_project)
    # the failed run has neither its segmentation nor any of its pick sets (apo-ferritin etc. were written first)
    assert not copick_io.segmentation_exists(root, "TS_7_1", 10.0, SegSelector("predict", "octopi", "1"))
    for o in copick_io.particle_objects(root):
        assert not copick_io.picks_exist(root, "TS_7_1", o.name, "octopi", "1")
    assert not overlay_files.run_done_marker(root, "TS_7_1", "octopi_1").exists()
    if on_error == "skip":
        assert copick_io.segmentation_exists(root, "TS_7_0", 10.0, SegSelector("predict", "octopi", "1"))


def test_shards_split_runs(synth_project, tmp_path):
    from pipeline.run import run_pipeline

    result = run_pipeline(make_cfg(synth_project, tmp_path, shard="1/2", evaluate=None), progress=False)
    assert [r.run_id for r in result.records] == ["TS_7_1"]
    root = copick_io.open_project(synth_project)
    assert not copick_io.picks_exist(root, "TS_7_0", "ribosome", "octopi", "1")


def test_worker_processes_give_the_same_picks(synth_project, tmp_path):
    """The multi-GPU path (one spawned worker per device, runs round-robin), exercised with two CPU workers."""
    from pipeline.run import run_pipeline

    single = run_pipeline(make_cfg(synth_project, tmp_path, evaluate=None), progress=False)
    single_picks = {r: picks_of(synth_project, r) for r in ("TS_7_0", "TS_7_1")}
    cfg = make_cfg(synth_project, tmp_path, evaluate=None, output={"overwrite": True})
    multi = run_pipeline(cfg, progress=False, workers=["cpu", "cpu"])
    # runs go to whichever worker is free first: which one took which is not fixed
    assert {r.worker for r in multi.records} <= {"w0:cpu", "w1:cpu"}
    assert [r.status for r in single.records] == [r.status for r in multi.records] == ["done", "done"]
    for run_id, by_obj in single_picks.items():
        again = picks_of(synth_project, run_id)
        for name, pts in by_obj.items():
            np.testing.assert_allclose(again[name], pts)


def test_driver_equals_segment_localize_evaluate_commands(synth_project_copy, tmp_path):
    """The driver's picks and scores equal `tomopick segment`, `localize` and `evaluate` run one after another."""
    import yaml

    from pipeline.cli import main as cli
    from pipeline.run import run_pipeline

    driver_project, chain_project = synth_project_copy("a"), synth_project_copy("b")

    result = run_pipeline(make_cfg(driver_project, tmp_path, segment={"mode": "fast", "ntta": 2}), progress=False)
    assert [r.status for r in result.records] == ["done", "done"]

    common = ["-c", str(chain_project), "--device", "cpu"]
    assert cli(["segment", *common, "-mc", str(DEMO_CONFIG), "-mw", str(DEMO_WEIGHTS), "--ntta", "2",
                "--mode", "fast", "-seginfo", "predict,octopi,1"]) == 0
    assert cli(["localize", *common, "-m", "watershed", "-sinfo", "predict,octopi,1", "-np", "1",
                "-pui", "octopi", "-psid", "1"]) == 0
    scores = tmp_path / "chain_scores"
    assert cli(["evaluate", "-c", str(chain_project), "-gtuid", "data-portal", "-gtsid", "0", "-puid", "octopi",
                "-psid", "1", "-o", str(scores)]) == 0

    n_picks = 0
    for run_id in ("TS_7_0", "TS_7_1"):
        a, b = picks_of(driver_project, run_id), picks_of(chain_project, run_id)
        assert a.keys() == b.keys()
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])
            n_picks += len(a[name])
    assert n_picks > 0
    chain = yaml.safe_load((scores / "average_metrics.yaml").read_text())
    assert chain["final_fbeta_score"] == pytest.approx(result.evaluation.final_fbeta_score, abs=1e-12)
    for name, counts in result.evaluation.aggregated.items():
        got = chain["aggregated_particle_scores"][name]
        assert (got["tp"], got["fp"], got["fn"]) == (counts.tp, counts.fp, counts.fn)


def _worker_killed_on_ts_7_1(config_doc, source, device_spec, worker, log_level, tasks, events, abort):
    """A worker that is SIGKILLed as it takes run TS_7_1 (after its "start" message is on the wire)."""
    import os
    import signal

    from pipeline.run.executors import _worker_main

    class Events:
        def put(self, message):
            events.put(message)
            if message[0] == "start" and message[2] == "TS_7_1":
                events.close()
                events.join_thread()  # the parent has the message: it knows this worker held TS_7_1
                os.kill(os.getpid(), signal.SIGKILL)

    _worker_main(config_doc, source, device_spec, worker, log_level, tasks, Events(), abort)


def _worker_killed_writing_ts_7_1(config_doc, source, device_spec, worker, log_level, tasks, events, abort):
    """A worker that is SIGKILLed half-way through writing TS_7_1's pick sets."""
    import os
    import signal

    from pipeline import copick_io
    from pipeline.run.executors import _worker_main

    real, written = copick_io.write_picks, []

    def write_then_die(root, run_id, object_name, *a, **k):
        real(root, run_id, object_name, *a, **k)
        written.append(run_id)
        if written.count("TS_7_1") == 2:
            os.kill(os.getpid(), signal.SIGKILL)

    copick_io.write_picks = write_then_die
    _worker_main(config_doc, source, device_spec, worker, log_level, tasks, events, abort)


@pytest.mark.parametrize("target", [_worker_killed_on_ts_7_1, _worker_killed_writing_ts_7_1])
def test_a_worker_that_dies_fails_its_run_loudly(synth_project, tmp_path, target):
    """One process per device: a worker killed mid-run fails the runs it held, with the reason, and removes
    what it had half-written; the job does not hang and loses no run silently."""
    from pipeline.run.context import WorkerContext
    from pipeline.run.executors import ProcessExecutor
    from pipeline.run.outputs import RunOutputs
    from pipeline.run.select import marker_key

    cfg = make_cfg(synth_project, tmp_path, evaluate=None, output={"on_error": "skip"})
    root = copick_io.open_project(synth_project)
    ctx = WorkerContext.open(cfg, "cpu", root=root)
    executor = ProcessExecutor(cfg, ["cpu", "cpu"], cleanup=RunOutputs(root, cfg, ctx.objects).remove_partial,
                               target=target)
    records = {r.run_id: r for r in executor.run(["TS_7_0", "TS_7_1"])}
    assert set(records) == {"TS_7_0", "TS_7_1"}
    assert records["TS_7_1"].status == "failed" and "WorkerDied" in records["TS_7_1"].error
    assert "died (exit code -9)" in records["TS_7_1"].error
    root = copick_io.open_project(synth_project)
    for run_id, rec in records.items():
        marker = overlay_files.run_done_marker(root, run_id, marker_key(cfg))
        writing = overlay_files.writing_marker(root, run_id, marker_key(cfg))
        has_picks = any(copick_io.picks_exist(root, run_id, o.name, "octopi", "1") for o in ctx.objects)
        if rec.status == "done":
            assert marker.is_file() and has_picks
        else:
            assert rec.status == "failed" and not marker.exists() and not has_picks, rec
        assert not writing.exists()


def test_a_worker_that_cannot_start_stops_the_job_with_the_reason(synth_project, tmp_path):
    from pipeline.errors import RunFailed
    from pipeline.run.executors import ProcessExecutor

    cfg = make_cfg(synth_project, tmp_path, evaluate=None)
    with pytest.raises(RunFailed, match=r"could not start on cuda:7: DeviceError"):
        ProcessExecutor(cfg, ["cpu", "cuda:7"]).run(["TS_7_0", "TS_7_1"])


def test_an_interrupted_job_reports_the_runs_it_finished(synth_project, tmp_path, monkeypatch):
    """Ctrl-C (or SIGTERM) during the second run: the first run, done, is in the report written on the way out."""
    from pipeline.run import run_pipeline
    from pipeline.run.loop import RunLoop

    real, calls = RunLoop.segment, []

    def segment_then_interrupt(self, run_id, volume):
        calls.append(run_id)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, run_id, volume)

    monkeypatch.setattr(RunLoop, "segment", segment_then_interrupt)
    cfg = make_cfg(synth_project, tmp_path, evaluate=None)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(cfg, progress=False)
    report = json.loads((tmp_path / "out" / "throughput.json").read_text())
    assert [(r["run_id"], r["status"]) for r in report["runs"]] == [("TS_7_0", "done")]
    assert report["summary"]["runs_done"] == 1
    assert report["stopped"] == {"by": "interrupted (Ctrl-C)", "runs_not_done": ["TS_7_1"]}  # not a 1-run job


def test_the_loop_reports_a_run_while_it_waits_for_the_next(synth_project, tmp_path):
    """An executor that hands out the next run only once the last one is reported (Ray's) must not wait for ever."""
    import queue

    from pipeline.run.context import WorkerContext
    from pipeline.run.loop import RunLoop

    cfg = make_cfg(synth_project, tmp_path, evaluate=None)
    handed, records = queue.Queue(), []
    handed.put("TS_7_0")

    def on_record(rec):
        records.append(rec)
        handed.put("TS_7_1" if len(records) == 1 else None)

    def runs():
        while (run_id := handed.get(timeout=30)) is not None:  # Empty after 30 s: the loop held the record back
            yield run_id

    loop = RunLoop(WorkerContext.open(cfg, "cpu"), on_record=on_record)
    assert [(r.run_id, r.status) for r in loop.run(runs())] == [("TS_7_0", "done"), ("TS_7_1", "done")]
    assert [r.run_id for r in records] == ["TS_7_0", "TS_7_1"]


def _worker_terminated_on_ts_7_1(config_doc, source, device_spec, worker, log_level, tasks, events, abort):
    """A worker that gets SIGTERM (as SLURM sends it to every process of a step) as it takes run TS_7_1."""
    import os
    import signal

    from pipeline.run.executors import _worker_main

    class Events:
        def put(self, message):
            events.put(message)
            if message[0] == "start" and message[2] == "TS_7_1":
                os.kill(os.getpid(), signal.SIGTERM)

    _worker_main(config_doc, source, device_spec, worker, log_level, tasks, Events(), abort)


def test_a_worker_stopped_by_sigterm_stops_the_job_like_sigterm(synth_project, tmp_path):
    """The signal a worker got reaches the job: Terminated (exit 143 in the CLI), not a failed run (exit 1)."""
    from pipeline.errors import Terminated
    from pipeline.run.executors import ProcessExecutor

    cfg = make_cfg(synth_project, tmp_path, evaluate=None, output={"on_error": "skip"})
    with pytest.raises(Terminated) as stopped:
        ProcessExecutor(cfg, ["cpu", "cpu"], target=_worker_terminated_on_ts_7_1).run(["TS_7_0", "TS_7_1"])
    assert stopped.value.signum == 15
