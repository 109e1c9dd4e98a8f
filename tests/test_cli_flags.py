"""The command line reads what was typed and says where a bad value came from: no flag read as an abbreviation
of another, run_all.py is `tomopick run`, a folder is not taken for a file, flags the method ignores are refused,
and errors name their source (a flag, the --tuned file)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import yaml

from pipeline import copick_io, overlay_files
from pipeline.cli import build_parser, main
from pipeline.selectors import SegSelector

SEG = ["-sinfo", "targets,data-portal,0"]
GT_AS_PREDICTIONS = ["-gtuid", "data-portal", "-gtsid", "0", "-puid", "data-portal", "-psid", "0"]


def parse_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2, argv
    return capsys.readouterr().err


# --- 1. a flag is read only as spelled -------------------------------------------------------------------------

@pytest.mark.parametrize("argv, typed", [
    (["segment", "-c", "c.json", "-mw", "m.pth", "-v", "20"], "arguments: 20"),  # was -vs 20 (-v: more log)
    (["evaluate", "-c", "c.json", "-f", "0"], "-f"),  # was -fb
    (["evaluate", "-c", "c.json", "-d", "-1"], "-d"),  # was -dts
    (["evaluate", "-c", "c.json", "-n", "ribosome"], "-n"),  # was -names
    (["localize", "-c", "c.json", "-ob", "ribosome"], "-ob"),  # was -obj
    (["tune", "-c", "c.json", "--probabilities", "p", "-gtu", "me"], "-gtu"),  # was -gtuid
    (["show", "-c", "c.json", "-pu", "me"], "-pu"),  # was -puid
    (["export", "-c", "c.json", "-o", "x.csv", "-nam", "ribosome"], "-nam"),  # was -names
    (["run", "x.yaml", "--dev", "cpu"], "--dev"),
    (["synth", "--out", "d", "--run", "3"], "--run"),  # was --runs
])
def test_no_flag_is_read_as_an_abbreviation(argv, typed, capsys):
    err = parse_error(argv, capsys)
    assert "unrecognized arguments" in err and typed in err, err


@pytest.mark.parametrize("argv, command, typed", [
    (["localize", "-c", "c.json", "--bogus"], "localize", "--bogus"),
    (["evaluate", "-c", "c.json", "-f", "0"], "evaluate", "-f 0"),
    (["run", "x.yaml", "--dev", "cpu"], "run", "--dev cpu"),
    (["--bogus"], None, "--bogus"),
])
def test_an_unknown_flag_prints_the_usage_of_its_command(argv, command, typed, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    prog = f"tomopick {command}" if command else "tomopick"
    assert exc.value.code == 2 and f"{prog}: error: unrecognized arguments: {typed}\n" in err, err
    assert err.startswith(f"usage: {prog} "), err


def test_exact_flags_values_joined_by_equals_and_joined_switches_still_work():
    args = build_parser().parse_args(["-vv", "evaluate", "-c", "c.json", "-fb=2", "--voxel-size=12", "-dts", "0.5",
                                      "-v", "True", "-names", "ribosome"])
    assert (args.verbose, args.beta, args.voxel_size, args.distance_threshold_scale) == (2, 2.0, 12.0, 0.5)
    assert args.verbose_picks is True and args.object_names == "ribosome"
    assert build_parser().parse_args(["segment", "-c", "c.json", "-mw", "m.pth", "-vs", "20"]).voxel_size == 20.0


@pytest.mark.parametrize("argv", [
    ["run", "x.yaml"], ["segment", "-c", "c.json", "-mw", "m.pth"], ["localize", "-c", "c.json"],
    ["tune", "-c", "c.json", "--probabilities", "p"], ["report", "x.yaml"], ["show", "-c", "c.json"],
    ["synth", "--out", "d"], ["import-mrc", "-c", "c.json"], ["export", "-c", "c.json", "-o", "x.csv"],
])
def test_every_command_takes_verbose_after_it_as_before_it(argv):
    """`tomopick report X -v` was refused: only run and evaluate took -v after the command."""
    for after, count in (("-v", 1), ("--verbose", 1), ("-vv", 2)):
        assert build_parser().parse_args([*argv, after]).command_verbose == count
    args = build_parser().parse_args(["-v", *argv])
    assert (args.verbose, args.command_verbose) == (1, None)


def test_evaluate_keeps_octopis_verbose_bool_and_takes_more_log_before_the_command():
    args = build_parser().parse_args(["-v", "evaluate", "-c", "c.json", "-v", "False"])
    assert args.verbose == 1 and args.verbose_picks is False and getattr(args, "command_verbose", None) is None


def test_run_all_refuses_an_abbreviated_flag(capsys):
    import run_all

    with pytest.raises(SystemExit) as exc:
        run_all.main(["x.yaml", "--ray", "auto"])  # --ray-address
    assert exc.value.code == 2 and "unrecognized arguments: --ray auto" in capsys.readouterr().err


# --- 2. run_all.py is `tomopick run` ------------------------------------------------------------------------------

def test_run_all_takes_the_flags_of_tomopick_run(synth_project_template, tmp_path, monkeypatch, capsys):
    import run_all

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"copick_config": str(synth_project_template), "stages": ["localize"]}))
    seen = []
    monkeypatch.setattr("pipeline.run.run_pipeline", lambda cfg: seen.append(cfg))
    monkeypatch.setattr("pipeline.cli.common.print_summary", lambda result: 0)
    assert run_all.main([str(path), "--device", "cpu", "-v"]) == 0
    assert main(["run", str(path), "--device", "cpu", "-v"]) == 0
    assert [c.device for c in seen] == ["cpu", "cpu"]
    capsys.readouterr()
    with pytest.raises(SystemExit):
        run_all.main(["--help"])
    run_all_help = capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert run_all_help == capsys.readouterr().out
    assert "--device" in run_all_help and "--verbose" in run_all_help


# --- 3. a folder is not a file -----------------------------------------------------------------------------------

@pytest.mark.parametrize("command", [["localize"], ["evaluate"], ["segment", "-mw", "m.pth"], ["import-mrc"]])
def test_a_folder_given_as_the_copick_config_names_its_json(command, synth_project_template, capsys):
    folder = synth_project_template.parent
    err = parse_error([command[0], "-c", str(folder), *command[1:]], capsys)
    assert f"'{folder}' is a folder" in err and f"give {folder / 'config.json'}" in err, err


def test_a_folder_given_as_the_run_config_names_its_yaml(tmp_path, capsys):
    import run_all

    (tmp_path / "my_project.yaml").write_text("stages: [localize]\n")
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(SystemExit):
        run_all.main([str(tmp_path)])
    err = capsys.readouterr().err
    assert f"'{tmp_path}' is a folder" in err and f"give {tmp_path / 'my_project.yaml'}" in err, err
    (tmp_path / "other.yml").write_text("stages: [localize]\n")
    err = parse_error(["run", str(tmp_path)], capsys)
    assert "holds 2 .yaml/.yml files (my_project.yaml, other.yml); give one" in err, err


# --- 4. localize: flags the method ignores, a label the segmentation lacks ---------------------------------------

@pytest.mark.parametrize("flags, named", [
    (["--threshold", "0.9"], "--threshold applies"),
    (["--probabilities", "probs"], "--probabilities applies"),
    (["-m", "com", "--smoothing", "0.3", "--peak-window", "2"], "--smoothing, --peak-window apply"),
    (["--no-overlap-check"], "--no-overlap-check applies"),
])
def test_localize_refuses_peaks_flags_with_another_method(flags, named, synth_project, caplog):
    assert main(["localize", "-c", str(synth_project), *SEG, *flags]) == 2
    assert f"{named} to -m peaks" in caplog.text and "add -m peaks" in caplog.text, caplog.text
    root = copick_io.open_project(synth_project)
    assert not copick_io.picks_exist(root, "TS_7_0", "ribosome", "octopi", "1")


def test_a_tuned_file_that_sets_peaks_takes_the_peaks_flags(synth_project, tmp_path, caplog):
    tuned = tmp_path / "tuned.yaml"
    tuned.write_text(yaml.safe_dump({"localize": {"method": "peaks", "thresholds": {"default": 0.3}}}))
    missing = tmp_path / "no_probs"
    assert main(["localize", "-c", str(synth_project), "--tuned", str(tuned), "--threshold", "0.4",
                 "--probabilities", str(missing)]) == 2
    assert "apply to -m peaks" not in caplog.text and str(missing) in caplog.text, caplog.text


def test_localize_refuses_a_label_the_segmentation_lacks(synth_project, caplog):
    root = copick_io.open_project(synth_project)
    labels = {"background": 0, **{o.name: o.label for o in copick_io.particle_objects(root)}}
    overlay_files.write_segmentation_log(root, SegSelector("targets", "data-portal", "0"), {"labels": labels})
    assert main(["localize", "-c", str(synth_project), *SEG, "-lbl", "99", "-obj", "ribosome"]) == 2
    assert "-lbl/--label 99: segmentation targets:data-portal/0 has no such label" in caplog.text
    assert f"ribosome {labels['ribosome']}" in caplog.text
    root = copick_io.open_project(synth_project)
    assert not copick_io.picks_exist(root, "TS_7_0", "ribosome", "octopi", "1")
    # a label it has is read
    assert main(["localize", "-c", str(synth_project), *SEG, "-lbl", str(labels["ribosome"]), "-obj", "ribosome",
                 "-m", "com", "-np", "1"]) == 0


def test_without_a_segmentation_log_a_label_the_map_lacks_is_a_warning_per_run(synth_project, caplog):
    # no log to check -lbl against before the job: each run whose map lacks the label says so
    assert main(["localize", "-c", str(synth_project), *SEG, "-lbl", "99", "-obj", "ribosome", "-np", "1"]) == 0
    warned = [r.getMessage() for r in caplog.records if "no voxel of label 99" in r.getMessage()]
    assert sorted(w.split(":")[0] for w in warned) == ["run TS_7_0", "run TS_7_1"], warned


# --- 5, 6. tune's settings without -o; errors in a --tuned file name the file -------------------------------------

@pytest.fixture()
def probabilities(synth_project, tmp_path):
    """Class probabilities made from the ground-truth label map (smoothed one-hot): peaks' input, no network."""
    from scipy import ndimage as ndi

    from pipeline.segment import save_probabilities

    root = copick_io.open_project(synth_project)
    labels = {"background": 0, **{o.name: o.label for o in copick_io.particle_objects(root)}}
    for run in copick_io.run_names(root):
        label_map = copick_io.read_segmentation(root, run, 10.0, SegSelector("targets", "data-portal", "0"))
        probs = np.stack([ndi.gaussian_filter((label_map == v).astype(np.float32), 1.0)
                          for v in range(max(labels.values()) + 1)])
        save_probabilities(tmp_path / "probs" / f"{run}.h5", probs, labels, 10.0)
    return tmp_path / "probs"


def test_tune_without_output_prints_the_settings(synth_project, probabilities, capsys):
    assert main(["tune", "-c", str(synth_project), "--probabilities", str(probabilities), "-gtsid", "0"]) == 0
    out, err = capsys.readouterr()
    block = yaml.safe_load(out.split("final weighted F4:")[1].split("\n", 1)[1])["localize"]
    assert block["method"] == "peaks" and set(block["thresholds"]) >= {"ribosome", "apo-ferritin"}
    assert "-o FILE writes this block" in err and "--tuned FILE" in err


@pytest.mark.parametrize("tuned_doc, message", [
    ({"localize": {"method": "peaks", "tresholds": {"default": 0.3}}}, ": unknown key 'localize.tresholds'"),
    ({"localize": {"method": "peaks", "thresholds": {"default": 0.3, "apoferritin": 0.5}}},
     ": 'localize.thresholds' names 'apoferritin', not a particle object"),
    ({"localize": {"method": "peaks", "smoothing": {"default": 20}}}, ": 'localize.smoothing' has"),
])
def test_errors_in_a_tuned_file_name_the_file(tuned_doc, message, synth_project, probabilities, tmp_path, caplog):
    tuned = tmp_path / "tuned_bad.yaml"
    tuned.write_text(yaml.safe_dump(tuned_doc))
    assert main(["localize", "-c", str(synth_project), "--tuned", str(tuned), "--probabilities",
                 str(probabilities)]) == 2
    (line,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert line.startswith(f"--tuned file '{tuned}'") and message in line, line
    assert "(--threshold)" not in line


def test_a_bad_name_in_the_flag_still_names_the_flag(synth_project, probabilities, tmp_path, caplog):
    tuned = tmp_path / "tuned.yaml"
    tuned.write_text(yaml.safe_dump({"localize": {"method": "peaks", "thresholds": {"ribosome": 0.3}}}))
    assert main(["localize", "-c", str(synth_project), "--tuned", str(tuned), "--probabilities", str(probabilities),
                 "--threshold", "ribosom=0.4"]) == 2
    assert "'localize.thresholds' (--threshold) names 'ribosom'" in caplog.text
    assert str(tuned) not in caplog.text


# --- 7. run names; --min-score that drops everything ---------------------------------------------------------------

def test_evaluate_skips_a_misspelled_run_with_a_warning_as_localize(synth_project_template, tmp_path, caplog):
    out = tmp_path / "scores"
    assert main(["evaluate", "-c", str(synth_project_template), *GT_AS_PREDICTIONS, "-o", str(out),
                 "-runs", "TS_7_0,TS_7_00"]) == 0
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "TS_7_00 (did you mean TS_7_0?) is not a run of" in line and "its runs: TS_7_0, TS_7_1" in line
    assert yaml.safe_load((out / "average_metrics.yaml").read_text())["final_fbeta_score"] == pytest.approx(1.0)
    caplog.clear()
    assert main(["evaluate", "-c", str(synth_project_template), *GT_AS_PREDICTIONS, "-o", str(out),
                 "-runs", "TS_7_00"]) == 2
    assert "no other run was asked for; its runs: TS_7_0, TS_7_1" in caplog.text


def test_evaluate_warns_when_min_score_drops_every_pick(synth_project_template, tmp_path, caplog):
    argv = ["evaluate", "-c", str(synth_project_template), *GT_AS_PREDICTIONS, "-o", str(tmp_path / "s")]
    assert main(argv + ["--min-score", "0.5"]) == 0  # copick scores a point without a score 1.0: all kept
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "every predicted pick of data-portal/0 scores 1.0" in line and "--min-score 0.5 leaves none out" in line
    caplog.clear()
    assert main(argv + ["--min-score", "2"]) == 0
    root = copick_io.open_project(synth_project_template)
    n = sum(len(copick_io.read_pick_scores(root, r, o.name, "data-portal", "0"))
            for r in copick_io.run_names(root) for o in copick_io.particle_objects(root))
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"--min-score 2 drops all {n} picks of data-portal/0" in line and "peaks scores lie in 0-1" in line


def test_min_score_warning_names_the_classes_it_empties(caplog):
    from types import SimpleNamespace

    from pipeline.run.job import warn_min_score_drops

    read = {"ribosome": (5, 0), "apo-ferritin": (7, 3), "thyroglobulin": (0, 0)}  # thyroglobulin: none to drop
    warn_min_score_drops(SimpleNamespace(min_score=0.4, picks_read=read), "me", "1")
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "--min-score 0.4 drops every pick of ribosome (5) of me/1, so that class scores 0" in line
    caplog.clear()
    warn_min_score_drops(SimpleNamespace(min_score=0.4, picks_read={"ribosome": (5, 1)}), "me", "1")
    warn_min_score_drops(SimpleNamespace(min_score=None, picks_read={"ribosome": (5, 0)}), "me", "1")
    assert not caplog.records


# --- 8. segment's usage line --------------------------------------------------------------------------------------

def test_segment_usage_shows_the_model_config_as_required(capsys):
    with pytest.raises(SystemExit):
        main(["segment", "--help"])
    text = capsys.readouterr().out
    usage = " ".join(text.split("\n\n")[0].split())
    assert "-mc MODEL_CONFIG -mw MODEL_WEIGHTS" in usage and "[-mc" not in usage, usage
    assert "required: octopi model config" in " ".join(text.split())


def test_run_takes_the_ray_cpus_per_actor(monkeypatch, capsys):
    from pathlib import Path

    import pipeline.run

    demo = str(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml")
    seen = {}

    def run_pipeline(cfg):
        seen["cfg"] = cfg

    monkeypatch.setattr(pipeline.run, "run_pipeline", run_pipeline)
    monkeypatch.setattr("pipeline.cli.common.print_summary", lambda result: 0)
    assert main(["run", demo, "--executor", "ray", "--ray-cpus-per-actor", "2"]) == 0
    assert seen["cfg"].ray.cpus_per_actor == 2 and seen["cfg"].executor == "ray"
    for bad in ("0", "two"):
        with pytest.raises(SystemExit):
            main(["run", demo, "--ray-cpus-per-actor", bad])
        assert "expected a number of CPUs, an integer >= 1" in capsys.readouterr().err


def test_tune_refuses_a_negative_min_particles(capsys):
    """--min-particles -3 ran as 0 (every class tuned) without a word; 0 stays allowed."""
    for bad in ("-3", "many"):
        with pytest.raises(SystemExit):
            main(["tune", "-c", "config.json", "--probabilities", "probs", f"--min-particles={bad}"])
        assert "expected a number of ground-truth particles, an integer >= 0" in capsys.readouterr().err
    from pipeline.cli import build_parser

    args = build_parser().parse_args(["tune", "-c", "x.json", "--probabilities", "p", "--min-particles", "0"])
    assert args.min_particles == 0


@pytest.mark.parametrize("command", ["tune", "evaluate", "synth", "export"])
def test_ctrl_c_in_a_command_without_runs_says_what_stopped(command, monkeypatch, caplog):
    """Ctrl-C in `tomopick tune` said 'runs in flight were finished or rolled back, the report is written':
    tune has neither (its -o file is written whole at the end, or not at all)."""
    import importlib
    import signal

    from pipeline.errors import Terminated

    module = importlib.import_module(f"pipeline.cli.{command}")
    argv = {"tune": ["tune", "-c", "c.json", "--probabilities", "p"], "evaluate": ["evaluate", "-c", "c.json"],
            "synth": ["synth", "--out", "x"], "export": ["export", "-c", "c.json", "-o", "x.star"]}[command]
    for stop, code, said in ((KeyboardInterrupt(), 130, "interrupted (Ctrl-C)"),
                             (Terminated(signal.SIGTERM), 143, "stopped by signal 15")):
        def run(args, stop=stop):
            raise stop

        monkeypatch.setattr(module, "run", run)
        caplog.clear()
        assert main(argv) == code
        assert f"{said}: tomopick {command} stopped before it finished" in caplog.text
        assert "runs in flight" not in caplog.text and "report is written" not in caplog.text


@pytest.mark.parametrize("argv, hint", [
    (["localize", "-c", "c.json", "-m", "peaks", "--treshold", "0.3"], "did you mean --threshold (for --treshold)?"),
    (["evaluate", "-c", "c.json", "--min_score", "0.3"], "did you mean --min-score (for --min_score)?"),
    (["tune", "-c", "c.json", "--probabilities", "p", "--peak_window=1"],
     "did you mean --peak-window (for --peak_window)?"),
    (["localize", "-c", "c.json", "--probability", "p"], "did you mean --probabilities (for --probability)?"),
])
def test_a_misspelled_flag_is_refused_with_the_flag_it_may_be(argv, hint, capsys):
    """The flag is still refused (never read as another), but the error names the nearest one."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert "unrecognized arguments" in err and hint in err, err


def test_tune_refuses_a_folder_for_its_output_before_the_work(tmp_path, monkeypatch, caplog):
    """`tune -o results/` tuned for minutes, then failed with 'Is a directory' and lost the result."""
    import pipeline.tune

    def tune(*args, **kwargs):
        raise AssertionError("tuned before the output was checked")

    monkeypatch.setattr(pipeline.tune, "tune", tune)
    (tmp_path / "c.json").write_text("{}")
    assert main(["tune", "-c", str(tmp_path / "c.json"), "--probabilities", str(tmp_path), "-o",
                 str(tmp_path)]) == 2
    assert f"-o/--output '{tmp_path}' is a folder; give a file, e.g. {tmp_path / 'tuned.yaml'}" in caplog.text


def test_evaluate_refuses_a_file_for_its_output_folder(tmp_path, caplog):
    """`evaluate -o scores.yaml` (a file there) scored, then said only 'scores.yaml: File exists'."""
    (tmp_path / "c.json").write_text("{}")
    (tmp_path / "scores.yaml").write_text("x: 1\n")
    assert main(["evaluate", "-c", str(tmp_path / "c.json"), "-o", str(tmp_path / "scores.yaml")]) == 2
    assert (f"-o/--output '{tmp_path / 'scores.yaml'}' is a file; it names the folder for average_metrics.yaml, "
            "metrics.json and scores.png") in caplog.text
