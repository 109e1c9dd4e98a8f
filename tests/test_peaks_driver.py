"""peaks end to end: in the driver (probabilities straight from segmentation), from saved probabilities with
`tomopick localize --probabilities`, tuned with `tomopick tune`, scored with `tomopick evaluate --min-score`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline import copick_io
from pipeline.cli import main
from pipeline.config import config_from_dict

REPO = Path(__file__).resolve().parents[1]
MODEL = ["-mc", str(REPO / "configs/models/demo_unet.yaml"), "-mw", str(REPO / "configs/models/demo_unet.pth")]


def picks_and_scores(config, user="octopi", session="1"):
    root = copick_io.open_project(config)
    out = {}
    for run in ("TS_7_0", "TS_7_1"):
        for o in copick_io.particle_objects(root):
            out[(run, o.name)] = copick_io.read_scored_picks(root, run, o.name, user, session, 10.0)
    return out


@pytest.fixture(scope="module")
def peaks_projects(synth_project_template, tmp_path_factory):
    """The driver with method peaks on one copy; segment (saving probabilities) + localize --probabilities on
    another, with the same model and settings."""
    from tests.conftest import copy_project

    tmp = tmp_path_factory.mktemp("peaks")
    driver, chain = copy_project(synth_project_template, tmp / "a"), copy_project(synth_project_template, tmp / "b")
    from pipeline.run import run_pipeline

    cfg = config_from_dict({
        "copick_config": str(driver), "device": "cpu",
        "model": {"configs": [MODEL[1]], "weights": [MODEL[3]]},
        "segment": {"ntta": 1}, "localize": {"method": "peaks", "n_procs": 1, "thresholds": 0.2},
        "output": {"dir": str(tmp / "out")},
    }, source="test")
    result = run_pipeline(cfg, progress=False)
    assert [r.status for r in result.records] == ["done", "done"]
    probs = tmp / "probs"
    assert main(["segment", "-c", str(chain), *MODEL, "--ntta", "1", "--device", "cpu",
                 "--save-probabilities", str(probs)]) == 0
    assert main(["localize", "-c", str(chain), "-m", "peaks", "--probabilities", str(probs), "--threshold", "0.2",
                 "-np", "1"]) == 0
    return driver, chain, probs, tmp


def test_driver_and_saved_probabilities_give_the_same_scored_picks(peaks_projects):
    driver, chain, _, _ = peaks_projects
    a, b = picks_and_scores(driver), picks_and_scores(chain)
    n = 0
    for key in a:
        np.testing.assert_array_equal(a[key][0], b[key][0])
        np.testing.assert_allclose(a[key][1], b[key][1], atol=1e-6)
        assert np.all((a[key][1] >= 0.2) & (a[key][1] <= 1.0)), key  # the score is the peak probability
        n += len(a[key][0])
    assert n > 0


def test_tune_writes_settings_that_localize_reads(peaks_projects, capsys):
    _, chain, probs, tmp = peaks_projects
    tuned = tmp / "tuned.yaml"
    assert main(["tune", "-c", str(chain), "--probabilities", str(probs), "-gtuid", "data-portal", "-gtsid", "0",
                 "--metric", "czii", "-o", str(tuned)]) == 0
    out = capsys.readouterr().out
    assert "leave-one-run-out" in out and "before" in out
    block = yaml.safe_load(tuned.read_text())["localize"]
    assert block["method"] == "peaks" and set(block["thresholds"]) >= {"ribosome", "apo-ferritin"}
    assert block["overlap_check"] is True  # tuned with localize's default check, and says so
    final = out.split("final weighted F4: ")[1]
    before = float(final.split("before ")[1].split(",")[0])
    after = float(final.split("after ")[1].split(",")[0])
    assert after >= before
    # the tuned block, read by localize, gives the tuned score
    assert main(["localize", "-c", str(chain), "--tuned", str(tuned), "--probabilities", str(probs),
                 "-psid", "9", "-np", "1"]) == 0
    assert main(["evaluate", "-c", str(chain), "-gtuid", "data-portal", "-gtsid", "0", "-psid", "9",
                 "--metric", "czii", "-o", str(tmp / "tuned_scores")]) == 0
    scored = yaml.safe_load((tmp / "tuned_scores" / "average_metrics.yaml").read_text())
    assert scored["final_fbeta_score"] == pytest.approx(after, abs=1e-4)


@pytest.mark.parametrize("check", [True, False])
def test_tunes_before_is_what_localize_gave_with_the_settings_given(peaks_projects, capsys, check):
    """The fixture's chain picked with threshold 0.2 (overlap check on); tune's "before" at that threshold is
    that job's score, with the check on or off as localize ran it."""
    _, chain, probs, tmp = peaks_projects
    session = "1"
    if not check:
        session = "77"
        assert main(["localize", "-c", str(chain), "-m", "peaks", "--probabilities", str(probs), "--threshold",
                     "0.2", "--no-overlap-check", "-psid", session, "-np", "1"]) == 0
    out_dir = tmp / f"before_{check}"
    assert main(["evaluate", "-c", str(chain), "-gtuid", "data-portal", "-gtsid", "0", "-psid", session,
                 "--metric", "czii", "-o", str(out_dir)]) == 0
    scored = yaml.safe_load((out_dir / "average_metrics.yaml").read_text())["final_fbeta_score"]
    capsys.readouterr()
    assert main(["tune", "-c", str(chain), "--probabilities", str(probs), "-gtuid", "data-portal", "-gtsid", "0",
                 "--metric", "czii", "--threshold", "0.2"] + ([] if check else ["--no-overlap-check"])) == 0
    out = capsys.readouterr().out
    before = float(out.split("final weighted F4: ")[1].split("before ")[1].split(",")[0])
    assert before == pytest.approx(scored, abs=1e-4)
    assert f"overlap_check: {'true' if check else 'false'}" in out


def test_tune_keeps_the_settings_of_classes_with_few_particles(peaks_projects, capsys):
    from pipeline.cli import build_parser
    from pipeline.tune import MIN_PARTICLES

    _, chain, probs, _ = peaks_projects
    argv = ["tune", "-c", str(chain), "--probabilities", str(probs), "-gtuid", "data-portal", "-gtsid", "0",
            "--metric", "czii"]
    assert main(argv + ["--min-particles", "100000"]) == 0
    out = capsys.readouterr().out
    assert "kept as given, fewer than 100000 ground-truth particles" in out
    final = out.split("final weighted F4: ")[1]
    before = final.split("before ")[1].split(",")[0]
    assert final.split("after ")[1].split(",")[0] == before
    assert final.split("leave-one-run-out ")[1].split()[0] == before
    help_text = build_parser()._subparsers._group_actions[0].choices["tune"].format_help()
    assert f"(default {MIN_PARTICLES})" in " ".join(help_text.split())


def test_min_score_leaves_out_low_scored_picks(peaks_projects):
    _, chain, _, tmp = peaks_projects
    counts = {}
    for min_score in (None, 0.6):
        out = tmp / f"scores_{min_score}"
        argv = ["evaluate", "-c", str(chain), "-gtuid", "data-portal", "-gtsid", "0", "-o", str(out)]
        assert main(argv + (["--min-score", str(min_score)] if min_score else [])) == 0
        doc = yaml.safe_load((out / "average_metrics.yaml").read_text())
        counts[min_score] = sum(v["tp"] + v["fp"] for v in doc["aggregated_particle_scores"].values())
        assert (out / "scores.png").stat().st_size > 10_000
    kept = sum(int((s >= 0.6).sum()) for _, s in picks_and_scores(chain).values())
    assert counts[0.6] == kept < counts[None]


def test_min_score_on_picks_without_scores_says_it_sorts_nothing(peaks_projects, caplog):
    """Picks written without scores (octopi's; here the ground truth scored as predictions) read as 1.0."""
    _, chain, _, tmp = peaks_projects
    assert all(np.all(s == 1.0) for _, s in picks_and_scores(chain, "data-portal", "0").values())
    argv = ["evaluate", "-c", str(chain), "-gtuid", "data-portal", "-gtsid", "0", "-o", str(tmp / "unscored")]
    assert main(argv + ["-puid", "data-portal", "-psid", "0", "--min-score", "0.5"]) == 0
    assert "every predicted pick of data-portal/0 scores 1.0" in caplog.text and "leaves none out" in caplog.text
    caplog.clear()
    assert main(argv + ["--min-score", "0.5"]) == 0  # peaks' picks carry their scores
    assert "scores 1.0" not in caplog.text


def test_a_misspelled_class_in_the_peaks_settings_is_refused(peaks_projects, caplog):
    _, chain, probs, _ = peaks_projects
    argv = ["localize", "-c", str(chain), "-m", "peaks", "--probabilities", str(probs), "-psid", "8", "-np", "1"]
    assert main(argv + ["--threshold", "ribosom=0.4"]) == 2
    err = caplog.text
    caplog.clear()
    assert "'localize.thresholds' (--threshold) names 'ribosom', not a particle object of" in err
    assert "ribosome" in err.split("particle objects:")[1]
    assert main(argv + ["--smoothing", "default=0.2,apoferritin=0.3"]) == 2
    assert "(--smoothing) names 'apoferritin'" in caplog.text
    caplog.clear()
    assert main(["tune", "-c", str(chain), "--probabilities", str(probs), "--threshold", "ribosom=0.4"]) == 2
    assert "names 'ribosom'" in caplog.text
    # nothing was written under the session asked for
    assert all(len(p[0]) == 0 for p in picks_and_scores(chain, session="8").values())


def test_a_probabilities_folder_that_does_not_exist_is_named(peaks_projects, caplog):
    _, chain, _, tmp = peaks_projects
    missing = tmp / "no_such_folder"
    assert main(["localize", "-c", str(chain), "-m", "peaks", "--probabilities", str(missing), "-psid", "8"]) == 2
    assert f"the probabilities folder '{missing}' does not exist" in caplog.text


def test_tune_with_a_misspelled_ground_truth_user_lists_the_pick_sets(peaks_projects, caplog):
    _, chain, probs, _ = peaks_projects
    code = main(["tune", "-c", str(chain), "--probabilities", str(probs), "-gtuid", "data-portl"])
    assert code != 0
    assert "no ground-truth picks of user 'data-portl'" in caplog.text
    assert "data-portal/0" in caplog.text.split("the picks there are")[1]


def test_picks_older_than_their_probability_file_are_picked_again(peaks_projects, caplog):
    import logging
    import os

    _, chain, probs, _ = peaks_projects
    argv = ["localize", "-c", str(chain), "-m", "peaks", "--probabilities", str(probs), "--threshold", "0.2",
            "-np", "1"]
    caplog.set_level(logging.INFO)
    assert main(argv) == 0  # done already: nothing redone
    assert not [r for r in caplog.records if "written after its picks" in r.getMessage()]
    before = picks_and_scores(chain)
    later = os.stat(probs / "TS_7_1.h5").st_mtime_ns + 10**9  # as if `segment --save-probabilities` ran again
    os.utime(probs / "TS_7_1.h5", ns=(later, later))
    caplog.clear()
    assert main(argv) == 0
    redone = [r.getMessage() for r in caplog.records if "written after its picks" in r.getMessage()]
    assert len(redone) == 1 and redone[0].startswith(f"run TS_7_1: probability file {probs / 'TS_7_1.h5'}"), redone
    after = picks_and_scores(chain)
    for key in before:  # the same probabilities: the same picks
        np.testing.assert_array_equal(before[key][0], after[key][0])


def test_probabilities_at_another_voxel_size_are_refused(peaks_projects, caplog):
    import shutil

    import h5py

    from pipeline.probability_files import read_voxel_size

    _, chain, probs, tmp = peaks_projects
    assert read_voxel_size(probs / "TS_7_0.h5") == 10.0
    # -vs 20 on probabilities segmented at 10 A would double every coordinate: refused before any run
    assert main(["localize", "-c", str(chain), "-m", "peaks", "--probabilities", str(probs), "-vs", "20",
                 "-psid", "8"]) == 2
    assert "were segmented at 10 A, but this job's voxel size is 20 A" in caplog.text
    caplog.clear()  # tune alike: it would score picks at twice their coordinates
    assert main(["tune", "-c", str(chain), "--probabilities", str(probs), "-vs", "20"]) == 2
    assert "were segmented at 10 A, but this job's voxel size is 20 A" in caplog.text
    # a file from before the voxel size was recorded: the run's tomogram at that voxel size is the check
    old = tmp / "old_probs"
    shutil.copytree(probs, old)
    for path in old.glob("*.h5"):
        with h5py.File(path, "r+") as fh:
            del fh["probabilities"].attrs["voxel_size"]
    caplog.clear()
    assert main(["localize", "-c", str(chain), "-m", "peaks", "--probabilities", str(old), "-vs", "20",
                 "-psid", "8"]) == 2  # refused once, before any run
    assert "none of the 2 run(s) with a probability file in" in caplog.text
    assert "has the voxel size 20 A; the project's tomograms: wbp@10" in caplog.text
    assert all(len(p[0]) == 0 for p in picks_and_scores(chain, session="8").values())


def test_probabilities_of_another_run_are_refused(peaks_projects, caplog):
    import shutil

    import h5py

    _, chain, probs, tmp = peaks_projects
    with h5py.File(probs / "TS_7_0.h5", "r") as fh:
        assert fh["probabilities"].attrs["run"] == "TS_7_0"
    swapped = tmp / "swapped_probs"  # both runs have the same shape: only the recorded run tells them apart
    swapped.mkdir()
    shutil.copy(probs / "TS_7_0.h5", swapped / "TS_7_1.h5")
    shutil.copy(probs / "TS_7_1.h5", swapped / "TS_7_0.h5")
    for argv in (["localize", "-c", str(chain), "-m", "peaks", "--probabilities", str(swapped), "-psid", "31"],
                 ["tune", "-c", str(chain), "--probabilities", str(swapped)]):
        caplog.clear()
        assert main(argv) != 0, argv
        assert f"probabilities '{swapped / 'TS_7_0.h5'}' were segmented from run 'TS_7_1', not 'TS_7_0'" \
            in caplog.text, argv
    assert all(len(p[0]) == 0 for p in picks_and_scores(chain, session="31").values())


def test_probabilities_of_another_tomogram_shape_are_refused(peaks_projects, tmp_path):
    import h5py

    from pipeline.errors import RunError
    from pipeline.probability_files import check_fits_tomogram

    _, chain, probs, _ = peaks_projects
    with h5py.File(probs / "TS_7_0.h5", "r") as fh:
        probabilities = fh["probabilities"][...]
    root = copick_io.open_project(chain)
    check_fits_tomogram(probabilities, "p.h5", root, "TS_7_0", 10.0, "wbp")  # the run's own: fits
    with pytest.raises(RunError, match=r"shape .* but run 'TS_7_0' has the tomogram wbp@10"):
        check_fits_tomogram(probabilities[:, :-2], "p.h5", root, "TS_7_0", 10.0, "wbp")
    with pytest.raises(RunError, match=r"run 'TS_7_0': no voxel spacing 20 A; the probabilities 'p.h5' cannot be"):
        check_fits_tomogram(probabilities, "p.h5", root, "TS_7_0", 20.0, "wbp")
    check_fits_tomogram(probabilities[:, :-2], "p.h5", root, "TS_7_0", 10.0, "denoised")  # no such tomogram


def test_runs_skipped_as_done_with_other_settings_are_named(peaks_projects, caplog):
    import logging

    _, chain, probs, _ = peaks_projects
    argv = ["localize", "-c", str(chain), "-m", "peaks", "--probabilities", str(probs), "-np", "1"]
    caplog.set_level(logging.INFO)
    assert main([*argv, "--threshold", "0.2"]) == 0  # the settings the fixture picked with: nothing to say
    assert main([*argv, "--threshold", "0.2", "-fs", "5"]) == 0  # watershed's seed filter: peaks ignores it
    assert "with other settings" not in caplog.text
    before = picks_and_scores(chain)
    caplog.clear()
    assert main([*argv, "--threshold", "0.3"]) == 0
    assert "2 run(s) skipped as done were picked with other settings (thresholds differ)" in caplog.text
    assert "--overwrite" in caplog.text
    after = picks_and_scores(chain)
    for key in before:  # skipped: the picks stay
        np.testing.assert_array_equal(before[key][0], after[key][0])


def test_markers_from_before_the_overlap_check_read_as_picked_without_it(peaks_projects, caplog):
    """A done marker written before localize.overlap_check existed (no such key) was picked without the check:
    a job with --no-overlap-check picked the same way and has nothing to say; one with the check names it."""
    import json
    import logging

    from pipeline import overlay_files

    _, chain, probs, _ = peaks_projects
    argv = ["localize", "-c", str(chain), "-m", "peaks", "--probabilities", str(probs), "-np", "1", "--threshold",
            "0.2", "-psid", "78"]
    assert main([*argv, "--no-overlap-check"]) == 0
    root = copick_io.open_project(chain)
    for run in ("TS_7_0", "TS_7_1"):  # as a marker from before the check records them
        marker = overlay_files.run_done_marker(root, run, "octopi_78")
        info = json.loads(marker.read_text())
        assert info["localize"].pop("overlap_check") is False
        marker.write_text(json.dumps(info))
    caplog.set_level(logging.INFO)
    assert main([*argv, "--no-overlap-check"]) == 0
    assert "with other settings" not in caplog.text
    caplog.clear()
    assert main(argv) == 0
    assert "2 run(s) skipped as done were picked with other settings (overlap_check differ)" in caplog.text


def test_runs_skipped_as_done_with_other_segmentation_settings_are_named(peaks_projects, caplog):
    import logging

    from pipeline.run import run_pipeline

    driver, chain, _, tmp = peaks_projects
    caplog.set_level(logging.INFO)

    def full_job(**segment):  # the fixture's driver job, with other segment settings
        return run_pipeline(config_from_dict({
            "copick_config": str(driver), "device": "cpu",
            "model": {"configs": [MODEL[1]], "weights": [MODEL[3]]},
            "segment": {"ntta": 1, **segment}, "localize": {"method": "peaks", "n_procs": 1, "thresholds": 0.2},
            "output": {"dir": str(tmp / "out")},
        }, source="test"), progress=False)

    assert [r.status for r in full_job().records] == ["skipped-done"] * 2
    assert "with other settings" not in caplog.text  # the same settings: nothing to say
    caplog.clear()
    assert [r.status for r in full_job(ntta=2, border_scale=0.25).records] == ["skipped-done"] * 2
    assert ("2 run(s) skipped as done were picked with other settings (segment.border_scale, segment.ntta differ)"
            in caplog.text)
    # a segment-only job alike, in its own words
    caplog.clear()
    assert main(["segment", "-c", str(chain), *MODEL, "--ntta", "2", "--device", "cpu"]) == 0
    assert "2 run(s) skipped as done were segmented with other settings (segment.ntta differ)" in caplog.text
    assert "-seginfo" in caplog.text
    # and one whose segmentations a full job finished (run_all.py first, then tomopick segment with other settings)
    caplog.clear()
    assert main(["segment", "-c", str(driver), *MODEL, "--ntta", "2", "--device", "cpu"]) == 0
    assert "was finished by an earlier tomopick job (a full job, picks octopi/1)" in caplog.text
    assert "2 run(s) skipped as done were segmented with other settings (segment.ntta differ)" in caplog.text


def test_segment_settings_know_the_weights_by_content(tmp_path):
    import os
    import shutil

    from pipeline.run.select import segment_settings

    weights = tmp_path / "w.pth"
    shutil.copy(MODEL[3], weights)

    def settings():
        return segment_settings(config_from_dict({
            "copick_config": str(tmp_path / "c.json"), "model": {"configs": [MODEL[1]], "weights": [str(weights)]},
        }, source="test", check_files=False))

    first = settings()
    assert first["weights"][0][0] == "w.pth" and first["ntta"] == 4
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert settings() == first  # touched, not changed: the same model
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))  # retrained in place: another model under the same name
    assert settings()["weights"] != first["weights"]


def test_a_job_stopped_by_a_failed_run_exits_while_the_next_run_is_being_read(peaks_projects, tmp_path):
    """on_error raise: the first run's probabilities are damaged, the reader is reading the next run's file when
    the job stops. The process exits 1 (it hung in the interpreter's exit on h5py's lock before)."""
    import shutil
    import subprocess
    import sys

    import h5py

    _, chain, probs, _ = peaks_projects
    bad = tmp_path / "probs"
    shutil.copytree(probs, bad)
    with h5py.File(bad / "TS_7_0.h5", "r+") as fh:
        fh["probabilities"][0, 0, 0, 0] = np.nan
    argv = [sys.executable, "-m", "pipeline.cli", "localize", "-c", str(chain), "-m", "peaks", "--probabilities",
            str(bad), "-psid", "11", "-np", "1"]
    out = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stderr[-2000:]
    assert "stopped after run TS_7_0 failed" in out.stderr


def test_tune_leaves_out_runs_without_ground_truth(peaks_projects, tmp_path, capsys, caplog):
    """--help: 'default: every run with both' (probabilities and ground truth); a run that the ground-truth user
    never annotated would count every pick there as false and push the thresholds up."""
    from tests.conftest import copy_project

    _, chain, probs, _ = peaks_projects
    project = copy_project(chain, tmp_path / "one_annotated")
    root = copick_io.open_project(project)
    for o in copick_io.particle_objects(root):  # user 'curator' annotated TS_7_0 only
        copick_io.write_picks(root, "TS_7_0", o.name, copick_io.read_picks(root, "TS_7_0", o.name, "data-portal",
                                                                            "0", 10.0), 10.0, "curator", "0")
    argv = ["tune", "-c", str(project), "--probabilities", str(probs), "--metric", "czii"]
    assert main(argv + ["-gtuid", "curator"]) == 0
    out = capsys.readouterr().out
    assert "tuned on 1 run(s): TS_7_0" in out
    assert "TS_7_1" in caplog.text and "no ground-truth picks of curator" in caplog.text
    assert main(argv + ["-gtuid", "data-portal", "-runs", "TS_7_0"]) == 0  # the same as naming the run
    assert out.split("final weighted")[1] == capsys.readouterr().out.split("final weighted")[1]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_min_score_that_is_not_a_finite_number_is_refused(peaks_projects, tmp_path, caplog, value):
    """--min-score nan dropped every pick (NaN compares false) and scored 0 with exit 0: a typo, refused as -dts
    <= 0 is; the same in a run config and in export."""
    from pipeline.errors import ConfigError

    _, chain, _, _ = peaks_projects
    out = tmp_path / "scores"
    assert main(["evaluate", "-c", str(chain), "-gtuid", "data-portal", "-o", str(out), f"--min-score={value}"]) == 2
    assert "'evaluate.min_score' (--min-score) should be a finite number" in caplog.text
    assert not out.exists()
    caplog.clear()
    assert main(["export", "-c", str(chain), "--format", "csv", "-o", str(tmp_path / "x.csv"),
                 f"--min-score={value}"]) == 2
    assert "'min_score' (--min-score) should be a finite number" in caplog.text and not (tmp_path / "x.csv").exists()
    with pytest.raises(ConfigError, match=r"'evaluate.min_score' \(--min-score\) should be a finite number"):
        config_from_dict({"copick_config": str(chain), "stages": [], "evaluate": {"min_score": float(value)}},
                         source="test")


def test_a_probabilities_folder_of_other_runs_says_what_it_holds(peaks_projects, tmp_path, caplog):
    """A folder written for another project named only the files it looked for; tune did not say that a
    folder does not exist, as localize does."""
    import shutil

    _, chain, probs, _ = peaks_projects
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(probs / "TS_7_0.h5", other / "TS_9_0.h5")
    for argv in (["tune", "-c", str(chain), "--probabilities", str(other)],
                 ["localize", "-c", str(chain), "-m", "peaks", "--probabilities", str(other), "-psid", "8"]):
        caplog.clear()
        assert main(argv) == 2
        assert f"'{other}' holds 1 probability file(s) of other runs: TS_9_0.h5" in caplog.text, argv[0]
    caplog.clear()
    assert main(["tune", "-c", str(chain), "--probabilities", str(tmp_path / "missing")]) == 2
    assert f"the probabilities folder '{tmp_path / 'missing'}' does not exist" in caplog.text


def test_evaluate_names_runs_with_ground_truth_but_no_picks(peaks_projects, tmp_path, caplog):
    """A localize job stopped after its first run, then scored: the other runs' particles all counted as missed
    without a word (the score fell to a third), though runs with picks but no ground truth are named."""
    from tests.conftest import copy_project

    _, chain, _, _ = peaks_projects
    project = copy_project(chain, tmp_path / "half_localized")
    root = copick_io.open_project(project)
    for o in copick_io.particle_objects(root):
        copick_io.remove_picks(root, "TS_7_1", o.name, "octopi", "1")
    assert main(["evaluate", "-c", str(project), "-gtuid", "data-portal", "-o", str(tmp_path / "s")]) == 0
    assert "1 of the 2 runs scored have ground truth but no picks of octopi/1 (TS_7_1)" in caplog.text
    caplog.clear()
    assert main(["evaluate", "-c", str(chain), "-gtuid", "data-portal", "-o", str(tmp_path / "t")]) == 0
    assert "no picks of" not in caplog.text


def test_the_localize_log_of_peaks_from_saved_probabilities_names_them_as_its_input(peaks_projects):
    """It named the segmentation predict/octopi/1 as the input, which that job never read."""
    _, chain, probs, _ = peaks_projects
    log = yaml.safe_load((chain.parent / "overlay" / "logs" / "localize-octopi_1.yaml").read_text())
    assert log["input"]["probabilities"] == str(probs.resolve())
    assert log["input"]["seg_name"] is None and log["input"]["seg_user_id"] is None
