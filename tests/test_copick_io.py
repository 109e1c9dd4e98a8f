"""copick I/O: axis order and units at the boundary, round trips through plain copick, safe writes, errors."""

from __future__ import annotations

import json

import copick
import numpy as np
import pytest
import yaml

from pipeline import copick_io, overlay_files
from pipeline.errors import ProjectError, RunError
from pipeline.selectors import SegSelector
from pipeline.synthetic import copick_config_dict

VS = 10.0


@pytest.fixture()
def empty_project(tmp_path):
    """A project with one run holding a non-cubic (37, 64, 51) tomogram with one bright voxel per pick."""
    overlay = tmp_path / "overlay"
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(copick_config_dict(overlay)))
    root = copick.from_file(str(config_path))
    run = root.new_run("run_a")
    vs = run.new_voxel_spacing(VS)
    rng = np.random.default_rng(11)
    centers_zyx = np.stack([rng.integers(0, n, size=9) for n in (37, 64, 51)], axis=1).astype(float)
    tomo = np.zeros((37, 64, 51), dtype=np.float32)
    tomo[tuple(centers_zyx.astype(int).T)] = 1.0
    vs.new_tomogram("wbp").from_numpy(tomo, levels=1)
    return config_path, centers_zyx, tomo


def test_picks_round_trip_through_plain_copick_non_cubic(empty_project):
    config_path, centers_zyx, tomo = empty_project
    root = copick_io.open_project(config_path)
    scores = np.linspace(0.1, 0.9, len(centers_zyx))
    copick_io.write_picks(root, "run_a", "ribosome", centers_zyx, VS, "tester", "5", scores=scores)

    # plain copick, not our module: (x, y, z) Angstrom, identity transforms, our scores
    plain = copick.from_file(str(config_path))
    picks = plain.get_run("run_a").get_picks(object_name="ribosome", user_id="tester", session_id="5")[0]
    xyz_ang, transforms = picks.numpy()
    np.testing.assert_allclose(xyz_ang, centers_zyx[:, ::-1] * VS)
    np.testing.assert_allclose(transforms, np.broadcast_to(np.eye(4), transforms.shape))
    np.testing.assert_allclose(picks.scores(), scores)
    # each pick, read as copick means it, lands on a bright voxel of the tomogram copick stores
    tomo_read = plain.get_run("run_a").get_voxel_spacing(VS).get_tomograms("wbp")[0].numpy()
    idx = np.rint(xyz_ang / VS).astype(int)
    assert np.all(tomo_read[idx[:, 2], idx[:, 1], idx[:, 0]] == 1.0)

    back = copick_io.read_picks(root, "run_a", "ribosome", "tester", "5", VS)
    np.testing.assert_allclose(back, centers_zyx)


def test_read_picks_adds_transform_translation(empty_project):
    config_path, _, _ = empty_project
    plain = copick.from_file(str(config_path))
    picks = plain.get_run("run_a").new_picks(object_name="apo-ferritin", session_id="0", user_id="portal")
    transforms = np.broadcast_to(np.eye(4), (2, 4, 4)).copy()
    transforms[1, :3, 3] = [10.0, -20.0, 30.0]  # x, y, z Angstrom
    picks.from_numpy(np.array([[100.0, 200.0, 300.0], [100.0, 200.0, 300.0]]), transforms)
    root = copick_io.open_project(config_path)
    zyx = copick_io.read_picks(root, "run_a", "apo-ferritin", "portal", "0", VS)
    np.testing.assert_allclose(zyx, [[30.0, 20.0, 10.0], [33.0, 18.0, 11.0]])


def test_missing_picks_read_as_empty(empty_project):
    root = copick_io.open_project(empty_project[0])
    assert copick_io.read_picks(root, "run_a", "ribosome", "nobody", "0", VS).shape == (0, 3)
    assert not copick_io.picks_exist(root, "run_a", "ribosome", "nobody", "0")


def test_tomogram_read_whole_and_by_slabs(empty_project):
    config_path, _, tomo = empty_project
    root = copick_io.open_project(config_path)
    assert copick_io.tomogram_shape(root, "run_a", VS, "wbp") == (37, 64, 51)
    got = copick_io.read_tomogram(root, "run_a", VS, "wbp")
    assert got.dtype == np.float32 and got.shape == (37, 64, 51)
    np.testing.assert_array_equal(got, tomo)


def test_segmentation_round_trip_overwrite_and_log(empty_project):
    config_path, _, _ = empty_project
    root = copick_io.open_project(config_path)
    seg = SegSelector("predict", "octopi", "1")
    rng = np.random.default_rng(3)
    label_map = rng.integers(0, 7, size=(37, 64, 51)).astype(np.uint8)
    copick_io.write_segmentation(root, "run_a", label_map, VS, seg)
    np.testing.assert_array_equal(copick_io.read_segmentation(root, "run_a", VS, seg), label_map)
    # plain copick sees a multilabel segmentation with our name/user/session
    plain = copick.from_file(str(config_path))
    found = plain.get_run("run_a").get_segmentations(name="predict", user_id="octopi", session_id="1", voxel_size=VS)
    assert len(found) == 1 and found[0].is_multilabel
    np.testing.assert_array_equal(found[0].numpy(), label_map)
    # overwrite replaces
    copick_io.write_segmentation(root, "run_a", label_map[::-1].copy(), VS, seg)
    np.testing.assert_array_equal(copick_io.read_segmentation(root, "run_a", VS, seg), label_map[::-1])

    labels = {"apo-ferritin": 1, "ribosome": 4}
    path = overlay_files.write_segmentation_log(root, seg, {"labels": labels, "ntta": 4})
    assert path == copick_io.overlay_root(root) / "logs" / "segment-octopi_1_predict.yaml"
    assert yaml.safe_load(path.read_text())["labels"] == labels
    assert overlay_files.read_segmentation_labels(root, seg) == labels
    assert overlay_files.read_segmentation_labels(root, SegSelector("other", "octopi", "1")) is None


def test_failed_segmentation_write_leaves_nothing(empty_project, monkeypatch):
    config_path, _, _ = empty_project
    root = copick_io.open_project(config_path)
    seg = SegSelector("predict", "octopi", "1")

    def boom(self, *a, **k):
        self.zarr()  # the store exists by now, as in a real crash mid-write
        raise OSError("disk full")

    monkeypatch.setattr(type(root.get_run("run_a").new_segmentation(VS, "probe", "9", True, "x")), "from_numpy", boom)
    with pytest.raises(OSError, match="disk full"):
        copick_io.write_segmentation(root, "run_a", np.zeros((37, 64, 51), np.uint8), VS, seg)
    fresh = copick_io.open_project(config_path)
    assert not copick_io.segmentation_exists(fresh, "run_a", VS, seg)


def test_failed_picks_write_leaves_nothing(empty_project, monkeypatch):
    config_path, centers_zyx, _ = empty_project
    root = copick_io.open_project(config_path)
    picks_cls = type(root.get_run("run_a").new_picks("ribosome", "77", "probe"))
    original_store = picks_cls.store
    calls = {"n": 0}

    def store_then_fail(self):
        calls["n"] += 1
        if self.meta.points:  # the empty placeholder store of new_picks succeeds; the real write fails
            raise OSError("disk full")
        return original_store(self)

    monkeypatch.setattr(picks_cls, "store", store_then_fail)
    with pytest.raises(OSError, match="disk full"):
        copick_io.write_picks(root, "run_a", "ribosome", centers_zyx, VS, "tester", "5")
    monkeypatch.undo()
    assert calls["n"] >= 2
    fresh = copick_io.open_project(config_path)
    assert not copick_io.picks_exist(fresh, "run_a", "ribosome", "tester", "5")


def test_runs_with_tomogram_reports_skips(empty_project):
    config_path, _, _ = empty_project
    plain = copick.from_file(str(config_path))
    plain.new_run("run_no_vs")
    plain.new_run("run_other_alg").new_voxel_spacing(VS).new_tomogram("denoised").from_numpy(
        np.zeros((8, 8, 8), np.float32), levels=1)
    root = copick_io.open_project(config_path)
    found, skipped = copick_io.runs_with_tomogram(root, VS, "wbp")
    assert found == ["run_a"]
    assert skipped == {"run_no_vs": "no voxel spacing 10 A", "run_other_alg": "no tomogram 'wbp' at 10 A"}
    found, skipped = copick_io.runs_with_tomogram(root, VS, "wbp", run_ids=["run_a", "ghost"])
    assert found == ["run_a"] and "ghost" in skipped


def test_particle_objects_and_weights(empty_project):
    root = copick_io.open_project(empty_project[0])
    objs = {o.name: o for o in copick_io.particle_objects(root)}
    assert set(objs) == {"apo-ferritin", "beta-amylase", "beta-galactosidase", "ribosome", "thyroglobulin",
                         "virus-like-particle"}
    assert objs["beta-amylase"].weight == 0.0 and objs["thyroglobulin"].weight == 2.0
    assert objs["ribosome"].radius == 150.0 and objs["ribosome"].label == 4


def test_weight_defaults_to_one(tmp_path):
    cfg = copick_config_dict(tmp_path / "overlay")
    del cfg["pickable_objects"][0]["metadata"]
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    objs = copick_io.particle_objects(copick_io.open_project(tmp_path / "c.json"))
    assert objs[0].name == "apo-ferritin" and objs[0].weight == 1.0


def test_open_project_errors_name_the_path(tmp_path):
    with pytest.raises(ProjectError, match="no such file"):
        copick_io.open_project(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ProjectError, match="bad.json.*not valid JSON"):
        copick_io.open_project(bad)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"hello": 1}))
    with pytest.raises(ProjectError, match="other.json.*not a copick configuration"):
        copick_io.open_project(other)


def test_run_level_errors(empty_project):
    root = copick_io.open_project(empty_project[0])
    with pytest.raises(RunError, match="no run named 'ghost'"):
        copick_io.read_tomogram(root, "ghost", VS, "wbp")
    with pytest.raises(RunError, match="no voxel spacing 7.84"):
        copick_io.read_tomogram(root, "run_a", 7.84, "wbp")
    with pytest.raises(RunError, match="no tomogram 'denoised'"):
        copick_io.read_tomogram(root, "run_a", VS, "denoised")
    with pytest.raises(RunError, match="no multilabel segmentation predict:octopi/1"):
        copick_io.read_segmentation(root, "run_a", VS, SegSelector("predict", "octopi", "1"))
    with pytest.raises(RunError, match="no pickable object 'unicorn'"):
        copick_io.write_picks(root, "run_a", "unicorn", np.zeros((1, 3)), VS, "u", "1")
    with pytest.raises(RunError, match="NaN"):
        copick_io.write_picks(root, "run_a", "ribosome", np.full((1, 3), np.nan), VS, "u", "1")
    with pytest.raises(RunError, match="expected \\(z, y, x\\)"):
        copick_io.write_segmentation(root, "run_a", np.zeros((4, 4), np.uint8), VS, SegSelector("a", "b", "1"))


def test_importing_copick_io_does_not_configure_logging():
    import logging
    import subprocess
    import sys

    code = ("import logging; import pipeline.copick_io, pipeline.synthetic; "
            "print(len(logging.getLogger().handlers))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "0"
    assert logging.getLogger("copick") is not None
