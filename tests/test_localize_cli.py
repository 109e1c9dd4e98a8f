"""``tomopick localize`` end to end on a tiny synthetic copick project (GT label map as segmentation 'targets')."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import yaml
from scipy.spatial import cKDTree

from pipeline import copick_io, overlay_files
from pipeline.cli import main
from pipeline.selectors import SegSelector

SEG = ["-sinfo", "targets,data-portal,0"]


def picks_of(config, user="octopi", session="1"):
    root = copick_io.open_project(config)
    runs, _ = copick_io.runs_with_segmentation(root, 10.0, SegSelector("targets", "data-portal", "0"))
    out = {}
    for rid in runs:
        for obj in copick_io.particle_objects(root):
            gt = copick_io.read_picks(root, rid, obj.name, "data-portal", "0", 10.0)
            got = copick_io.read_picks(root, rid, obj.name, user, session, 10.0)
            scores = copick_io.read_pick_scores(root, rid, obj.name, user, session)
            out[(rid, obj.name)] = (gt, got, scores, obj)
    return out


def test_localize_finds_the_ground_truth(synth_project, caplog):
    caplog.set_level(logging.INFO)
    assert main(["localize", "-c", str(synth_project), *SEG, "-np", "2"]) == 0
    found = picks_of(synth_project)
    assert len({rid for rid, _ in found}) == 2
    n_gt = n_hit = n_pred = 0
    for (rid, name), (gt, got, scores, obj) in found.items():
        n_gt += len(gt)
        n_pred += len(got)
        assert scores.shape == (len(got),)
        if len(got):
            assert np.all((scores > 0.05) & (scores < 1.0)), (rid, name, scores)
        if len(gt) and len(got):
            n_hit += int((cKDTree(got).query(gt)[0] < 0.5 * obj.radius / 10.0).sum())
    assert n_gt >= 10
    assert n_hit >= 0.85 * n_gt, (n_hit, n_gt)
    assert n_pred <= 1.1 * n_gt
    # one INFO line per run, and the parameters log octopi writes
    assert sum("picks (" in r.getMessage() for r in caplog.records) == 2
    params = yaml.safe_load((synth_project.parent / "overlay" / "logs" / "localize-octopi_1.yaml").read_text())
    assert params["parameters"]["method"] == "watershed" and params["input"]["seg_name"] == "targets"


def test_uri_spelling_com_and_run_selection(synth_project):
    assert main(["localize", "-c", str(synth_project), "--seg-uri", "targets:data-portal/0", "-m", "com",
                 "--runIDs", "TS_7_1", "-obj", "ribosome,apo-ferritin", "-pui", "me", "-psid", "9"]) == 0
    root = copick_io.open_project(synth_project)
    assert copick_io.picks_exist(root, "TS_7_1", "ribosome", "me", "9")
    assert not copick_io.picks_exist(root, "TS_7_0", "ribosome", "me", "9")
    assert not copick_io.picks_exist(root, "TS_7_1", "thyroglobulin", "me", "9")
    gt = copick_io.read_picks(root, "TS_7_1", "ribosome", "data-portal", "0", 10.0)
    got = copick_io.read_picks(root, "TS_7_1", "ribosome", "me", "9", 10.0)
    if len(gt) and len(got):
        assert np.median(cKDTree(gt).query(got)[0]) < 1.0


def test_label_ids_come_from_the_segmentation_log(synth_project):
    """A log that swaps two labels makes each object's picks land on the other's particles."""
    root = copick_io.open_project(synth_project)
    labels = {o.name: o.label for o in copick_io.particle_objects(root)}
    swapped = dict(labels, ribosome=labels["apo-ferritin"], **{"apo-ferritin": labels["ribosome"]})
    overlay_files.write_segmentation_log(root, SegSelector("targets", "data-portal", "0"), {"labels": swapped})
    # radii differ a lot, so keep every region: only positions are compared
    assert main(["localize", "-c", str(synth_project), *SEG, "-m", "com", "-rmin", "0", "-rmax", "5",
                 "-obj", "ribosome"]) == 0
    root = copick_io.open_project(synth_project)
    for rid in ("TS_7_0", "TS_7_1"):
        got = copick_io.read_picks(root, rid, "ribosome", "octopi", "1", 10.0)
        apo = copick_io.read_picks(root, rid, "apo-ferritin", "data-portal", "0", 10.0)
        if len(apo):
            assert len(got) > 0
            assert np.median(cKDTree(apo).query(got)[0]) < 1.0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["-sinfo", "targets,data-portal,0", "--seg-uri", "predict:octopi/1"], "disagrees"),
        (["-sinfo", "targets,data-portal,0", "-obj", "unicorn"], "'unicorn'"),
        (["-sinfo", "nothing,here,0"], "no run has the segmentation nothing:here/0"),
        (["-sinfo", "targets,data-portal,0", "-fs", "0"], "'localize.filter_size' should be >= 1, got 0"),
        (["-sinfo", "targets,data-portal,0", "--device", "cuda"], "cuda"),
    ],
)
def test_user_errors_exit_2_with_a_reason(synth_project, caplog, argv, message):
    assert main(["localize", "-c", str(synth_project), *argv]) == 2
    assert any(message in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]


def test_help_names_every_flag_and_the_score(capsys):
    with pytest.raises(SystemExit):
        main(["localize", "--help"])
    text = capsys.readouterr().out
    for flag in ("--config", "--method", "--seg-info", "-sinfo", "--seg-uri", "-suri", "--voxel-size", "--runIDs",
                 "--run-ids", "-rmin", "-rmax", "--filter-size", "--pick-objects", "--n-procs",
                 "--pick-session-id", "--pick-user-id", "--device", "score"):
        assert flag in text, flag


def test_failed_write_leaves_none_of_the_runs_pick_sets(synth_project, monkeypatch):
    real = copick_io.write_picks
    written = []

    def flaky(root, run_id, object_name, *a, **k):
        if run_id == "TS_7_1" and len([w for w in written if w[0] == "TS_7_1"]) == 2:
            raise OSError("disk full")
        written.append((run_id, object_name))
        return real(root, run_id, object_name, *a, **k)

    monkeypatch.setattr(copick_io, "write_picks", flaky)
    assert main(["localize", "-c", str(synth_project), *SEG, "-psid", "77"]) == 1  # a run failed
    root = copick_io.open_project(synth_project)
    objects = [o.name for o in copick_io.particle_objects(root)]
    assert [w for w in written if w[0] == "TS_7_1"]  # two pick sets of TS_7_1 were written before the failure
    assert not any(copick_io.picks_exist(root, "TS_7_1", name, "octopi", "77") for name in objects)
    assert all(copick_io.picks_exist(root, "TS_7_0", name, "octopi", "77") for name in objects)  # finished run
