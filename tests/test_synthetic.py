"""Synthetic projects: plain copick opens them with the runs, shapes and GT asked for; deterministic per seed."""

from __future__ import annotations

import copick
import numpy as np
import pytest

from pipeline import copick_io
from pipeline.cli import main as cli_main
from pipeline.errors import ConfigError, ProjectError
from pipeline.selectors import SegSelector
from pipeline.synthetic import CZII_OBJECTS, make_synthetic_project, synth_run_arrays


def test_plain_copick_opens_synthetic_project(synth_project_template):
    root = copick.from_file(str(synth_project_template))
    assert sorted(r.name for r in root.runs) == ["TS_7_0", "TS_7_1"]
    names = {o.name: o for o in root.pickable_objects}
    for spec in CZII_OBJECTS:
        o = names[spec["name"]]
        assert o.is_particle and o.label == spec["label"] and o.radius == spec["radius"]
        assert o.metadata["weight"] == spec["weight"]
    for run in root.runs:
        tomo = run.get_voxel_spacing(10.0).get_tomograms("wbp")[0]
        arr = tomo.numpy()
        assert arr.shape == (40, 72, 64) and arr.dtype == np.float32
        _, _, expected = synth_run_arrays((40, 72, 64), seed=(7, int(run.name.split("_")[-1])))
        for name, centers in expected.items():
            picks = run.get_picks(object_name=name, user_id="data-portal", session_id="0")
            assert len(picks) == 1
            xyz, _ = picks[0].numpy()
            assert len(xyz) == len(centers)
            np.testing.assert_allclose(xyz, centers[:, ::-1] * 10.0)


def test_gt_label_map_matches_picks(synth_project_template):
    root = copick_io.open_project(synth_project_template)
    label_map = copick_io.read_segmentation(root, "TS_7_0", 10.0, SegSelector("targets", "data-portal", "0"))
    for obj in copick_io.particle_objects(root):
        centers = copick_io.read_picks(root, "TS_7_0", obj.name, "data-portal", "0", 10.0)
        for c in np.rint(centers).astype(int):
            assert label_map[tuple(c)] == obj.label


def test_arrays_deterministic_and_seed_dependent():
    a = synth_run_arrays((32, 48, 40), seed=5)
    b = synth_run_arrays((32, 48, 40), seed=5)
    c = synth_run_arrays((32, 48, 40), seed=6)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_challenge_density_and_no_overlaps():
    shape = (92, 315, 315)  # a quarter of the full tomogram
    tomogram, label_map, centers = synth_run_arrays(shape, seed=1)
    radius = {o["name"]: o["radius"] / 10.0 for o in CZII_OBJECTS}
    for o in CZII_OBJECTS:
        want = round(o["per_full"] * np.prod(shape) / (184 * 630 * 630))
        assert abs(len(centers[o["name"]]) - want) <= 1, o["name"]
    all_c = np.concatenate([centers[n] for n in centers])
    all_r = np.concatenate([[radius[n]] * len(centers[n]) for n in centers])
    d = np.linalg.norm(all_c[:, None] - all_c[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    assert np.all(d >= (all_r[:, None] + all_r[None]) - 1e-6)  # bounding spheres never overlap
    touching = np.isclose(d, all_r[:, None] + all_r[None], rtol=2e-3)
    assert touching.any()  # and some neighbours touch
    # every GT label sphere has a volume inside octopi's watershed size window [V(0.5 r), V(r)]
    for o in CZII_OBJECTS:
        n_vox = np.count_nonzero(label_map == o["label"])
        per = n_vox / max(len(centers[o["name"]]), 1)
        r_vox = o["radius"] / 10.0
        assert 4 / 3 * np.pi * (0.5 * r_vox) ** 3 < per < 4 / 3 * np.pi * r_vox**3, o["name"]
    # particles are darker than the background (cryo-ET contrast)
    assert tomogram[label_map > 0].mean() < tomogram[label_map == 0].mean()


def test_synth_cli_and_refusal_to_overwrite(tmp_path, capsys):
    out = tmp_path / "p"
    assert cli_main(["synth", "--out", str(out), "--runs", "1", "--shape", "24,40,32", "--seed", "2"]) == 0
    assert (out / "config.json").is_file()
    assert "1 runs of 24x40x32" in capsys.readouterr().out
    assert cli_main(["synth", "--out", str(out), "--runs", "1"]) == 2
    with pytest.raises(ProjectError, match="exists already"):
        make_synthetic_project(out, runs=1)


def test_bad_synthetic_arguments():
    with pytest.raises(ConfigError, match="--shape 4,40,40: need three sides of at least 8 voxels"):
        synth_run_arrays((4, 40, 40))
    with pytest.raises(ConfigError, match="--snr 0: must be > 0"):
        synth_run_arrays((16, 16, 16), snr=0)


@pytest.mark.parametrize("flags, message", [
    (["--runs", "0"], "--runs 0: need at least 1 run"),
    (["--runs", "-3"], "--runs -3: need at least 1 run"),
    (["--snr", "-1"], "--snr -1: must be > 0"),
    (["--density", "0"], "--density 0: must be > 0"),
])
def test_synth_refuses_settings_that_make_no_project(flags, message, tmp_path, caplog):
    assert cli_main(["synth", "--out", str(tmp_path / "p"), "--shape", "16,16,16", *flags]) == 2  # no traceback
    assert f"synthetic project: {message}" in caplog.text
    assert not list(tmp_path.iterdir())  # nothing made


def test_a_synthetic_project_folder_gets_the_umask_mode(tmp_path):
    """It was built in a tempfile.mkdtemp folder (mode 0700) and renamed into place: colleagues sharing the
    project (and napari-copick run by another user) could not open it."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        config = make_synthetic_project(tmp_path / "shared" / "project", runs=1, shape=(24, 32, 32), seed=3)
    finally:
        os.umask(old)
    assert stat.S_IMODE(config.parent.stat().st_mode) == 0o755
    assert not list((tmp_path / "shared").glob(".*partial*"))
