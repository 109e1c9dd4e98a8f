"""`tomopick import-mrc` and `tomopick export`: MRC tomograms and pick files in, RELION 5 STAR and the challenge's
CSV out; bad input refused before anything is written; and the round trip MRC -> import -> run_all -> export STAR
gives back the picks the pipeline wrote."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import starfile

from pipeline import copick_io, formats
from pipeline.cli import main
from pipeline.synthetic import synth_run_arrays

DEMO = Path(__file__).resolve().parent.parent / "configs" / "models"


def _mrc(path, shape=(20, 30, 40), voxel_size=10.0, seed=0):
    volume = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    return formats.write_mrc(path, volume, voxel_size), volume


def test_import_mrc_creates_a_project_at_the_header_voxel_size(tmp_path):
    a, vol_a = _mrc(tmp_path / "TS_a.mrc", voxel_size=10.012)
    b, vol_b = _mrc(tmp_path / "TS_b.rec", shape=(12, 16, 18), voxel_size=10.012, seed=1)
    config = tmp_path / "proj" / "config.json"
    assert main(["import-mrc", "-c", str(config), str(a), str(b), "--tomo-alg", "denoised"]) == 0
    root = copick_io.open_project(config)
    assert copick_io.run_names(root) == ["TS_a", "TS_b"]
    np.testing.assert_array_equal(copick_io.read_tomogram(root, "TS_a", 10.012, "denoised"), vol_a)
    np.testing.assert_array_equal(copick_io.read_tomogram(root, "TS_b", 10.012, "denoised"), vol_b)
    assert [o.name for o in copick_io.particle_objects(root)][:2] == ["apo-ferritin", "beta-amylase"]
    assert copick_io.overlay_root(root) == config.parent.resolve() / "overlay"
    # --voxel-size overrides the header; --run-names names the runs; another type joins an existing run
    assert main(["import-mrc", "-c", str(config), str(a), "--voxel-size", "10", "--run-names", "TS_a"]) == 0
    root = copick_io.open_project(config)
    assert copick_io.tomogram_inventory(root) == {"denoised@10.012": 2, "wbp@10": 1}


@pytest.mark.parametrize("make, message", [
    (lambda d: formats.write_mrc(d / "flat.mrc", np.zeros((1, 30, 40)), 10.0), "not a 3D tomogram"),
    (lambda d: formats.write_mrc(d / "flat2d.mrc", np.zeros((30, 40)), 10.0), "not a 3D tomogram"),
    (lambda d: formats.write_mrc(d / "novs.mrc", np.zeros((8, 9, 10)), 0.0), "pass --voxel-size"),
    (lambda d: d / "absent.mrc", "no such file"),
    (lambda d: _text(d / "notes.mrc", "x" * 3000), "'{bad}' is not an MRC file (Map ID string not found"),
    (lambda d: _text(d / "short.mrc", "hello"), "'{bad}' is not an MRC file ("),
])
def test_import_mrc_refuses_bad_files_before_writing(tmp_path, make, message, caplog, recwarn):
    good, _ = _mrc(tmp_path / "good.mrc")
    bad = make(tmp_path)
    config = tmp_path / "proj" / "config.json"
    assert main(["import-mrc", "-c", str(config), str(good), str(bad)]) == 2
    assert message.format(bad=bad) in caplog.text and str(Path(bad).name) in caplog.text
    assert not config.exists()  # nothing written, not even the project
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]  # mrcfile's own words are in ours


def _text(path, text):
    path.write_text(text)
    return path


def test_import_mrc_refuses_clashes_and_anisotropic_voxels(tmp_path, caplog):
    a, _ = _mrc(tmp_path / "x" / "TS_1.mrc")
    b, _ = _mrc(tmp_path / "y" / "TS_1.mrc")
    config = tmp_path / "proj" / "config.json"
    assert main(["import-mrc", "-c", str(config), str(a), str(b)]) == 2
    assert "TS_1" in caplog.text and "--run-names" in caplog.text and not config.exists()
    assert f"two tomograms for one run (run 'TS_1': {a}, {b})" in caplog.text  # the files named
    caplog.clear()
    assert main(["import-mrc", "-c", str(config), str(a), str(b), "--run-names", "X,X"]) == 2
    assert f"run 'X': {a}, {b}" in caplog.text and "give each file its own name in --run-names" in caplog.text
    assert not config.exists()
    assert main(["import-mrc", "-c", str(config), str(a)]) == 0
    caplog.clear()
    assert main(["import-mrc", "-c", str(config), str(b)]) == 2  # TS_1 has wbp@10 already
    assert "TS_1" in caplog.text and "already" in caplog.text
    import mrcfile

    with mrcfile.new(tmp_path / "aniso.mrc") as mrc:
        mrc.set_data(np.zeros((8, 9, 10), np.float32))
        mrc.voxel_size = (10.0, 10.0, 20.0)
    caplog.clear()
    assert main(["import-mrc", "-c", str(config), str(tmp_path / "aniso.mrc")]) == 2
    assert "differ between axes" in caplog.text


@pytest.mark.parametrize("file_name, run_name", [("tomo B 12.5.mrc", "tomo B 12.5"),
                                                  ("TS A,comma.mrc", "TS A,comma")])
def test_import_mrc_refuses_run_names_that_lists_and_star_cannot_carry(tmp_path, caplog, file_name, run_name):
    """Such a run could not be exported as STAR, nor selected with -runs or exported as CSV: refused at import,
    before anything is written, naming the file and the name, with a name that would do."""
    bad, _ = _mrc(tmp_path / file_name)
    config = tmp_path / "proj" / "config.json"
    assert main(["import-mrc", "-c", str(config), str(bad)]) == 2
    assert f"'{bad}': the run name {run_name!r} taken from the file name contains" in caplog.text
    assert "pass --run-names" in caplog.text and not config.exists()
    assert ("whitespace" if " " in run_name else "comma") in caplog.text
    like = run_name.replace(" ", "_").replace(",", "_")
    assert f"--run-names {like}" in caplog.text
    assert main(["import-mrc", "-c", str(config), str(bad), "--run-names", like]) == 0  # the advice works
    assert copick_io.run_names(copick_io.open_project(config)) == [like]


@pytest.mark.parametrize("given, message", [
    ("my run", "the run name 'my run' contains whitespace"),  # one name with a space, not "2 names for 1 files"
    ("bad/name", "the run name 'bad/name' contains a path separator"),  # not "pass --run-names": it was passed
    ("A,B", "gives 2 name(s) for 1 file(s)"),
])
def test_import_mrc_says_what_is_wrong_with_run_names_given(tmp_path, caplog, given, message):
    a, _ = _mrc(tmp_path / "TS_1.mrc")
    config = tmp_path / "proj" / "config.json"
    assert main(["import-mrc", "-c", str(config), str(a), "--run-names", given]) == 2
    assert f"--run-names {given!r}" in caplog.text and message in caplog.text
    assert "pass --run-names" not in caplog.text and not config.exists()


@pytest.fixture()
def picked_project(tmp_path):
    """A project of two imported runs with picks octopi/1 (scores, one rotated pick) and ground truth."""
    config = tmp_path / "proj" / "config.json"
    a, _ = _mrc(tmp_path / "TS_1.mrc", shape=(20, 30, 40))
    b, _ = _mrc(tmp_path / "16463.mrc", shape=(21, 31, 41), seed=2)  # a numeric run name, as portal runs have
    assert main(["import-mrc", "-c", str(config), str(a), str(b)]) == 0
    root = copick_io.open_project(config)
    rng = np.random.default_rng(3)
    picks = {}
    for run in ("TS_1", "16463"):
        for name in ("ribosome", "apo-ferritin"):
            xyz = rng.uniform(0, 190, size=(5, 3)) + rng.uniform(0, 1, size=(5, 3)) / 3
            scores = rng.uniform(0, 1, size=5)
            transforms = np.broadcast_to(np.eye(4), (5, 4, 4)).copy()
            transforms[0, :3, :3] = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]  # 90 degrees about z
            copick_io.write_picks_ang(root, run, name, xyz, "octopi", "1", scores=scores, transforms=transforms)
            picks[(run, name)] = (xyz, scores, transforms)
    return config, picks


def test_export_star_reads_back_equal_with_starfile(picked_project, tmp_path):
    config, picks = picked_project
    out = tmp_path / "relion"
    assert main(["export", "-c", str(config), "--user-id", "octopi", "--session-id", "1", "--format", "star",
                 "-o", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["apo-ferritin.star", "ribosome.star"]
    df = starfile.read(out / "ribosome.star", parse_as_string=["rlnTomoName"])
    assert list(df["rlnTomoName"]) == ["16463"] * 5 + ["TS_1"] * 5  # the project's run order, names as text
    for run, shape_xyz in (("TS_1", (40, 30, 20)), ("16463", (41, 31, 21))):
        xyz, scores, transforms = picks[(run, "ribosome")]
        rows = df[df["rlnTomoName"] == run]
        pixels = rows[["rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ"]].to_numpy()
        centred = rows[["rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst",
                        "rlnCenteredCoordinateZAngst"]].to_numpy()
        np.testing.assert_array_equal(pixels, xyz / 10.0)  # bit-equal: numbers are written to read back equal
        np.testing.assert_array_equal(centred, xyz - np.array(shape_xyz) * 10.0 / 2)  # RELION 5's centre
        np.testing.assert_array_equal(rows["rlnAutopickFigureOfMerit"].to_numpy(), scores)
        angles = rows[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy()
        assert np.all(angles[1:] == 0) and np.any(angles[0] != 0)
        np.testing.assert_allclose(formats.rotations_from_relion(angles[:1])[0], transforms[0, :3, :3], atol=1e-12)


def test_export_csv_to_a_folder_not_yet_there_is_refused(picked_project, tmp_path):
    config, _ = picked_project
    assert main(["export", "-c", str(config), "--user-id", "octopi", "--session-id", "1", "--format", "csv",
                 "-o", f"{tmp_path / 'newdir'}/"]) == 2
    assert not (tmp_path / "newdir").exists()


def test_export_filters_and_star_reimport(picked_project, tmp_path):
    config, picks = picked_project
    one = tmp_path / "ribo.star"
    assert main(["export", "-c", str(config), "--objects", "ribosome", "--run-ids", "16463", "--min-score", "0.5",
                 "-o", str(one)]) == 0
    df = starfile.read(one, parse_as_string=["rlnTomoName"])
    xyz, scores, _ = picks[("16463", "ribosome")]
    assert set(df["rlnTomoName"]) == {"16463"} and len(df) == int((scores >= 0.5).sum())
    # the STAR file back in as another user's picks: the same positions, scores and orientations
    assert main(["import-mrc", "-c", str(config), "--picks", str(one), "--object", "ribosome", "--user-id", "star",
                 "--session-id", "0"]) == 0
    root = copick_io.open_project(config)
    back = copick_io.read_picks_ang(root, "16463", "ribosome", "star", "0")
    keep = scores >= 0.5
    np.testing.assert_allclose(back[0], xyz[keep], rtol=0, atol=1e-9)
    np.testing.assert_array_equal(back[2], scores[keep])
    # a second import of the same pick set is refused unless --overwrite
    assert main(["import-mrc", "-c", str(config), "--picks", str(one), "--object", "ribosome", "--user-id", "star",
                 "--session-id", "0"]) == 2


def test_export_of_no_picks_writes_empty_files_with_a_warning(picked_project, tmp_path, caplog):
    """An empty pick set, or one --min-score empties, is 0 picks (a valid file and a warning), not a pick set
    that is not there (exit 2)."""
    config, _ = picked_project
    root = copick_io.open_project(config)
    for run in ("TS_1", "16463"):  # the empty pick sets the pipeline writes for an object it found nothing of
        copick_io.write_picks_ang(root, run, "ribosome", np.zeros((0, 3)), "empty", "1")
    csv = tmp_path / "none.csv"
    assert main(["export", "-c", str(config), "--user-id", "empty", "--format", "csv", "-o", str(csv)]) == 0
    assert csv.read_text() == "id,experiment,particle_type,x,y,z\n"
    assert "exporting 0 picks: the pick sets empty/1 of ribosome are empty (2 run(s))" in caplog.text
    caplog.clear()
    star = tmp_path / "none.star"
    assert main(["export", "-c", str(config), "--user-id", "empty", "-o", str(star)]) == 0
    assert "exporting 0 picks" in caplog.text
    df = starfile.read(star)  # RELION's empty table: the column labels over no rows
    assert len(df) == 0 and list(df.columns) == formats.relion_column_names(scores=True)
    # --min-score above every score: the one object that had picks, in a folder
    caplog.clear()
    folder = tmp_path / "relion"
    assert main(["export", "-c", str(config), "--objects", "ribosome", "--min-score", "2", "-o", str(folder)]) == 0
    assert [p.name for p in folder.iterdir()] == ["ribosome.star"] and len(starfile.read(folder / "ribosome.star")) == 0
    assert "exporting 0 picks: all 10 picks have a score below --min-score 2" in caplog.text
    caplog.clear()
    assert main(["export", "-c", str(config), "--min-score", "2", "--format", "csv", "-o", str(csv)]) == 0
    assert csv.read_text() == "id,experiment,particle_type,x,y,z\n"
    assert "all 20 picks have a score below --min-score 2" in caplog.text
    # a pick set that is not there stays an error, naming those there are
    caplog.clear()
    assert main(["export", "-c", str(config), "--user-id", "nobody", "-o", str(tmp_path / "n.csv"),
                 "--format", "csv"]) == 2
    assert "no picks of nobody/1" in caplog.text and "empty/1 (2), octopi/1 (4)" in caplog.text
    assert not (tmp_path / "n.csv").exists()


def test_export_csv_is_the_challenge_format_and_reimports(picked_project, tmp_path, caplog):
    config, picks = picked_project
    out = tmp_path / "submission.csv"
    assert main(["export", "-c", str(config), "--format", "csv", "-o", str(out)]) == 0
    import pandas as pd

    df = pd.read_csv(out, dtype={"experiment": str})
    assert list(df.columns) == ["id", "experiment", "particle_type", "x", "y", "z", "score"]
    assert list(df["id"]) == list(range(20))
    for (run, name), (xyz, scores, _) in picks.items():
        rows = df[(df["experiment"] == run) & (df["particle_type"] == name)]
        np.testing.assert_array_equal(rows[["x", "y", "z"]].to_numpy(), xyz)
        np.testing.assert_array_equal(rows["score"].to_numpy(), scores)
    assert main(["import-mrc", "-c", str(config), "--picks", str(out), "--user-id", "csv", "--session-id",
                 "0"]) == 0
    root = copick_io.open_project(config)
    np.testing.assert_array_equal(copick_io.read_picks_ang(root, "TS_1", "ribosome", "csv", "0")[0],
                                  picks[("TS_1", "ribosome")][0])
    # STAR/CSV picks need a user and session; unknown objects and runs are named
    caplog.clear()
    assert main(["import-mrc", "-c", str(config), "--picks", str(out)]) == 2
    assert "--user-id" in caplog.text
    (tmp_path / "odd.csv").write_text("id,experiment,particle_type,x,y,z\n0,TS_9,ribosome,1,2,3\n")
    caplog.clear()
    assert main(["import-mrc", "-c", str(config), "--picks", str(tmp_path / "odd.csv"), "--user-id", "a",
                 "--session-id", "1"]) == 2
    assert "TS_9" in caplog.text
    caplog.clear()
    assert main(["export", "-c", str(config), "--user-id", "nobody", "-o", str(tmp_path / "x.csv"),
                 "--format", "csv"]) == 2
    assert "octopi/1" in caplog.text  # what there is instead


def test_import_refuses_picks_outside_the_tomogram(tmp_path, caplog):
    """A units mistake puts picks far outside the tomogram: refused before anything is written, naming the file,
    the run, the count, the range against the extent and how the file's numbers were read."""
    a, _ = _mrc(tmp_path / "TS_1.mrc", shape=(50, 128, 128))  # 1280 x 1280 x 500 A at 10 A
    config = tmp_path / "proj" / "config.json"
    # rlnCoordinate (pixels) written in Angstrom: 917.5 is read as 9175 A
    star = tmp_path / "ribosome.star"
    star.write_text("data_particles\nloop_\n_rlnTomoName\n_rlnCoordinateX\n_rlnCoordinateY\n_rlnCoordinateZ\n"
                    "TS_1 917.5 400.0 200.0\nTS_1 12.0 13.0 14.0\n")
    assert main(["import-mrc", "-c", str(config), str(a), "--picks", str(star), "--user-id", "gt",
                 "--session-id", "0"]) == 2
    assert (f"pick file '{star}': 1 of 2 ribosome picks of run 'TS_1' lie outside its tomogram wbp@10: the picks "
            "span x 120..9175, y 130..4000, z 140..2000 A, the tomogram x 0..1280, y 0..1280, z 0..500 A") in caplog.text
    assert "read as pixels of the tomogram" in caplog.text and not config.exists()  # not even the tomogram
    # the challenge's CSV (Angstrom from the corner) with z = 99999 and x = -500, into an existing project
    assert main(["import-mrc", "-c", str(config), str(a)]) == 0
    csv = tmp_path / "gt.csv"
    csv.write_text("id,experiment,particle_type,x,y,z\n0,TS_1,ribosome,100,200,99999\n1,TS_1,ribosome,-500,3,4\n"
                   "2,TS_1,ribosome,-9.5,1289.5,509\n")  # within one voxel of the faces: kept
    caplog.clear()
    assert main(["import-mrc", "-c", str(config), "--picks", str(csv), "--user-id", "gt", "--session-id", "0"]) == 2
    assert f"pick file '{csv}': 2 of 3 ribosome picks of run 'TS_1' lie outside" in caplog.text
    assert "x -500..100" in caplog.text and "z 4..99999" in caplog.text and "z 0..500 A" in caplog.text
    assert "read as Angstrom from the tomogram's corner" in caplog.text
    root = copick_io.open_project(config)
    assert copick_io.read_picks_ang(root, "TS_1", "ribosome", "gt", "0") is None  # nothing written
    csv.write_text("id,experiment,particle_type,x,y,z\n2,TS_1,ribosome,-9.5,1289.5,509\n")
    assert main(["import-mrc", "-c", str(config), "--picks", str(csv), "--user-id", "gt", "--session-id", "0"]) == 0
    # a run without that tomogram (its shape not known): imported as before
    root.new_run("TS_bare")
    csv.write_text("id,experiment,particle_type,x,y,z\n0,TS_bare,ribosome,100,200,99999\n")
    assert main(["import-mrc", "-c", str(config), "--picks", str(csv), "--user-id", "gt", "--session-id", "0"]) == 0
    root = copick_io.open_project(config)
    assert copick_io.read_picks_ang(root, "TS_bare", "ribosome", "gt", "0")[0].tolist() == [[100, 200, 99999]]


def test_import_mrc_says_when_voxel_size_overrides_the_header(tmp_path, caplog):
    import logging

    caplog.set_level(logging.INFO)
    a, _ = _mrc(tmp_path / "TS_1.mrc", voxel_size=10.012)
    config = tmp_path / "proj" / "config.json"
    assert main(["import-mrc", "-c", str(config), str(a), "-vs", "10"]) == 0
    lines = [r.getMessage() for r in caplog.records if "header says" in r.getMessage()]
    assert lines == [f"'{a}': its header says 10.012 A per voxel; using --voxel-size 10"]


def test_import_mrc_warns_about_nan_voxels_when_importing(tmp_path, caplog):
    volume = np.random.default_rng(3).normal(size=(20, 30, 40)).astype(np.float32)
    volume[2, 3, 4:7] = np.nan
    volume[5, 5, 5] = np.inf
    with pytest.warns(RuntimeWarning, match="NaN"):  # mrcfile's, writing the header's statistics
        a = formats.write_mrc(tmp_path / "TS_nan.mrc", volume, 10.0)
    b, _ = _mrc(tmp_path / "TS_ok.mrc")
    config = tmp_path / "proj" / "config.json"
    assert main(["import-mrc", "-c", str(config), str(a), str(b)]) == 0  # imported as it is
    (line,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert line.startswith(f"run TS_nan: 4 voxel(s) of {a} are NaN or inf;") and "--nonfinite zero" in line
    stored = copick_io.read_tomogram(copick_io.open_project(config), "TS_nan", 10.0, "wbp")
    assert np.isnan(stored).sum() == 3 and np.isinf(stored).sum() == 1


@pytest.fixture()
def one_run_project(tmp_path):
    a, _ = _mrc(tmp_path / "TS_1.mrc")
    config = tmp_path / "proj" / "config.json"
    assert main(["import-mrc", "-c", str(config), str(a)]) == 0
    return config


def test_import_of_empty_pick_files_says_0_picks(one_run_project, tmp_path, caplog):
    empty_csv, empty_star = tmp_path / "empty.csv", tmp_path / "ribosome.star"
    empty_csv.write_text("id,experiment,particle_type,x,y,z\n")
    empty_star.write_text("data_particles\n\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n_rlnCoordinateZ #3\n")
    assert main(["import-mrc", "-c", str(one_run_project), "--picks", str(empty_csv), str(empty_star), "--user-id",
                 "gt", "--session-id", "0"]) == 0
    assert f"pick file '{empty_csv}': 0 picks in it; nothing imported from it" in caplog.text
    assert f"pick file '{empty_star}': 0 picks in it; nothing imported from it" in caplog.text
    assert copick_io.pick_sets(copick_io.open_project(one_run_project), {"TS_1"}) == {}  # no pick set made


def test_import_of_an_unknown_object_in_a_csv_gets_the_csv_advice(one_run_project, tmp_path, caplog):
    odd = tmp_path / "odd.csv"
    odd.write_text("id,experiment,particle_type,x,y,z\n0,TS_1,ribosomes,1,2,3\n")
    assert main(["import-mrc", "-c", str(one_run_project), "--picks", str(odd), "--user-id", "gt", "--session-id",
                 "0"]) == 2
    assert "'ribosomes' is not a particle object" in caplog.text
    assert "rename it in the file's particle_type column" in caplog.text
    assert "--object " not in caplog.text  # it names the object of a STAR file only


@pytest.mark.parametrize("fmt, name, message", [
    ("csv", "x.star", "-o {out}: a .star name, but --format csv writes the challenge's CSV"),
    ("star", "x.csv", "-o {out}: a .csv name, but --format star writes RELION STAR"),
    (None, "x.csv", "-o {out}: a .csv name, but --format star (the default) writes RELION STAR"),
])
def test_export_refuses_an_extension_of_the_other_format(picked_project, tmp_path, caplog, fmt, name, message):
    config, _ = picked_project
    out = tmp_path / name
    assert main(["export", "-c", str(config), "--objects", "ribosome", "-o", str(out)]
                + (["--format", fmt] if fmt else [])) == 2
    assert message.format(out=out) in caplog.text and not out.exists()  # star would have made a folder x.csv/


def test_kaggle_pick_files_import(tmp_path, caplog):
    """The Kaggle layout's overlay/ExperimentRuns/<run>/Picks/<object>.json (copick cannot list such names)."""
    config = tmp_path / "proj" / "config.json"
    a, _ = _mrc(tmp_path / "TS_6_4.mrc")
    assert main(["import-mrc", "-c", str(config), str(a)]) == 0
    picks_dir = tmp_path / "kaggle" / "train" / "overlay" / "ExperimentRuns" / "TS_6_4" / "Picks"
    picks_dir.mkdir(parents=True)
    doc = {"pickable_object_name": "ribosome", "user_id": "curation", "session_id": "0", "run_name": "TS_6_4",
           "voxel_spacing": None, "unit": "angstrom",
           "points": [{"location": {"x": 52.75, "y": 101.5, "z": 33.25}},
                      {"location": {"x": 12.0, "y": 13.0, "z": 14.0}, "score": 0.5}]}
    (picks_dir / "ribosome.json").write_text(json.dumps(doc))
    assert main(["import-mrc", "-c", str(config), "--picks", str(picks_dir / "ribosome.json")]) == 0
    root = copick_io.open_project(config)
    xyz, _, scores = copick_io.read_picks_ang(root, "TS_6_4", "ribosome", "curation", "0")
    np.testing.assert_array_equal(xyz, [[52.75, 101.5, 33.25], [12.0, 13.0, 14.0]])
    # the same pick set from two files: refused, naming both
    other = tmp_path / "copy" / "ExperimentRuns" / "TS_6_4" / "Picks"
    other.mkdir(parents=True)
    (other / "ribosome.json").write_text(json.dumps(doc))
    rc = main(["import-mrc", "-c", str(config), "--picks", str(picks_dir / "ribosome.json"),
               str(other / "ribosome.json"), "--overwrite"])
    assert rc == 2
    assert "two pick files give the same pick set (run 'TS_6_4', ribosome curation/0: " in caplog.text
    assert str(picks_dir / "ribosome.json") in caplog.text and str(other / "ribosome.json") in caplog.text
    np.testing.assert_array_equal(scores, [1.0, 0.5])
    assert (copick_io.overlay_root(root) / "ExperimentRuns" / "TS_6_4" / "Picks" / "curation_0_ribosome.json").is_file()


def test_mrc_import_run_all_export_round_trip(tmp_path, caplog):
    """MRC -> import-mrc (with ground truth) -> run_all.py (demo model) -> export STAR: the exported
    coordinates are the picks the pipeline wrote."""
    import yaml

    import run_all

    tomogram, _, centres = synth_run_arrays((32, 64, 64), seed=(5, 0), density=2.0)
    mrc = formats.write_mrc(tmp_path / "TS_rt.mrc", tomogram, 10.0)
    rows = [("TS_rt", name, c[:, ::-1] * 10.0, None) for name, c in centres.items() if len(c)]
    (tmp_path / "gt.csv").write_text(formats.challenge_csv_text(rows))
    config = tmp_path / "proj" / "config.json"
    assert main(["import-mrc", "-c", str(config), str(mrc), "--picks", str(tmp_path / "gt.csv"), "--user-id",
                 "data-portal", "--session-id", "0"]) == 0
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(yaml.safe_dump({
        "copick_config": str(config), "device": "cpu",
        "model": {"configs": [str(DEMO / "demo_unet.yaml")], "weights": [str(DEMO / "demo_unet.pth")]},
        "localize": {"n_procs": 2}, "evaluate": {"ground_truth_user_id": "data-portal"}}))
    assert run_all.main([str(run_yaml)]) == 0
    out = tmp_path / "star"
    assert main(["export", "-c", str(config), "-o", str(out)]) == 0
    root = copick_io.open_project(config)
    n = 0
    for obj in copick_io.particle_objects(root):
        picks_zyx = copick_io.read_picks(root, "TS_rt", obj.name, "octopi", "1", 10.0)
        if not len(picks_zyx):
            assert not (out / f"{obj.name}.star").exists()
            continue
        df = starfile.read(out / f"{obj.name}.star", parse_as_string=["rlnTomoName"])
        np.testing.assert_array_equal(df[["rlnCoordinateZ", "rlnCoordinateY", "rlnCoordinateX"]].to_numpy(),
                                      picks_zyx)
        np.testing.assert_array_equal(df["rlnAutopickFigureOfMerit"].to_numpy(),
                                      copick_io.read_pick_scores(root, "TS_rt", obj.name, "octopi", "1"))
        n += len(df)
    assert n > 0
