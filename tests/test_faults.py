"""The fault matrix of issue 13, in this process: bad tomograms, failed rewrites, refused ids, empty selections,
bad pick files, OS errors and file modes, each met as an operator meets it (a YAML config given to
``run_all.py``, or a ``tomopick`` command) and checked for its exact outcome: exit code, the one line that names
run / file / key / count, no done marker for a failed run, earlier outputs intact byte for byte, no traceback.

Processes (signals, kill -9, drivers at once, a read-only mount) are in test_faults_procs.py.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
from pathlib import Path

import numpy as np
import pytest

import run_all
from pipeline.cli import main as tomopick
from tests.faultlib import (
    DEMO_CONFIG,
    DEMO_WEIGHTS,
    RUNS,
    assert_no_traceback,
    chunk_files,
    copy_tree_project,
    done_marker,
    error_lines,
    n_points,
    outputs_of,
    overlay,
    picks_files,
    rechunk_level0,
    run_doc,
    set_voxels,
    snapshot,
    tomogram_store,
    warning_lines,
    write_yaml,
    writing_marker,
)

SHAPE = (40, 72, 64)  # the template project's runs (tests/conftest.py)


@pytest.fixture(autouse=True)
def _keep_signal_handlers():
    """``tomopick`` installs SIGTERM/SIGUSR1 handlers; give pytest its own back."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


@pytest.fixture(scope="module")
def done_project(synth_project_template, tmp_path_factory):
    """The tiny project with both runs done once by the driver (reports in <overlay>/tomopick): the earlier
    outputs that a failed rewrite must not lose. Made under umask 022."""
    config = copy_tree_project(synth_project_template, tmp_path_factory.mktemp("done") / "project")
    old = os.umask(0o022)
    try:
        assert run_all.main([str(write_yaml(config.parent.parent / "run.yaml", run_doc(config)))]) == 0
    finally:
        os.umask(old)
    assert all(n_points(config, r) > 0 for r in RUNS)
    return config


@pytest.fixture()
def done_copy(done_project, tmp_path):
    return copy_tree_project(done_project, tmp_path / "done")


def run_yaml(tmp_path, project, *flags, name="run.yaml", **over) -> int:
    return run_all.main([str(write_yaml(tmp_path / name, run_doc(project, **over))), *flags])


def no_segmenting(monkeypatch):
    import pipeline.segment

    def refuse(*a, **k):
        raise AssertionError("segmented although the job should have stopped before any work")

    monkeypatch.setattr(pipeline.segment, "segment_volume", refuse)


# ---------------------------------------------------------------------------------------------------- item 1

NONFINITE = {  # case -> (index, value, voxels that are then non-finite)
    "one-inf": ((5, 6, 7), np.inf, 1),
    "nan-block": ((slice(8, 12), slice(10, 15), slice(0, 6)), np.nan, 4 * 5 * 6),
    "all-nan": (Ellipsis, np.nan, int(np.prod(SHAPE))),
}


@pytest.mark.parametrize("case", list(NONFINITE))
def test_nonfinite_voxels_fail_the_run_naming_the_count(case, synth_project, tmp_path, caplog, capsys):
    index, value, count = NONFINITE[case]
    assert set_voxels(synth_project, "TS_7_1", index, value) == count
    if case == "one-inf":  # on_error skip: the other run is done, the bad one failed, exit 1
        rc = run_yaml(tmp_path, synth_project, output={"on_error": "skip"})
        assert done_marker(synth_project, "TS_7_0").is_file() and n_points(synth_project, "TS_7_0") > 0
        assert "failed runs: TS_7_1 (RunError: run 'TS_7_1': tomogram wbp@10 has 1 non-finite" in capsys.readouterr().out
    else:
        rc = run_yaml(tmp_path, synth_project, run_ids=["TS_7_1"])
    assert rc == 1
    named = [e for e in error_lines(caplog) if f"run 'TS_7_1': tomogram wbp@10 has {count} non-finite voxels" in e]
    assert len(named) == 1 and "segment.nonfinite: zero" in named[0]
    assert not done_marker(synth_project, "TS_7_1").exists()
    assert outputs_of(synth_project, "TS_7_1") == {}  # no segmentation, no picks
    assert_no_traceback(capsys.readouterr().err)


@pytest.mark.parametrize("case", ["one-inf", "all-nan"])
def test_nonfinite_zero_policy_sets_them_to_zero_and_says_so(case, synth_project, tmp_path, caplog):
    index, value, count = NONFINITE[case]
    set_voxels(synth_project, "TS_7_1", index, value)
    assert run_yaml(tmp_path, synth_project, run_ids=["TS_7_1"], segment={"nonfinite": "zero"}) == 0
    assert any(f"{count} non-finite voxels (NaN or inf) set to 0" in w for w in warning_lines(caplog))
    assert done_marker(synth_project, "TS_7_1").is_file()


def test_the_advice_of_a_failed_run_works_on_the_command_line(synth_project, caplog):
    """`tomopick segment` on a tomogram with NaN: the error names --nonfinite zero and --on-error skip, flags that
    segment has, and they do what it says."""
    set_voxels(synth_project, "TS_7_1", (5, 6, 7), np.nan)
    argv = ["segment", "-c", str(synth_project), "-mc", str(DEMO_CONFIG), "-mw", str(DEMO_WEIGHTS), "--ntta", "1",
            "--device", "cpu"]
    assert tomopick(argv) == 1
    text = " ".join(error_lines(caplog))
    assert "--nonfinite zero" in text and "--on-error skip" in text
    caplog.clear()
    assert tomopick([*argv, "--on-error", "skip"]) == 1  # the other run is done, this one listed as failed
    assert done_marker(synth_project, "TS_7_0", "segment-octopi_1_predict").is_file()
    assert not done_marker(synth_project, "TS_7_1", "segment-octopi_1_predict").exists()
    caplog.clear()
    assert tomopick([*argv, "--nonfinite", "zero"]) == 0
    assert any("1 non-finite voxels (NaN or inf) set to 0" in w for w in warning_lines(caplog))
    assert done_marker(synth_project, "TS_7_1", "segment-octopi_1_predict").is_file()


def test_nonfinite_policy_is_checked_when_the_config_is_read(synth_project, tmp_path, caplog):
    assert run_yaml(tmp_path, synth_project, segment={"nonfinite": "ignore"}) == 2
    assert any("segment.nonfinite" in e and "ignore" in e for e in error_lines(caplog))


# ---------------------------------------------------------------------------------------------------- item 2


def _delete_first_chunk(config):
    chunk_files(config, "TS_7_1")[0].unlink()
    return "1 of 1 chunks of array '0' are missing"


def _delete_one_of_many(config):
    n = rechunk_level0(config, "TS_7_1")
    chunk_files(config, "TS_7_1")[5].unlink()
    return f"1 of {n} chunks of array '0' are missing"


def _corrupt_chunk(config):
    chunk = chunk_files(config, "TS_7_1")[0]
    chunk.write_bytes(chunk.read_bytes()[:40] + b"\0" * 64)
    return "cannot read"


def _delete_level0(config):
    import shutil

    shutil.rmtree(tomogram_store(config, "TS_7_1") / "0")
    return "cannot read"


DAMAGE = {"missing-chunk": _delete_first_chunk, "one-of-12-chunks-missing": _delete_one_of_many,
          "corrupt-chunk": _corrupt_chunk, "deleted-level-0": _delete_level0}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_zarr_store_fails_the_run_naming_run_and_path(case, synth_project, tmp_path, caplog, capsys):
    expected = DAMAGE[case](synth_project)
    assert run_yaml(tmp_path, synth_project, run_ids=["TS_7_1"]) == 1
    store = str(tomogram_store(synth_project, "TS_7_1"))
    named = [e for e in error_lines(caplog) if "run 'TS_7_1': tomogram wbp@10" in e and store in e]
    assert len(named) == 1, error_lines(caplog)
    assert expected in named[0]
    assert not done_marker(synth_project, "TS_7_1").exists() and outputs_of(synth_project, "TS_7_1") == {}
    assert_no_traceback(capsys.readouterr().err)


def test_deleted_zattrs_reads_the_same_voxels(done_copy, done_project, tmp_path, caplog):
    """The multiscale metadata is not needed to read level 0: the run is redone to the same picks."""
    (tomogram_store(done_copy, "TS_7_1") / ".zattrs").unlink()
    assert run_yaml(tmp_path, done_copy, "--overwrite", run_ids=["TS_7_1"]) == 0
    assert picks_files(done_copy, "TS_7_1") == picks_files(done_project, "TS_7_1")


# ---------------------------------------------------------------------------------------------------- item 3


def _fail_read(monkeypatch, config):
    chunk_files(config, "TS_7_1")[0].unlink()


def _fail_segment(monkeypatch, config):
    import pipeline.segment

    real, calls = pipeline.segment.segment_volume, []

    def segment_volume(*a, **k):
        calls.append(1)
        if len(calls) == 2:  # TS_7_1
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real(*a, **k)

    monkeypatch.setattr(pipeline.segment, "segment_volume", segment_volume)


def _fail_write(monkeypatch, config):
    from pipeline import copick_io

    real, written = copick_io.write_picks, []

    def write_picks(root, run_id, *a, **k):
        if run_id == "TS_7_1" and len(written) == 2:  # its segmentation and two pick sets are written
            raise OSError(errno.ENOSPC, "No space left on device")
        if run_id == "TS_7_1":
            written.append(1)
        return real(root, run_id, *a, **k)

    monkeypatch.setattr(copick_io, "write_picks", write_picks)


@pytest.mark.parametrize("fault", [_fail_read, _fail_segment, _fail_write], ids=["read", "segment", "write"])
def test_failed_rewrite_keeps_the_earlier_outputs_byte_for_byte(fault, done_copy, tmp_path, monkeypatch, caplog):
    before = {r: outputs_of(done_copy, r) for r in RUNS}
    assert all("done-marker" in b and len(b) > 6 for b in before.values())
    fault(monkeypatch, done_copy)
    assert run_yaml(tmp_path, done_copy, "--overwrite", output={"on_error": "skip"}) == 1
    (line,) = [e for e in error_lines(caplog) if e.startswith("run TS_7_1 failed")]
    if fault is _fail_write:
        assert "writing picks octopi/1 of beta-galactosidase failed: OSError: [Errno 28] No space" in line
    after = {r: outputs_of(done_copy, r) for r in RUNS}
    assert after["TS_7_1"] == before["TS_7_1"]  # segmentation, picks and done marker as they were
    assert picks_files(done_copy, "TS_7_0") == {k[6:]: v for k, v in before["TS_7_0"].items()
                                               if k.startswith("Picks/")}  # redone: the same picks
    assert not writing_marker(done_copy, "TS_7_1").exists()
    monkeypatch.undo()
    caplog.clear()
    # the earlier outputs are still this job's, done: a plain resume skips both runs without a complaint
    no_segmenting(monkeypatch)
    assert run_yaml(tmp_path, done_copy) == 0
    assert not error_lines(caplog)


def test_half_written_run_whose_read_fails_keeps_its_outputs(done_copy, tmp_path, caplog):
    """A job killed while writing TS_7_1 left its writing marker and no done marker; the next job fails to read
    the tomogram: the run fails, and what was there stays (it is redone once the tomogram reads)."""
    done_marker(done_copy, "TS_7_1").unlink()
    writing_marker(done_copy, "TS_7_1").parent.mkdir(parents=True, exist_ok=True)
    writing_marker(done_copy, "TS_7_1").write_text("{}")
    before = outputs_of(done_copy, "TS_7_1")
    chunk_files(done_copy, "TS_7_1")[0].unlink()
    assert run_yaml(tmp_path, done_copy, output={"on_error": "skip"}) == 1
    assert outputs_of(done_copy, "TS_7_1") == before and writing_marker(done_copy, "TS_7_1").is_file()


def test_outputs_nobody_vouches_for_are_not_replaced_without_overwrite(done_copy, done_project, tmp_path,
                                                                        monkeypatch, caplog, capsys):
    """Picks and a segmentation that exist with no done marker (written by someone else, or before markers
    existed): refused before any work, naming the run, what exists and how to go on."""
    done_marker(done_copy, "TS_7_1").unlink()
    before = outputs_of(done_copy, "TS_7_1")
    no_segmenting(monkeypatch)
    assert run_yaml(tmp_path, done_copy) == 2
    (line,) = error_lines(caplog)
    assert "1 run(s) already have outputs" in line and "TS_7_1: segmentation predict:octopi/1, picks octopi/1 of " \
        "apo-ferritin, beta-amylase" in line and "Pass --overwrite" in line
    assert outputs_of(done_copy, "TS_7_1") == before
    assert_no_traceback(capsys.readouterr().err)
    monkeypatch.undo()
    assert run_yaml(tmp_path, done_copy, "--overwrite", run_ids=["TS_7_1"]) == 0
    assert picks_files(done_copy, "TS_7_1") == picks_files(done_project, "TS_7_1")


def test_a_finished_segmentation_is_not_segmented_again_by_another_job_without_overwrite(done_copy, tmp_path,
                                                                                        caplog):
    """run_all's job wrote predict:octopi/1 and its done marker names it. `tomopick segment` into the same
    segmentation counts it as done (and says its probabilities were not saved); with --overwrite it segments
    again, and the picks made from the old segmentation are picked again. A full job with other picks does not
    replace a segmentation another job finished either."""
    before = outputs_of(done_copy, "TS_7_0")
    segment = ["segment", "-c", str(done_copy), "-mc", str(DEMO_CONFIG), "-mw", str(DEMO_WEIGHTS), "--ntta", "1",
               "--device", "cpu", "-runs", "TS_7_0", "--save-probabilities", str(tmp_path / "probs")]
    caplog.set_level(logging.INFO)
    assert tomopick(segment) == 0, error_lines(caplog)
    assert outputs_of(done_copy, "TS_7_0") == before
    assert "segmentation predict:octopi/1 was finished by an earlier tomopick job (a full job, picks octopi/1)" \
        in caplog.text
    assert "have no probabilities in" in caplog.text and "--overwrite" in caplog.text
    assert not (tmp_path / "probs" / "TS_7_0.h5").exists()
    caplog.clear()
    assert tomopick([*segment, "--overwrite"]) == 0, error_lines(caplog)
    assert (tmp_path / "probs" / "TS_7_0.h5").is_file()
    after = outputs_of(done_copy, "TS_7_0")
    assert {k for k in after if k.startswith("Picks/")} == {k for k in before if k.startswith("Picks/")}
    # the picks now predate their segmentation: a localize job picks that run again (and only that run), once
    caplog.clear()
    localize = ["localize", "-c", str(done_copy), "-sinfo", "predict,octopi,1", "-np", "1", "--device", "cpu"]
    assert tomopick(localize) == 0, error_lines(caplog)
    redone = [r.getMessage() for r in caplog.records if "was written after its picks" in r.getMessage()]
    assert len(redone) == 1 and redone[0].startswith("run TS_7_0: segmentation predict:octopi/1"), redone
    assert done_marker(done_copy, "TS_7_0").stat().st_mtime_ns > done_marker(done_copy, "TS_7_1").stat().st_mtime_ns
    caplog.clear()
    assert tomopick(localize) == 0
    assert not [r for r in caplog.records if "was written after its picks" in r.getMessage()]
    # a full job into other picks would segment both runs again: refused before any work, naming the way on
    caplog.clear()
    seg_before = {k: v for k, v in outputs_of(done_copy, "TS_7_1").items() if k.startswith("Segmentations/")}
    assert run_yaml(tmp_path, done_copy, localize={"pick_session_id": "9"}) == 2
    (line,) = error_lines(caplog)
    assert "2 run(s) have the segmentation predict:octopi/1 finished by an earlier tomopick job" in line
    assert "TS_7_0 (by tomopick segment); TS_7_1 (by a full job, picks octopi/1)" in line
    assert "Pass --overwrite" in line
    assert "tomopick localize -sinfo" in line
    caplog.clear()  # peaks cannot pick from a segmentation alone: the advice says so
    assert run_yaml(tmp_path, done_copy, localize={"pick_session_id": "9", "method": "peaks"}) == 2
    (line,) = error_lines(caplog)
    assert "peaks picks from class probabilities, which that segmentation does not keep" in line
    assert {k: v for k, v in outputs_of(done_copy, "TS_7_1").items() if k.startswith("Segmentations/")} == seg_before
    # a segmentation that no marker names is still refused
    caplog.clear()
    rc = tomopick(["segment", "-c", str(done_copy), "-mc", str(DEMO_CONFIG), "-mw", str(DEMO_WEIGHTS), "--ntta", "1",
                   "--device", "cpu", "-runs", "TS_7_1", "-seginfo", "predict,someone,1"])
    assert rc == 0  # nothing there yet: written
    for marker in (overlay(done_copy) / "logs").glob("done-segment-someone_1_predict/TS_7_1.json"):
        marker.unlink()
    caplog.clear()
    rc = tomopick(["segment", "-c", str(done_copy), "-mc", str(DEMO_CONFIG), "-mw", str(DEMO_WEIGHTS), "--ntta", "1",
                   "--device", "cpu", "-runs", "TS_7_1", "-seginfo", "predict,someone,1"])
    assert rc == 2
    (line,) = error_lines(caplog)
    assert "TS_7_1: segmentation predict:someone/1" in line and "Pass --overwrite" in line
    assert "-seginfo" in line and "-psid" not in line  # segment has no pick session to change


def test_localize_into_the_ground_truth_pick_set_is_refused(synth_project, caplog):
    gt = sorted((overlay(synth_project) / "ExperimentRuns" / "TS_7_0" / "Picks").glob("data-portal_0_*"))
    before = [p.read_bytes() for p in gt]
    rc = tomopick(["localize", "-c", str(synth_project), "-sinfo", "targets,data-portal,0", "-pui", "data-portal",
                   "-psid", "0", "-np", "1", "--device", "cpu"])
    assert rc == 2
    (line,) = error_lines(caplog)
    assert "TS_7_0: picks data-portal/0 of apo-ferritin" in line and "--overwrite" in line
    assert [p.read_bytes() for p in gt] == before


# ---------------------------------------------------------------------------------------------------- item 4


@pytest.mark.parametrize("section,key,value", [
    ("localize", "pick_user_id", "my_user"), ("localize", "pick_session_id", "run_2"),
    ("segment", "write_segmentation", "predict,my_user,1"),
])
def test_ids_with_underscore_are_refused_when_the_config_is_read(section, key, value, synth_project, tmp_path,
                                                                  monkeypatch, caplog, capsys):
    no_segmenting(monkeypatch)
    before = snapshot(overlay(synth_project))
    assert run_yaml(tmp_path, synth_project, **{section: {key: value}}) == 2
    (line,) = error_lines(caplog)
    assert "run.yaml" in line and repr(value.split(",")[1] if "," in value else value) in line
    assert "contains '_'" in line and "-" in line.split("use e.g.")[1]
    assert snapshot(overlay(synth_project)) == before
    assert_no_traceback(capsys.readouterr().err)


@pytest.mark.parametrize("argv,value", [
    (["localize", "-pui", "my_user"], "my_user"), (["localize", "-psid", "a_b"], "a_b"),
    (["segment", "-mc", str(DEMO_CONFIG), "-mw", str(DEMO_WEIGHTS), "-seginfo", "predict,my_user,1"], "my_user"),
    (["evaluate", "-puid", "my_user"], "my_user"), (["evaluate", "-psid", "1_2"], "1_2"),
])
def test_ids_with_underscore_are_refused_on_the_command_line(argv, value, synth_project, caplog):
    before = snapshot(overlay(synth_project))
    assert tomopick([argv[0], "-c", str(synth_project), *argv[1:]]) == 2
    (line,) = error_lines(caplog)
    assert repr(value) in line and "contains '_'" in line
    assert snapshot(overlay(synth_project)) == before


# ---------------------------------------------------------------------------------------------------- item 5


@pytest.mark.parametrize("over,expected", [
    ({"voxel_size": 7.5}, "no run has tomogram wbp@7.5; the project's tomograms: wbp@10 (2 runs)"),
    ({"tomo_alg": "denoised"}, "no run has tomogram denoised@10; the project's tomograms: wbp@10 (2 runs)"),
    ({"run_ids": ["TS_9", "ts_7_0"]}, "none of the runs asked for (TS_9, ts_7_0) is in the project; it has 2 run(s), "
                                      "e.g. TS_7_0, TS_7_1"),
])
def test_a_selection_of_nothing_is_an_error_listing_what_exists(over, expected, synth_project, tmp_path, caplog,
                                                                capsys):
    assert run_yaml(tmp_path, synth_project, **over) == 2
    (line,) = error_lines(caplog)
    assert expected in line
    assert "0 run(s) done" not in capsys.readouterr().out


def test_an_empty_project_is_an_error(tmp_path, caplog):
    from pipeline.synthetic import copick_config_dict

    (tmp_path / "empty" / "overlay").mkdir(parents=True)
    config = tmp_path / "empty" / "config.json"
    config.write_text(json.dumps(copick_config_dict(tmp_path / "empty" / "overlay")))
    assert run_yaml(tmp_path, config) == 2
    (line,) = error_lines(caplog)
    assert str(config) in line and "the project has no runs" in line


def test_a_partly_missing_selection_is_one_warning(synth_project, caplog, capsys):
    """Localize alone (from the ground-truth label map: no network) on one run that exists and two that do not."""
    rc = tomopick(["localize", "-c", str(synth_project), "-sinfo", "targets,data-portal,0", "-np", "1",
                   "--device", "cpu", "--run-ids", "TS_7_0,TS_9,TS_8"])
    assert rc == 0
    (line,) = warning_lines(caplog)
    assert "2 run(s) skipped" in line and "TS_9 (no such run in the project)" in line and "TS_8" in line
    assert "1 run(s) done" in capsys.readouterr().out and n_points(synth_project, "TS_7_0") > 0


def test_localize_without_the_segmentation_lists_the_segmentations(synth_project, caplog):
    assert tomopick(["localize", "-c", str(synth_project), "-sinfo", "predict,octopi,1", "--device", "cpu"]) == 2
    (line,) = error_lines(caplog)
    assert "no run has the segmentation predict:octopi/1 at 10 A" in line
    assert "targets:data-portal/0@10 (2 runs)" in line


# ---------------------------------------------------------------------------------------------------- item 6


@pytest.mark.parametrize("flags,what", [
    (["-psid", "2"], "no predicted picks of user 'octopi', session 2"),
    (["-gtuid", "data-portl"], "no ground truth picks of user 'data-portl', session any"),
])
def test_evaluate_of_a_pick_set_that_is_nowhere_lists_the_pairs(flags, what, done_project, tmp_path, caplog):
    assert tomopick(["evaluate", "-c", str(done_project), "-o", str(tmp_path / "scores"), *flags]) == 2
    (line,) = error_lines(caplog)
    assert what in line and "data-portal/0 (12 files), octopi/1 (12 files)" in line
    assert not (tmp_path / "scores").exists()


def _nan_point(data):
    data["points"][0]["location"]["x"] = float("nan")
    return json.dumps(data)


BAD_PICKS = {
    "nan-coordinates": (_nan_point, "have NaN or infinite coordinates"),
    "points-null": (lambda data: json.dumps({**data, "points": None}), "cannot read"),
    "truncated": (lambda data: json.dumps(data, indent=4)[:200], "cannot read"),
}


@pytest.mark.parametrize("case", list(BAD_PICKS))
def test_evaluate_of_a_bad_pick_file_names_run_object_and_file(case, done_copy, tmp_path, caplog, capsys):
    edit, expected = BAD_PICKS[case]
    path = overlay(done_copy) / "ExperimentRuns" / "TS_7_1" / "Picks" / "octopi_1_apo-ferritin.json"
    path.write_text(edit(json.loads(path.read_text())))
    assert tomopick(["evaluate", "-c", str(done_copy), "-o", str(tmp_path / "scores")]) == 2
    (line,) = error_lines(caplog)
    assert "run 'TS_7_1', object 'apo-ferritin', picks octopi/1" in line and str(path) in line and expected in line
    assert_no_traceback(capsys.readouterr().err)


@pytest.mark.parametrize("evaluate,key", [
    ({"beta": 0}, "'evaluate.beta' should be > 0"), ({"beta": -2.0}, "'evaluate.beta' should be > 0"),
    ({"distance_threshold_scale": -0.5}, "'evaluate.distance_threshold_scale' should be > 0"),
])
def test_bad_scoring_settings_are_refused_before_any_segmentation(evaluate, key, synth_project, tmp_path,
                                                                   monkeypatch, caplog):
    no_segmenting(monkeypatch)
    before = snapshot(overlay(synth_project))
    assert run_yaml(tmp_path, synth_project, evaluate=evaluate) == 2
    (line,) = error_lines(caplog)
    assert key in line and "run.yaml" in line
    assert snapshot(overlay(synth_project)) == before


def test_a_misspelled_class_in_a_run_configs_peaks_settings_names_the_config_not_a_flag(synth_project, tmp_path,
                                                                                       monkeypatch, caplog):
    no_segmenting(monkeypatch)
    assert run_yaml(tmp_path, synth_project, localize={"method": "peaks", "thresholds": {"apoferritin": 0.3}}) == 2
    (line,) = error_lines(caplog)
    assert "run.yaml: 'localize.thresholds' names 'apoferritin', not a particle object" in line
    assert "--threshold" not in line


def test_an_unknown_key_in_a_run_configs_tuned_file_names_that_file(synth_project, tmp_path, monkeypatch, caplog):
    no_segmenting(monkeypatch)
    tuned = tmp_path / "tuned.yaml"
    tuned.write_text("localize:\n  method: peaks\n  tresholds: {default: 0.3}\n")
    assert run_yaml(tmp_path, synth_project, localize={"tuned": str(tuned)}) == 2
    (line,) = error_lines(caplog)
    assert f"'localize.tuned' file '{tuned}'" in line and "unknown key 'localize.tresholds'" in line


def test_a_misspelled_ground_truth_user_is_refused_before_any_segmentation(synth_project, tmp_path, monkeypatch,
                                                                         caplog):
    no_segmenting(monkeypatch)
    before = snapshot(overlay(synth_project))
    assert run_yaml(tmp_path, synth_project, evaluate={"ground_truth_user_id": "data-portl"}) == 2
    (line,) = error_lines(caplog)
    assert "run.yaml" in line and "no ground truth picks of user 'data-portl'" in line
    assert "data-portal/0" in line and "evaluate.ground_truth_user_id" in line
    assert snapshot(overlay(synth_project)) == before


@pytest.mark.parametrize("flags", [["-fb", "0"], ["-dts", "-0.5"]])
def test_bad_scoring_flags_are_refused(flags, done_project, tmp_path, caplog):
    assert tomopick(["evaluate", "-c", str(done_project), "-o", str(tmp_path / "s"), *flags]) == 2
    (line,) = error_lines(caplog)
    assert "should be > 0" in line and not (tmp_path / "s").exists()


# ---------------------------------------------------------------------------------------------------- item 7


def leftovers(folder) -> list[Path]:
    """Temporary files of the atomic writer and claims: a stopped job leaves none."""
    return [p for p in Path(folder).rglob("*") if p.name.endswith(".tmp") or p.parent.name.startswith("claim-")]


def test_disk_full_before_start_is_one_line_with_the_path(synth_project, tmp_path, monkeypatch, caplog, capsys):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")  # as the kernel says it: no file name

    monkeypatch.setattr(os, "fsync", full)
    no_segmenting(monkeypatch)
    assert run_yaml(tmp_path, synth_project) == 74
    (line,) = error_lines(caplog)
    assert line == f"{overlay(synth_project) / 'logs' / 'segment-octopi_1_predict.yaml'}: No space left on device"
    assert not leftovers(overlay(synth_project)) and all(outputs_of(synth_project, r) == {} for r in RUNS)
    assert_no_traceback(capsys.readouterr().err)


@pytest.mark.parametrize("case", ["permission-denied", "path-under-a-file"])
def test_an_output_folder_that_cannot_be_written_stops_the_job_before_any_work(case, synth_project, tmp_path,
                                                                               monkeypatch, caplog, capsys):
    if case == "permission-denied":
        out = tmp_path / "locked"
        out.mkdir()
        out.chmod(0o555)
        if os.access(out, os.W_OK):  # root writes anyway: give the answer the kernel gives everyone else
            real = os.access
            monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if Path(p) == out else real(p, mode))
        expected = f"{out}: Permission denied"
    else:
        (tmp_path / "a-file").write_text("")
        out = tmp_path / "a-file" / "out"
        expected = f"{out}: Not a directory"
    no_segmenting(monkeypatch)
    rc = run_yaml(tmp_path, synth_project, output={"dir": str(out)})
    if case == "permission-denied":
        out.chmod(0o755)
    assert rc == 74
    (line,) = error_lines(caplog)
    assert line == expected
    assert all(outputs_of(synth_project, r) == {} for r in RUNS)
    assert_no_traceback(capsys.readouterr().err)


def test_a_claim_that_cannot_be_written_stops_the_job_naming_the_path(synth_project, tmp_path, monkeypatch, caplog):
    """Not "0 run(s) done", exit 0: the overlay takes the parameter logs but not the claims."""
    claims = overlay(synth_project) / "logs" / "claim-octopi_1"
    claims.parent.mkdir(parents=True)
    claims.write_text("")  # a file where the claims' folder goes
    no_segmenting(monkeypatch)
    assert run_yaml(tmp_path, synth_project, output={"dir": str(tmp_path / "out")}) == 74
    (line,) = error_lines(caplog)
    assert line.startswith(f"{claims}: ")
    assert json.loads((tmp_path / "out" / "throughput.json").read_text())["summary"]["runs_done"] == 0


def test_a_shard_with_nothing_to_do_writes_the_report_it_prints(done_copy, tmp_path, capsys):
    """Its runs done by an unsharded job: the shard still reports them (as done already), or `tomopick report`
    would take it for a shard that never ran; what it prints is what it wrote."""
    assert run_yaml(tmp_path, done_copy, "--shard", "1/2") == 0
    out = capsys.readouterr().out
    report = overlay(done_copy) / "tomopick" / "throughput-shard1of2.json"
    assert f"report: {report}" in out and f"manifest: {report.with_name('run_manifest-shard1of2.json')}" in out
    assert [(r["run_id"], r["status"]) for r in json.loads(report.read_text())["runs"]] == [("TS_7_1", "skipped-done")]


def test_a_resume_with_nothing_to_do_writes_nothing(done_copy, tmp_path, monkeypatch, caplog):
    """All runs done, evaluated once: evaluating again (and resuming) rewrites no file, keeps the earlier
    timings, and so works from a read-only overlay (see test_faults_procs for a real read-only mount)."""
    assert run_yaml(tmp_path, done_copy, evaluate={}) == 0  # scores written once (the runs are skipped)
    report = overlay(done_copy) / "tomopick" / "throughput.json"
    timings = json.loads(report.read_text())["summary"]["stage_seconds_total"]
    assert timings["segment"] > 0
    before = snapshot(overlay(done_copy))
    no_segmenting(monkeypatch)
    caplog.set_level(logging.INFO)
    assert run_yaml(tmp_path, done_copy, evaluate={}) == 0
    assert snapshot(overlay(done_copy)) == before
    assert json.loads(report.read_text())["summary"]["stage_seconds_total"] == timings
    assert any("nothing to run; the earlier reports" in r.getMessage() for r in caplog.records)


def test_tomopick_report_without_shard_reports_or_with_a_bad_one_names_the_file(synth_project, tmp_path, caplog):
    yml = write_yaml(tmp_path / "run.yaml", run_doc(synth_project, output={"dir": str(tmp_path / "out")}))
    assert tomopick(["report", str(yml)]) == 2
    assert f"no shard reports throughput-shardKofN.json in {tmp_path / 'out'}" in error_lines(caplog)[0]
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "throughput-shard0of2.json").write_text('{"runs": [{"run": "TS_7_0"}]}')
    caplog.clear()
    assert tomopick(["report", str(yml)]) == 2
    (line,) = error_lines(caplog)
    assert line.startswith(f"shard report {tmp_path / 'out' / 'throughput-shard0of2.json'}: not a tomopick")
    (tmp_path / "out" / "throughput-shard0of2.json").write_text('{"a": 1}')  # was merged as a shard with no runs
    caplog.clear()
    assert tomopick(["report", str(yml)]) == 2
    (line,) = error_lines(caplog)
    assert line.startswith(f"shard report {tmp_path / 'out' / 'throughput-shard0of2.json'}: not a tomopick")


# ---------------------------------------------------------------------------------------------------- item 10


def test_every_file_written_follows_the_umask(synth_project, tmp_path):
    from pipeline import copick_io
    from pipeline.run.select import Claims

    old = os.umask(0o027)
    try:
        assert run_yaml(tmp_path, synth_project, run_ids=["TS_7_0"], evaluate={}) == 0
        claims = Claims(copick_io.open_project(synth_project), "octopi_1")
        assert claims.acquire("TS_7_1") is None
        claim = next((overlay(synth_project) / "logs" / "claim-octopi_1").iterdir())
        modes = {str(claim): claim.stat().st_mode & 0o777}
        claims.release_all()
    finally:
        os.umask(old)
    ov = overlay(synth_project)
    written = [done_marker(synth_project, "TS_7_0"), ov / "logs" / "segment-octopi_1_predict.yaml",
               ov / "logs" / "localize-octopi_1.yaml", *(ov / "tomopick").glob("*.json"),
               *(ov / "tomopick" / "scores").iterdir(), *(ov / "ExperimentRuns" / "TS_7_0" / "Picks").glob("octopi_*")]
    assert len(written) == 3 + 2 + 3 + 6
    modes.update({str(p): p.stat().st_mode & 0o777 for p in written})
    assert set(modes.values()) == {0o640}, modes


def test_files_of_a_job_under_umask_022_are_readable_by_all(done_project):
    ov = overlay(done_project)
    files = [*(ov / "logs").rglob("*.*"), *(ov / "tomopick").glob("*.json")]
    assert len(files) >= 6 and {p.stat().st_mode & 0o777 for p in files} == {0o644}


# ---------------------------------------------------------------------------------------------------- item 8 (claims)


def _claim(config, run_id: str, host: str, pid: int, age: float = 0.0) -> Path:
    import time

    path = overlay(config) / "logs" / "claim-octopi_1" / f"{run_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"host": host, "pid": pid, "since": "then"}))
    os.utime(path, (time.time() - age, time.time() - age))
    return path


def _dead_pid() -> int:
    import subprocess

    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("holder", ["dead-pid-here", "silent-host-for-an-hour"])
def test_a_stale_claim_is_taken_over(holder, synth_project, tmp_path, caplog):
    import socket

    if holder == "dead-pid-here":
        claim = _claim(synth_project, "TS_7_1", socket.gethostname(), _dead_pid())
    else:
        claim = _claim(synth_project, "TS_7_1", "other-node", 4242, age=3600)
    assert run_yaml(tmp_path, synth_project, run_ids=["TS_7_1"]) == 0
    (line,) = warning_lines(caplog)
    who = f"{socket.gethostname()}:" if holder == "dead-pid-here" else "other-node:4242 (since"
    assert line.startswith(f"run TS_7_1: taking over the stale claim of {who}"), line
    assert "that driver stopped without finishing it" in line and "{" not in line  # words, not a dict
    assert done_marker(synth_project, "TS_7_1").is_file() and not claim.exists()


@pytest.mark.parametrize("holder", ["live-pid-here", "fresh-other-host"])
def test_a_live_claim_leaves_the_run_to_its_holder(holder, synth_project, tmp_path, monkeypatch, caplog, capsys):
    import socket
    import subprocess

    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        host, pid = (socket.gethostname(), sleeper.pid) if holder == "live-pid-here" else ("other-node", 4242)
        claim = _claim(synth_project, "TS_7_1", host, pid)
        no_segmenting(monkeypatch)
        caplog.set_level(logging.INFO)
        assert run_yaml(tmp_path, synth_project, run_ids=["TS_7_1"]) == 0
    finally:
        sleeper.kill()
        sleeper.wait()
    assert any(r.getMessage() == f"run TS_7_1: being done by another driver ({host}:{pid})" for r in caplog.records)
    assert "0 run(s) done, 0 already done, 0 failed, 1 being done by another driver" in capsys.readouterr().out
    assert claim.is_file() and outputs_of(synth_project, "TS_7_1") == {}
