"""Progress and merged shard reports tell the truth: no bar in a log file, no "done" for a step an exception
stopped, merged busy fractions that cannot exceed 1, and `tomopick report` names the shards and runs missing."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from pipeline.progress import Progress
from pipeline.run.reports import (
    DONE,
    FAILED,
    RunRecord,
    merge_shard_reports,
    missing_runs,
    throughput_summary,
)
from pipeline.run.select import split_basis
from tests.faultlib import run_doc, write_yaml

# ---------------------------------------------------------------------------------------------------- bars


def _evaluate_with_progress(project):
    from pipeline import copick_io
    from pipeline.evaluate_io import evaluate_project

    root = copick_io.open_project(project)
    # the ground truth scored against itself: any pick set will do, the point is what goes to stderr
    return evaluate_project(root, copick_io.particle_objects(root), None, ground_truth_user_id="data-portal",
                            ground_truth_session_id="0", pick_user_id="data-portal", pick_session_id="0",
                            voxel_size=10.0, progress=True)


def test_evaluate_draws_no_bar_into_a_log_file(synth_project_template, capsys):
    """stderr redirected (capsys: not a terminal): no carriage returns, no bar; on a terminal, the bar."""
    result = _evaluate_with_progress(synth_project_template)
    assert result.final_fbeta_score == pytest.approx(1.0)
    err = capsys.readouterr().err
    assert "\r" not in err and "%|" not in err and "reading picks" not in err


def test_evaluate_draws_its_bar_on_a_terminal(synth_project_template, capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    _evaluate_with_progress(synth_project_template)
    assert "evaluate: reading picks" in capsys.readouterr().err


def test_making_a_synthetic_project_draws_no_bar_into_a_log_file(tmp_path, capsys):
    from pipeline.synthetic import make_synthetic_project

    config = make_synthetic_project(tmp_path / "p", runs=2, shape=(24, 32, 32), progress=True)
    assert config.is_file()
    err = capsys.readouterr().err
    assert "\r" not in err and "%|" not in err


# ---------------------------------------------------------------------------------------------------- stopped


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_a_step_stopped_by_an_exception_is_not_logged_as_done(exc, caplog):
    caplog.set_level(logging.INFO)
    with pytest.raises(exc), Progress("run TS_1: segment", total=4, unit="window", interval=0.0, bar=False) as p:
        p.update(2)
        raise exc
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("run TS_1: segment")]
    assert not any("done" in line for line in lines), lines
    assert lines[-1].startswith("run TS_1: segment: stopped at 2/4 windows (50 %), ")
    assert lines[-1].endswith(f"({exc.__name__})")


def test_a_step_that_finishes_is_still_done_and_closes_once(caplog):
    caplog.set_level(logging.INFO)
    with Progress("run TS_1: localize", total=2, unit="class", interval=0.0, bar=False) as p:
        p.update(2)
        p.close()  # closed early by hand: the with block's end adds no second line
    closing = [r.getMessage() for r in caplog.records if ": done," in r.getMessage() or "stopped" in r.getMessage()]
    assert closing == [closing[0]] and closing[0].startswith("run TS_1: localize: done, 2/2 classes (100 %)")


# ---------------------------------------------------------------------------------------------------- merged numbers


def _record(run_id, segment, worker="", status=DONE, error=None):
    return RunRecord(run_id, status=status, shape_zyx=(10, 10, 10), seconds={"read": 1.0, "segment": segment,
                                                                            "localize": 5.0}, worker=worker,
                     error=error)


def _shard_report(out_dir, k, n, records, wall, started=None, split_of=None):
    """A shard's report as a shard writes it; ``split_of``: the run list it split (its report records that)."""
    from dataclasses import asdict

    doc = {"config": "x.yaml", "summary": throughput_summary(records, wall), "runs": [asdict(r) for r in records]}
    if started is not None:
        doc["started_unix_s"], doc["finished_unix_s"] = started, started + wall
    if split_of is not None:
        doc["split"] = {"shard": f"{k}/{n}", **split_basis(split_of)}
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"throughput-shard{k}of{n}.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture()
def cfg(tmp_path):
    from pipeline.config import config_from_dict

    return config_from_dict(run_doc(tmp_path / "config.json", output={"dir": str(tmp_path / "out")}),
                            source="shard.yaml", check_files=False)


@pytest.mark.parametrize("starts, wall", [((1000.0, 1000.0), 100.0),  # at once, on two nodes
                                          ((1000.0, 1100.0), 200.0),  # one after the other
                                          ((1000.0, 5000.0), 200.0),  # with a pause between: not counted
                                          ((None, None), 100.0)])  # older reports: as if at once
def test_merged_busy_fraction_is_a_share_of_the_shards_time(cfg, tmp_path, starts, wall):
    """Two shards, each 100 s with its segmentation busy 80 s: busy 0.8 whether they ran at once or not (the
    stage seconds summed over the shards against the longest shard's wall time gave 1.6)."""
    out = tmp_path / "out"
    _shard_report(out, 0, 2, [_record("TS_0", 40.0), _record("TS_2", 40.0)], 100.0, starts[0])
    _shard_report(out, 1, 2, [_record("TS_1", 80.0)], 100.0, starts[1])
    path, _ = merge_shard_reports(cfg, out)
    s = json.loads(path.read_text())["summary"]
    assert s["runs_done"] == 3 and s["stage_seconds_total"]["segment"] == 160.0
    assert s["wall_seconds"] == pytest.approx(wall)
    assert s["worker_seconds"] == pytest.approx(200.0)
    assert s["segment_busy_fraction"] == pytest.approx(0.8)
    assert s["slowest_stage"] == "segment" and s["wall_over_slowest_stage"] == pytest.approx(200.0 / 160.0)
    assert s["tomograms_per_minute"] == pytest.approx(3 / (wall / 60))


def test_merged_report_keeps_each_shards_own_figures(cfg, tmp_path):
    out = tmp_path / "out"
    _shard_report(out, 0, 2, [_record("TS_0", 90.0)], 100.0, 0.0)
    _shard_report(out, 1, 2, [_record("TS_1", 30.0)], 60.0, 0.0)
    doc = json.loads(merge_shard_reports(cfg, out)[0].read_text())
    assert set(doc["shards"]) == {"0/2", "1/2"}
    assert doc["shards"]["0/2"]["report"] == "throughput-shard0of2.json"
    assert doc["shards"]["0/2"]["segment_busy_fraction"] == pytest.approx(0.9)
    assert doc["shards"]["1/2"]["segment_busy_fraction"] == pytest.approx(0.5)
    assert doc["summary"]["segment_busy_fraction"] == pytest.approx(120.0 / 160.0)
    assert doc["missing"] == {"shards": [], "runs": {}}


def test_busy_fraction_of_several_workers_counts_each_workers_time():
    """Two GPUs, each segmenting 90 s of a 100 s job: busy 0.9, not 1.8."""
    s = throughput_summary([_record("TS_0", 90.0, "w0:cuda:0"), _record("TS_1", 90.0, "w1:cuda:1")], 100.0)
    assert s["worker_seconds"] == 200.0 and s["segment_busy_fraction"] == pytest.approx(0.9)
    assert s["wall_over_slowest_stage"] == pytest.approx(200.0 / 180.0)


# ---------------------------------------------------------------------------------------------------- missing


LONG_ERROR = ("tomogram wbp@10 of TS_2 has 12 NaN voxels (first at z, y, x = 3, 40, 41): segment.nonfinite: zero "
              "(--nonfinite zero) sets them to 0 and goes on, or fix the tomogram")


def test_missing_runs_say_which_shard_or_what_failed():
    """A failure's reason is kept whole (it was cut at 120 characters, mid-sentence, losing the advice)."""
    run_ids = ["TS_0", "TS_1", "TS_2", "TS_3"]  # shard 0/2: TS_0, TS_2; shard 1/2: TS_1, TS_3
    latest = {"TS_0": _record("TS_0", 1.0), "TS_2": _record("TS_2", 1.0, status=FAILED, error=LONG_ERROR + "\ntb")}
    shards, why = missing_runs(run_ids, {"TS_0"}, latest, {"TS_0": "0/2", "TS_2": "0/2"}, {(0, 2)})
    assert shards == ["1/2"]
    assert why == {"TS_1": "shard 1/2 has no report", "TS_2": f"failed in shard 0/2: {LONG_ERROR}",
                   "TS_3": "shard 1/2 has no report"}
    assert missing_runs(run_ids, set(run_ids), latest, {}, {(0, 2), (1, 2)}) == ([], {})


def test_report_names_the_shard_and_runs_with_no_report(synth_project, tmp_path, capsys, caplog):
    """Only shard 0/2 ran: the report says 1 of 2 runs, names TS_7_1 and shard 1/2 (stdout, a warning and
    throughput.json); once shard 1/2 has run, nothing is missing and the merged figures are possible ones."""
    import run_all
    from pipeline.cli import main as tomopick

    out = tmp_path / "out"
    yml = write_yaml(tmp_path / "shard.yaml", run_doc(synth_project, output={"dir": str(out)}))
    assert run_all.main([str(yml), "--shard", "0/2"]) == 0
    capsys.readouterr()
    caplog.set_level(logging.WARNING)
    assert tomopick(["report", str(yml)]) == 0  # loud, not failed: as for a failed run, whose shard exited 1
    printed = capsys.readouterr().out
    assert "1 of 2 run(s) done, 0 failed; missing: TS_7_1 (shard 1/2 has no report)" in printed
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "no report from shard(s) 1/2" in warned and "TS_7_1 (shard 1/2 has no report)" in warned
    doc = json.loads((out / "throughput.json").read_text())
    assert doc["missing"] == {"shards": ["1/2"], "runs": {"TS_7_1": "shard 1/2 has no report"}}
    assert doc["summary"]["runs_selected"] == 2 and doc["summary"]["runs_missing"] == 1

    assert run_all.main([str(yml), "--shard", "1/2"]) == 0
    capsys.readouterr()
    caplog.clear()
    assert tomopick(["report", str(yml)]) == 0
    assert "2 of 2 run(s) done, 0 failed\n" in capsys.readouterr().out
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
    doc = json.loads((out / "throughput.json").read_text())
    assert doc["missing"] == {"shards": [], "runs": {}}
    shard_walls = [json.loads((out / f"throughput-shard{k}of2.json").read_text())["summary"]["wall_seconds"]
                   for k in (0, 1)]
    s = doc["summary"]
    # one after the other here: the merged wall time is both shards', not the longest one's
    assert s["wall_seconds_from"] == "the times any shard ran"
    assert sum(shard_walls) * 0.99 <= s["wall_seconds"] <= sum(shard_walls) * 1.01 + 0.5
    assert 0 < s["segment_busy_fraction"] <= 1 and s["wall_over_slowest_stage"] >= 1


# ---------------------------------------------------------------------------------------------------- one split


def _manifest(out_dir, k, n, **sections):
    """A shard's run manifest with the output settings of a run config with ``sections`` laid over it."""
    from pipeline.config import config_from_dict
    from pipeline.run.select import output_settings

    doc = run_doc("config.json")
    for section, values in sections.items():
        doc[section] = {**doc.get(section, {}), **values}
    cfg = config_from_dict(doc, source="x.yaml", check_files=False)
    (out_dir / f"run_manifest-shard{k}of{n}.json").write_text(json.dumps({"output_settings": output_settings(cfg)}))


def test_a_shard_report_without_summary_and_runs_is_refused_naming_the_file(cfg, tmp_path):
    from pipeline.errors import RunError

    out = tmp_path / "out"
    _shard_report(out, 0, 2, [_record("TS_0", 1.0)], 10.0)
    (out / "throughput-shard1of2.json").write_text('{"a": 1}')  # was merged as a shard with no runs
    with pytest.raises(RunError, match=rf"^shard report {out / 'throughput-shard1of2.json'}: not a tomopick "
                                       r"throughput report \(ValueError: it has no 'summary' and 'runs'\); run that "
                                       "shard again, or delete the file$"):
        merge_shard_reports(cfg, out)


def test_only_the_reports_of_one_split_are_merged_and_the_others_named(cfg, tmp_path):
    """0/2 and 1/2 of this job, and an old 0/3 left in the folder: it was merged in silently (3 shards, and a
    missing 1/3 and 2/3); now the newest set is merged, the other named, and --shards N picks one."""
    import os

    out = tmp_path / "out"
    old = _shard_report(out, 0, 3, [_record("TS_0", 5.0), _record("TS_3", 5.0)], 50.0, 0.0)
    os.utime(old, (1000.0, 1000.0))
    _shard_report(out, 0, 2, [_record("TS_0", 1.0), _record("TS_2", 1.0)], 10.0, 5000.0)
    _shard_report(out, 1, 2, [_record("TS_1", 1.0), _record("TS_3", 1.0)], 10.0, 5000.0)
    run_ids = ["TS_0", "TS_1", "TS_2", "TS_3"]
    path, summary = merge_shard_reports(cfg, out, run_ids, set(run_ids))
    doc = json.loads(path.read_text())
    assert doc["merged_from"] == ["throughput-shard0of2.json", "throughput-shard1of2.json"]
    assert doc["ignored"] == summary["ignored_reports"] == ["throughput-shard0of3.json"]
    assert summary["shard_count"] == 2 and summary["missing_shards"] == [] and summary["runs_done"] == 4
    assert doc["summary"]["stage_seconds_total"]["segment"] == 4.0  # the old shard's 10 s are not in

    path, summary = merge_shard_reports(cfg, out, run_ids, set(run_ids), shards=3)
    assert summary["shard_count"] == 3 and summary["missing_shards"] == ["1/3", "2/3"]
    assert summary["ignored_reports"] == ["throughput-shard0of2.json", "throughput-shard1of2.json"]


def test_report_refuses_a_shard_count_with_no_reports_naming_those_there(cfg, tmp_path):
    from pipeline.errors import RunError

    out = tmp_path / "out"
    _shard_report(out, 0, 2, [_record("TS_0", 1.0)], 10.0)
    with pytest.raises(RunError, match=r"no shard reports throughput-shardKof4.json in .* \(reports of N = 2 "
                                       r"shards are there\); run the 4 shards first, or give --shards N of those"):
        merge_shard_reports(cfg, out, shards=4)


def test_shards_that_split_different_run_lists_are_named_with_the_cause_and_the_way_on(cfg, tmp_path):
    """Shard 0/2 split 5 runs and did TS_0, TS_2, TS_4; then TS_1a was imported and shard 1/2 split 6: it took
    TS_1, TS_2, TS_4 (the last two skipped as done), so TS_1a and TS_3 fell to no shard. The report said only
    "in no shard's report", without cause or way on."""
    out = tmp_path / "out"
    before = ["TS_0", "TS_1", "TS_2", "TS_3", "TS_4"]
    now = ["TS_0", "TS_1", "TS_1a", "TS_2", "TS_3", "TS_4"]
    _shard_report(out, 0, 2, [_record(r, 1.0) for r in before[0::2]], 10.0, 0.0, split_of=before)
    _shard_report(out, 1, 2, [_record("TS_1", 1.0)] + [_record(r, 0.0, status="skipped-done") for r in ("TS_2", "TS_4")],
                  10.0, 20.0, split_of=now)
    done = {"TS_0", "TS_1", "TS_2", "TS_4"}
    _, summary = merge_shard_reports(cfg, out, now, done)
    warning = summary["split_warning"]
    assert warning.startswith("shards 0/2 and 1/2 split different run lists (5 vs 6 runs): the project changed "
                              "between them")
    assert "run the shards again (runs done are skipped), or the missing runs alone (run_ids: [...]" in warning
    assert summary["missing_runs"] == {"TS_1a": "in no shard's share: the shards split another run list",
                                       "TS_3": "in no shard's share: the shards split another run list"}


def test_shards_that_agree_but_split_another_list_than_the_projects_now_are_named(cfg, tmp_path):
    out = tmp_path / "out"
    before = ["TS_0", "TS_1", "TS_2"]
    _shard_report(out, 0, 2, [_record("TS_0", 1.0), _record("TS_2", 1.0)], 10.0, 0.0, split_of=before)
    _shard_report(out, 1, 2, [_record("TS_1", 1.0)], 10.0, 0.0, split_of=before)
    _, summary = merge_shard_reports(cfg, out, before, set(before))
    assert summary["split_warning"] is None
    _, summary = merge_shard_reports(cfg, out, [*before, "TS_3"], set(before))
    assert summary["split_warning"].startswith("the shards split 3 runs, the project has 4 selected runs now: it "
                                               "changed since they ran")
    assert summary["missing_runs"] == {"TS_3": "in no shard's share: the shards split another run list"}


def test_a_shard_warns_at_its_start_when_the_other_shards_split_another_run_list(tmp_path, caplog):
    from pipeline.config import config_from_dict
    from pipeline.run.reports import warn_split_differs

    out = tmp_path / "out"
    before, now = ["TS_0", "TS_1", "TS_2"], ["TS_0", "TS_1", "TS_1a", "TS_2"]
    _shard_report(out, 0, 2, [_record("TS_0", 1.0)], 10.0, split_of=before)
    _shard_report(out, 1, 3, [_record("TS_1", 1.0)], 10.0, split_of=before)  # another split: not this one's
    (out / "throughput-shard2of2.json").write_text("{not json")  # unreadable: left to tomopick report to name
    (out / "throughput-shard3of2.json").write_text('{"split": {"runs_selected": 9}}')  # no summary/runs
    shard = config_from_dict(run_doc("config.json", shard="1/2"), source="x.yaml", check_files=False)
    caplog.set_level(logging.WARNING)
    warn_split_differs(shard, {"shard": "1/2", **split_basis(before)}, out)
    assert not caplog.records
    warn_split_differs(shard, {"shard": "1/2", **split_basis(now)}, out)
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith(f"shard 1/2 splits 4 selected run(s), but the reports in {out} say shard 0/2 split 3: "
                           "the project changed between them")


def test_shards_that_ran_with_other_picking_settings_are_named(cfg, tmp_path):
    """Shard 0/2 picked with peaks and ntta 1, shard 1/2 with watershed and ntta 2 (and another window batch,
    which changes no pick): merged without a word before."""
    out = tmp_path / "out"
    _shard_report(out, 0, 2, [_record("TS_0", 1.0)], 10.0)
    _shard_report(out, 1, 2, [_record("TS_1", 1.0)], 10.0)
    _manifest(out, 0, 2, segment={"ntta": 1}, localize={"method": "peaks"})
    _manifest(out, 1, 2, segment={"ntta": 2, "window_batch": 8}, localize={"method": "watershed"})
    path, summary = merge_shard_reports(cfg, out)
    assert json.loads(path.read_text())["settings_differ"] == {
        "localize.method": {"0/2": "peaks", "1/2": "watershed"}, "segment.ntta": {"0/2": 1, "1/2": 2},
        # each method's own settings, which the other does not read
        **{f"localize.{key}": {"0/2": {"default": value}, "1/2": None}
           for key, value in (("peak_window", 1.0), ("smoothing", 0.25), ("thresholds", 0.25))},
        "localize.overlap_check": {"0/2": True, "1/2": None},
        "localize.filter_size": {"0/2": None, "1/2": 10}, "localize.radius_max_scale": {"0/2": None, "1/2": 1.0}}
    assert summary["settings_warning"].startswith(
        'shards 0/2 and 1/2 ran with settings that change the picks, so their scores are not of one job: '
        'localize.filter_size (0/2: null, 1/2: 10); localize.method (0/2: "peaks", 1/2: "watershed"); ')
    assert 'segment.ntta (0/2: 1, 1/2: 2) (from their run_manifest-shardKofN.json)' in summary["settings_warning"]
    _manifest(out, 1, 2, segment={"ntta": 1, "window_batch": 8}, localize={"method": "peaks"})
    assert merge_shard_reports(cfg, out)[1]["settings_warning"] is None


def test_a_shard_manifest_from_before_the_overlap_check_reads_as_picked_without_it(cfg, tmp_path):
    """Shard 0/2 picked with peaks before localize.overlap_check existed (its manifest has no such key), shard
    1/2 with --no-overlap-check: the same picks, nothing to say; against the check on, it is named."""
    from pipeline.run.reports import settings_differences

    out = tmp_path / "out"
    out.mkdir()
    _manifest(out, 0, 2, localize={"method": "peaks"})
    old = out / "run_manifest-shard0of2.json"
    doc = json.loads(old.read_text())
    assert doc["output_settings"].pop("localize.overlap_check") is True
    old.write_text(json.dumps(doc))
    paths = {"0/2": old, "1/2": out / "run_manifest-shard1of2.json"}
    _manifest(out, 1, 2, localize={"method": "peaks", "overlap_check": False})
    assert settings_differences(paths) == {}
    _manifest(out, 1, 2, localize={"method": "peaks"})
    assert settings_differences(paths) == {"localize.overlap_check": {"0/2": False, "1/2": True}}


def test_shards_with_nothing_to_do_leave_a_report_and_tomopick_report_scores_every_run(synth_project, tmp_path,
                                                                                        capsys, caplog):
    """(a) 3 shards on 2 runs: shard 2/3 had none and wrote no report, so `tomopick report` asked to run it;
    (b) the shards again into a new output.dir, every run done: `tomopick report` exited 2 ("no shard
    reports"), scoring nothing. A shard's earlier report with the timings stays when it covers its runs."""
    import run_all
    from pipeline.cli import main as tomopick

    yml = write_yaml(tmp_path / "shard.yaml", run_doc(synth_project, output={"dir": str(tmp_path / "out")},
                                                       evaluate={}))
    caplog.set_level(logging.INFO)
    for k in range(3):
        assert run_all.main([str(yml), "--shard", f"{k}/3"]) == 0
    assert "shard 2/3: no run; the project has 2 selected run(s), so shards 2..2 of 3 have none" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # an array rounded up: no warning
    empty = json.loads((tmp_path / "out" / "throughput-shard2of3.json").read_text())
    assert empty["runs"] == [] and empty["split"]["runs_selected"] == 2
    capsys.readouterr()
    caplog.clear()
    assert tomopick(["report", str(yml)]) == 0
    assert "merged 3 shard report(s) of 3 shard(s)" in capsys.readouterr().out
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]

    shard0 = (tmp_path / "out" / "throughput-shard0of3.json").read_bytes()
    assert json.loads(shard0)["summary"]["stage_seconds_total"]["segment"] > 0
    assert run_all.main([str(yml), "--shard", "0/3"]) == 0  # nothing to do: the report with the timings stays
    assert (tmp_path / "out" / "throughput-shard0of3.json").read_bytes() == shard0

    again = write_yaml(tmp_path / "again.yaml", run_doc(synth_project, output={"dir": str(tmp_path / "again")},
                                                         evaluate={}))
    for k in range(3):
        assert run_all.main([str(again), "--shard", f"{k}/3"]) == 0
    report = json.loads((tmp_path / "again" / "throughput-shard0of3.json").read_text())
    assert [r["status"] for r in report["runs"]] == ["skipped-done"]
    assert report["evaluation"]["final_fbeta_score"] > 0  # written after its evaluation, as a shard that worked
    assert (tmp_path / "again" / "run_manifest-shard0of3.json").is_file()
    capsys.readouterr()
    caplog.clear()
    assert tomopick(["report", str(again)]) == 0
    printed = capsys.readouterr().out
    assert "2 of 2 run(s) done, 0 failed\n" in printed and "ribosome" in printed  # the score table
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    merged = json.loads((tmp_path / "again" / "throughput.json").read_text())
    assert merged["summary"]["runs_already_done"] == 2 and merged["missing"] == {"shards": [], "runs": {}}
    metrics = json.loads((tmp_path / "again" / "scores" / "metrics.json").read_text())
    assert sorted(metrics["metrics"]) == ["TS_7_0", "TS_7_1"]


def test_a_job_without_stages_scores_the_picks_and_a_rescore_updates_the_kept_report(synth_project, tmp_path):
    """stages: [] with an evaluate block crashed (no segmentation to read labels from); a job with nothing to
    run that scores again (another beta) left throughput.json with the earlier job's score."""
    from pipeline.config import config_from_dict
    from pipeline.run import run_pipeline

    out = tmp_path / "out"
    doc = run_doc(synth_project, output={"dir": str(out)}, evaluate={})
    first = run_pipeline(config_from_dict(doc, source="x.yaml"), progress=False)
    assert [r.status for r in first.records] == ["done", "done"]
    report_before = json.loads((out / "throughput.json").read_text())
    assert report_before["evaluation"]["beta"] == 4.0

    only_score = run_pipeline(config_from_dict({**doc, "stages": []}, source="x.yaml"), progress=False)
    assert only_score.records == [] and only_score.report_path is None  # nothing ran, nothing of its own
    assert only_score.evaluation.final_fbeta_score == first.evaluation.final_fbeta_score

    again = run_pipeline(config_from_dict({**doc, "evaluate": {"beta": 1}}, source="x.yaml"), progress=False)
    assert [r.status for r in again.records] == ["skipped-done", "skipped-done"]
    report = json.loads((out / "throughput.json").read_text())
    assert report["evaluation"]["beta"] == 1.0
    assert report["evaluation"]["final_fbeta_score"] == again.evaluation.final_fbeta_score
    assert report["summary"] == report_before["summary"]  # the work's figures stay


def test_manifest_versions_name_the_cuda13_gpu_packages(monkeypatch):
    """The GPU image carries CuPy and cuCIM for CUDA 13 (cupy-cuda13x, cucim-cu13) and numba-cuda: the manifest
    records them, not only the CUDA 12 names."""
    from importlib import metadata

    from pipeline.run import reports

    installed = {"torch": "2.11.0", "numba": "0.62.1", "numba-cuda": "0.30.4", "cupy-cuda13x": "14.2.0",
                 "cucim-cu13": "26.10.0"}

    def version(name):
        if name not in installed:
            raise metadata.PackageNotFoundError(name)
        return installed[name]

    monkeypatch.setattr(metadata, "version", version)
    assert reports.package_versions() == {"python": reports.platform.python_version(), **installed}
