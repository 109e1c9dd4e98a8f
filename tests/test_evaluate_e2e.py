"""End to end on a tiny synthetic copick project: predictions built from the ground truth with known outcomes,
written through copick_io, scored through the `tomopick evaluate` CLI; the files' numbers are checked against the
counts known by construction."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from pipeline import copick_io, synthetic
from pipeline.cli import main
from pipeline.evaluate import Counts, object_fbeta
from pipeline.evaluate_io import evaluate_project

VOXEL_SIZE = 10.0
GT = ("data-portal", "0")
PRED = ("tester", "7")

# Scenario per (run, object): what is predicted around each ground-truth particle, and the counts per particle
# that follow by construction under each rule. Particles of one object never overlap (centres >= 2 r apart), so
# a prediction within 0.6 r of its own particle is >= 1.4 r from any other one.
#   name: (offsets as fractions of the radius along x, octopi counts per particle, czii counts per particle)
SCENARIOS = {
    "exact": ([0.3], Counts(1, 0, 0), Counts(1, 0, 0)),
    "duplicate": ([0.3, -0.2], Counts(2, 0, 0), Counts(1, 1, 0)),
    "between": ([0.6], Counts(1, 0, 0), Counts(0, 1, 1)),  # inside 0.8 r, outside 0.5 r
    "beyond": ([0.9], Counts(0, 1, 1), Counts(0, 1, 1)),  # outside both
    "missed": ([], Counts(0, 0, 1), Counts(0, 0, 1)),  # nothing predicted (no picks written at all)
}
STRAYS = 2  # far-away predictions added to every written pick set: FP under both rules


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    config = synthetic.make_synthetic_project(out / "proj", runs=2, shape=(48, 96, 80), seed=11)
    root = copick_io.open_project(config)
    objects = copick_io.particle_objects(root)
    runs = [r.name for r in root.runs]
    names = list(SCENARIOS)
    expected = {"octopi": {}, "czii": {}}
    k = 0
    for run_id in runs:
        for obj in objects:
            scenario = names[k % len(names)]
            k += 1
            offsets, per_octopi, per_czii = SCENARIOS[scenario]
            gt = copick_io.read_picks(root, run_id, obj.name, *GT, VOXEL_SIZE)
            assert len(gt) >= 1
            r_vox = obj.radius / VOXEL_SIZE
            preds = [gt + np.array([0.0, 0.0, f * r_vox]) for f in offsets]
            n = len(gt)
            if preds:
                far = np.array([[-500.0 - 100 * i, -500.0, -500.0] for i in range(STRAYS)])
                copick_io.write_picks(root, run_id, obj.name, np.vstack(preds + [far]), VOXEL_SIZE, *PRED)
                strays = Counts(0, STRAYS, 0)
            else:
                strays = Counts(0, 0, 0)
            for metric, per in (("octopi", per_octopi), ("czii", per_czii)):
                c = Counts(per.tp * n, per.fp * n, per.fn * n) + strays
                prev = expected[metric].get(obj.name, Counts(0, 0, 0))
                expected[metric][obj.name] = prev + c
    return config, objects, runs, expected


def _expected_final(objects, expected_counts):
    num = sum(object_fbeta(expected_counts[o.name])[2] * o.weight for o in objects)
    den = sum(o.weight for o in objects)
    return num / den


@pytest.mark.parametrize("metric", ["octopi", "czii"])
def test_cli_writes_octopi_files_with_the_known_counts(project, tmp_path, capsys, metric):
    config, objects, runs, expected = project
    out = tmp_path / "scores"
    rc = main([
        "evaluate", "-c", str(config), "-gtuid", GT[0], "-gtsid", GT[1], "-puid", PRED[0], "-psid", PRED[1],
        "-o", str(out), "--metric", metric,
    ])  # fmt: skip
    assert rc == 0
    avg = yaml.safe_load((out / "average_metrics.yaml").read_text())
    for obj in objects:
        c = expected[metric][obj.name]
        got = avg["aggregated_particle_scores"][obj.name]
        assert (got["tp"], got["fp"], got["fn"]) == (c.tp, c.fp, c.fn), obj.name
        assert got["weight"] == obj.weight
    assert avg["final_fbeta_score"] == pytest.approx(_expected_final(objects, expected[metric]), rel=1e-12)
    assert avg["parameters"]["distance_threshold_scale"] == (0.8 if metric == "octopi" else 0.5)
    assert avg["input"]["prediction_user_id"] == PRED[0]
    detailed = json.loads((out / "metrics.json").read_text())
    assert sorted(detailed["metrics"]) == sorted(runs)
    assert (out / "scores.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert f"final weighted F4 score: {avg['final_fbeta_score']:.4f}" in printed
    assert all(o.name in printed for o in objects)


def test_subset_of_runs_and_objects(project, tmp_path):
    config, objects, runs, expected = project
    root = copick_io.open_project(config)
    chosen = [objects[0], objects[3]]
    full = evaluate_project(
        root, chosen, runs, ground_truth_user_id=GT[0], ground_truth_session_id=GT[1], pick_user_id=PRED[0],
        pick_session_id=PRED[1], voxel_size=VOXEL_SIZE,
    )  # fmt: skip
    one = evaluate_project(
        root, chosen, runs[:1], ground_truth_user_id=GT[0], ground_truth_session_id=GT[1], pick_user_id=PRED[0],
        pick_session_id=PRED[1], voxel_size=VOXEL_SIZE,
    )  # fmt: skip
    two = evaluate_project(
        root, chosen, runs[1:], ground_truth_user_id=GT[0], ground_truth_session_id=GT[1], pick_user_id=PRED[0],
        pick_session_id=PRED[1], voxel_size=VOXEL_SIZE,
    )  # fmt: skip
    assert [o.name for o in full.objects] == [chosen[0].name, chosen[1].name]
    for o in chosen:
        assert full.aggregated[o.name] == one.aggregated[o.name] + two.aggregated[o.name]
        assert full.aggregated[o.name] == expected["octopi"][o.name]
    assert one.run_ids == runs[:1]


def test_gt_session_none_matches_any_session(project):
    config, objects, runs, expected = project
    root = copick_io.open_project(config)
    result = evaluate_project(
        root, objects, None, ground_truth_user_id=GT[0], ground_truth_session_id=None, pick_user_id=PRED[0],
        pick_session_id=PRED[1], voxel_size=VOXEL_SIZE,
    )  # fmt: skip
    assert result.aggregated == expected["octopi"]


def test_cli_user_errors_exit_2(project, tmp_path):
    config, objects, runs, expected = project
    base = ["evaluate", "-c", str(config), "-gtuid", GT[0], "-o", str(tmp_path / "s")]
    assert main(base + ["-names", "not-an-object"]) == 2
    assert main(base + ["--run-ids", "no-such-run"]) == 2
    assert main(base + ["-dts", "-1"]) == 2
    assert not (tmp_path / "s").exists()


def test_show_renders_slices_through_the_picks(project, tmp_path):
    config, objects, runs, expected = project
    out = tmp_path / "show"
    rc = main([
        "show", "-c", str(config), "-runs", runs[0], "-gtuid", GT[0], "-gtsid", GT[1], "-puid", PRED[0],
        "-psid", PRED[1], "-n", "2", "-o", str(out),
    ])  # fmt: skip
    assert rc == 0
    pngs = sorted(out.glob(f"{runs[0]}_z*.png"))
    assert 1 <= len(pngs) <= 2
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)
    rc = main(["show", "-c", str(config), "-runs", runs[1], "--z", "5,30", "-o", str(out)])
    assert rc == 0
    assert (out / f"{runs[1]}_z0005.png").exists() and (out / f"{runs[1]}_z0030.png").exists()
    assert main(["show", "-c", str(config), "-runs", runs[1], "--z", "999", "-o", str(out)]) == 2


def test_show_warns_about_a_pick_set_that_is_not_there(project, tmp_path, caplog):
    config, objects, runs, expected = project
    rc = main(["show", "-c", str(config), "-runs", runs[0], "-gtuid", GT[0], "-gtsid", GT[1], "-puid", PRED[0],
               "-psid", "77", "--z", "5", "-o", str(tmp_path / "show")])
    assert rc == 0  # drawn with an empty predicted layer, but said
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(f"no predicted picks of user '{PRED[0]}', session 77" in w for w in warned), warned
    assert not any("ground-truth picks" in w for w in warned), warned


def test_runs_with_picks_but_no_ground_truth_are_named(project, tmp_path, caplog):
    from tests.conftest import copy_project

    config, objects, runs, _ = project
    root = copick_io.open_project(copy_project(config, tmp_path / "proj"))
    for obj in objects:
        copick_io.remove_picks(root, runs[1], obj.name, *GT)  # the second run was never annotated
    ids = dict(ground_truth_user_id=GT[0], ground_truth_session_id=GT[1], pick_user_id=PRED[0],
               pick_session_id=PRED[1], voxel_size=VOXEL_SIZE)
    evaluate_project(root, objects, None, **ids)
    (line,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert line.startswith(f"1 of the 2 runs scored have picks but no ground truth ({runs[1]}): every pick there "
                           "counts as a false positive"), line
    caplog.clear()
    evaluate_project(root, objects, [runs[0]], **ids)  # the annotated run alone: nothing to say
    evaluate_project(copick_io.open_project(config), objects, None, **ids)
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
