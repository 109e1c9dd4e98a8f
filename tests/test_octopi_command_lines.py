"""Every `octopi segment|localize|evaluate` command line of octopi 1.7.0's docs and --help runs unchanged as
`tomopick ...` (notes/octopi-1.7-cli.md lists them with their sources), on a two-run project imported from MRC
files, with the demo model in the files the lines name. Each test checks what the line wrote.

The lines are literal but for `octopi` -> `tomopick` and `/data/config.json` -> `config.json`; the files they
name (config.json, results/best_model.pth, model1.yaml, ...) are made in the working directory. Lines that read
an earlier line's output make it first (``_ensure``), so each test runs alone too.
"""

from __future__ import annotations

import json
import logging
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline import copick_io, formats
from pipeline.cli import main
from pipeline.selectors import SegSelector
from pipeline.synthetic import synth_run_arrays

DEMO = Path(__file__).resolve().parent.parent / "configs" / "models"
RUNS = ("TS_001", "TS_002")
SHAPE = (32, 64, 64)

DOC_LINES = {
    1: "octopi segment --config config.json --model-weights results/best_model.pth --model-config "
       "results/best_model_config.yaml --tomo-uri wbp@10.0 --seg-uri predict:unet/1",
    2: "octopi localize --config config.json --seg-uri predict:unet/1 --pick-session-id 1 --pick-user-id unet",
    3: "octopi evaluate --config config.json --ground-truth-user-id data-portal --ground-truth-session-id 0 "
       "--predict-user-id octopi --predict-session-id 1 --output analysis",
    4: "octopi segment --config config.json --model-config best_model_config.yaml --model-weights best_model.pth "
       "--tomo-uri wbp@10.0 --seg-uri predict:unet/1",
    5: "octopi segment --config config.json --model-config model1.yaml,model2.yaml --model-weights "
       "model1.pth,model2.pth --seg-uri ensemble:octopi/1",
    6: "octopi segment --config config.json --tomo-uri wbp@10.0 --model-weights tomogram-boundary --seg-uri "
       "predict:octopi/1",
    7: "octopi localize --config config.json --seg-uri predict:unet/1 --pick-session-id 1 --pick-user-id octopi",
    8: "octopi evaluate --config config.json --ground-truth-user-id data-portal --ground-truth-session-id 0 "
       "--predict-user-id octopi --predict-session-id 1 --output evaluate_results",
    9: "octopi segment --config /data/config.json --model-config explore_results/best_model_config.yaml "
       "--model-weights explore_results/best_model.pt --tomo-uri wbp@10.0 --seg-uri predict:octopi/1",
    10: "octopi localize --config /data/config.json --seg-uri predict:octopi/1 --method watershed --pick-user-id "
        "octopi --pick-session-id 2",
    11: "octopi evaluate --config /data/config.json --ground-truth-user-id expert --predict-user-id octopi "
        "--predict-session-id 1",
    12: "octopi segment -c config.json --tomo-uri wbp@10.0 --model-config model.yaml --model-weights model.pth "
        "--seg-uri predictions:octopi/1",
    13: "octopi segment -c config.json --tomo-uri wbp@10.0 --model-weights tomogram-boundary --seg-uri "
        "predictions:octopi/1",
    14: "octopi segment -c config.json --tomo-uri wbp@10.0 --model-config model1.yaml,model2.yaml --model-weights "
        "model1.pth,model2.pth --seg-uri ensemble:octopi/1",
    15: "octopi segment -c config.json --tomo-uri wbp@10.0 --model-config model.yaml --model-weights model.pth "
        "--run-ids TS_001,TS_002,TS_003",
    16: "octopi localize -c config.json --seg-uri predict:octopi/1",
    17: "octopi evaluate -c config.json -gtuid data-portal -gtsid 0 -puid octopi -psid 1 -o evaluation_results.yaml",
}
MODEL_FILES = {  # the file names the lines use -> the demo model's file
    "results/best_model_config.yaml": "demo_unet.yaml", "results/best_model.pth": "demo_unet.pth",
    "best_model_config.yaml": "demo_unet.yaml", "best_model.pth": "demo_unet.pth",
    "model1.yaml": "demo_unet.yaml", "model2.yaml": "demo_unet.yaml", "model1.pth": "demo_unet.pth",
    "model2.pth": "demo_unet.pth", "explore_results/best_model_config.yaml": "demo_unet.yaml",
    "explore_results/best_model.pt": "demo_unet.pth", "model.yaml": "demo_unet.yaml", "model.pth": "demo_unet.pth",
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """config.json (a project imported from TS_001.mrc, TS_002.mrc with ground truth data-portal/0 and expert/5
    from the challenge's CSV) and the model files of the lines, in one folder; returns (folder, GT centres)."""
    work = tmp_path_factory.mktemp("octopi_lines")
    rows, gt = [], {}
    for i, run in enumerate(RUNS):
        tomogram, _, centres = synth_run_arrays(SHAPE, seed=(11, i), density=2.0)
        formats.write_mrc(work / f"{run}.mrc", tomogram, 10.0)
        gt[run] = centres
        rows += [(run, name, c[:, ::-1] * 10.0, None) for name, c in centres.items() if len(c)]
    (work / "gt.csv").write_text(formats.challenge_csv_text(rows))
    cfg = str(work / "config.json")
    assert main(["import-mrc", "-c", cfg, str(work / "TS_001.mrc"), str(work / "TS_002.mrc"), "--picks",
                 str(work / "gt.csv"), "--user-id", "data-portal", "--session-id", "0"]) == 0
    assert main(["import-mrc", "-c", cfg, "--picks", str(work / "gt.csv"), "--user-id", "expert",
                 "--session-id", "5"]) == 0
    for name, demo in MODEL_FILES.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(DEMO / demo, work / name)
    return work, gt


def _run(line_no: int, work: Path, monkeypatch) -> int:
    line = DOC_LINES[line_no].replace("/data/config.json", "config.json")
    argv = shlex.split(line)
    assert argv[0] == "octopi"
    monkeypatch.chdir(work)
    return main(argv[1:])


_done: set[int] = set()


def _ensure(line_no: int, work: Path, monkeypatch) -> None:
    """Run a line whose output another line reads, once per module."""
    if line_no not in _done:
        assert _run(line_no, work, monkeypatch) == 0
        _done.add(line_no)


def _segmentations(work: Path, uri: str) -> dict[str, np.ndarray]:
    from pipeline.selectors import parse_seg_uri

    root = copick_io.open_project(work / "config.json")
    return {r: copick_io.read_segmentation(root, r, 10.0, parse_seg_uri(uri)) for r in RUNS
            if copick_io.segmentation_exists(root, r, 10.0, parse_seg_uri(uri))}


def _reference_segmentations(work: Path) -> dict[str, np.ndarray]:
    """The demo model's label maps of the two tomograms, by the library directly (octopi's defaults: ntta 4)."""
    if "ref" not in _cache:
        from pipeline.config import SegmentConfig
        from pipeline.models import load_ensemble
        from pipeline.segment import segment_volume

        ens = load_ensemble(str(DEMO / "demo_unet.yaml"), str(DEMO / "demo_unet.pth"), device="cpu")
        root = copick_io.open_project(work / "config.json")
        _cache["ref"] = {r: segment_volume(copick_io.read_tomogram(root, r, 10.0, "wbp"), ens, SegmentConfig(ntta=4),
                                           device="cpu").label_map.numpy() for r in RUNS}
    return _cache["ref"]


_cache: dict = {}


def _check_segment_line(line_no, uri, workdir, monkeypatch):
    work, _ = workdir
    assert _run(line_no, work, monkeypatch) == 0
    _done.add(line_no)
    got = _segmentations(work, uri)
    assert sorted(got) == list(RUNS)
    for run, expected in _reference_segmentations(work).items():
        assert got[run].dtype == np.uint8 and got[run].shape == SHAPE
        np.testing.assert_array_equal(got[run], expected)
    seg = SegSelector(*uri.replace(":", ",").replace("/", ",").split(","))
    log_file = work / "overlay" / "logs" / f"segment-{seg.user_id}_{seg.session_id}_{seg.name}.yaml"
    assert log_file.is_file()  # octopi's own localize reads the labels from it


@pytest.mark.parametrize("line_no, uri", [(1, "predict:unet/1"), (4, "predict:unet/1"), (9, "predict:octopi/1"),
                                          (12, "predictions:octopi/1")])
def test_segment_line(line_no, uri, workdir, monkeypatch):
    _check_segment_line(line_no, uri, workdir, monkeypatch)


@pytest.mark.parametrize("line_no", [5, 14])
def test_segment_ensemble_line(line_no, workdir, monkeypatch):
    # the two "models" are the demo model twice: their mean is the demo model's own output
    _check_segment_line(line_no, "ensemble:octopi/1", workdir, monkeypatch)


def test_segment_line_15_run_subset(workdir, monkeypatch, caplog):
    work, _ = workdir
    caplog.set_level(logging.WARNING)
    root = copick_io.open_project(work / "config.json")
    for run in RUNS:  # line 9 may have written predict:octopi/1 already
        copick_io.remove_segmentation(root, run, 10.0, SegSelector("predict", "octopi", "1"))
    _check_segment_line(15, "predict:octopi/1", workdir, monkeypatch)
    assert "TS_003" in caplog.text  # asked for but not in the project: one warning


@pytest.mark.parametrize("line_no", [6, 13])
def test_segment_hugging_face_alias_is_a_clear_error(line_no, workdir, monkeypatch, caplog):
    work, _ = workdir
    assert _run(line_no, work, monkeypatch) == 2
    assert "tomogram-boundary" in caplog.text and "Hugging Face" in caplog.text
    assert "-mc/--model-config" in caplog.text and "downloads nothing" in caplog.text


def _expected_picks(work: Path, uri: str) -> dict:
    """Picks of the stored segmentation by the library directly (octopi's localize defaults)."""
    from pipeline import overlay_files
    from pipeline.localize import localize
    from pipeline.selectors import parse_seg_uri

    root = copick_io.open_project(work / "config.json")
    seg = parse_seg_uri(uri)
    labels = overlay_files.read_segmentation_labels(root, seg)
    objects = [o for o in copick_io.particle_objects(root) if o.name in labels]
    return {(r, name): p.centers_zyx_vox for r in RUNS
            for name, p in localize(copick_io.read_segmentation(root, r, 10.0, seg), objects, 10.0).items()}


@pytest.mark.parametrize("line_no, seg_line, uri, user, session", [
    (2, 1, "predict:unet/1", "unet", "1"), (7, 1, "predict:unet/1", "octopi", "1"),
    (10, 9, "predict:octopi/1", "octopi", "2"), (16, 9, "predict:octopi/1", "octopi", "1"),
])
def test_localize_line(line_no, seg_line, uri, user, session, workdir, monkeypatch):
    work, _ = workdir
    _ensure(seg_line, work, monkeypatch)
    assert _run(line_no, work, monkeypatch) == 0
    _done.add(line_no)
    root = copick_io.open_project(work / "config.json")
    expected = _expected_picks(work, uri)
    assert sum(len(v) for v in expected.values()) > 5  # the demo model finds particles here
    for (run, name), centres in expected.items():
        got = copick_io.read_picks(root, run, name, user, session, 10.0)
        order = np.lexsort(got.T[::-1]), np.lexsort(centres.T[::-1])
        np.testing.assert_allclose(got[order[0]], centres[order[1]], atol=1e-9)
    assert (work / "overlay" / "logs" / f"localize-{user}_{session}.yaml").is_file()


@pytest.mark.parametrize("line_no, out_dir, gt_user, gt_session", [
    (3, "analysis", "data-portal", "0"), (8, "evaluate_results", "data-portal", "0"),
    (11, "scores", "expert", None), (17, "evaluation_results.yaml", "data-portal", "0"),
])
def test_evaluate_line(line_no, out_dir, gt_user, gt_session, workdir, monkeypatch):
    from pipeline.evaluate_io import evaluate_project
    from pipeline.evaluate_report import metrics_document

    work, _ = workdir
    _ensure(9, work, monkeypatch)
    _ensure(16, work, monkeypatch)  # predictions octopi/1
    assert _run(line_no, work, monkeypatch) == 0
    root = copick_io.open_project(work / "config.json")
    direct = evaluate_project(root, copick_io.particle_objects(root), None, ground_truth_user_id=gt_user,
                              ground_truth_session_id=gt_session, pick_user_id="octopi", pick_session_id="1",
                              voxel_size=10.0, config_path=str(work / "config.json"))
    written = json.loads((work / out_dir / "metrics.json").read_text())
    assert written == json.loads(json.dumps(metrics_document(direct)))
    assert (work / out_dir / "average_metrics.yaml").is_file()
    assert sum(c.tp for c in direct.aggregated.values()) > 0  # real picks scored against real ground truth


def test_evaluate_verbose_takes_a_value_and_is_not_voxel_size(workdir, monkeypatch, caplog):
    work, _ = workdir
    _ensure(9, work, monkeypatch)
    _ensure(16, work, monkeypatch)
    caplog.set_level(logging.INFO)
    monkeypatch.chdir(work)
    # -v True is octopi's verbose (before allow_abbrev=False it was read as -vs True, "invalid float value")
    assert main(["evaluate", "-c", "config.json", "-gtuid", "data-portal", "-puid", "octopi", "-psid", "2",
                 "-o", "verbose_scores", "-v", "True"]) in (0,)
    assert (work / "verbose_scores" / "metrics.json").is_file()
    with pytest.raises(SystemExit):
        main(["evaluate", "-c", "config.json", "-v"])  # a value is needed, as in octopi


def test_localize_method_is_case_insensitive_and_label_reads_one_value(workdir, monkeypatch):
    work, _ = workdir
    _ensure(1, work, monkeypatch)
    monkeypatch.chdir(work)
    assert main(["localize", "-c", "config.json", "-suri", "predict,unet,1", "-m", "COM", "-pui", "com",
                 "-psid", "1"]) == 0  # octopi's legacy comma form of -suri, too
    root = copick_io.open_project(work / "config.json")
    assert any(copick_io.picks_exist(root, r, "ribosome", "com", "1") for r in RUNS)
    # -lbl 4: every object named reads label value 4 (the demo model's ribosome), sized as its own radius
    assert main(["localize", "-c", "config.json", "-suri", "predict:unet/1", "-lbl", "4", "-obj", "apo-ferritin",
                 "-pui", "lbl", "-psid", "1", "-rmin", "0.2", "-rmax", "3"]) == 0
    from pipeline.config import LocalizeConfig
    from pipeline.localize import localize
    from pipeline.objects import ParticleObject

    settings = LocalizeConfig(radius_min_scale=0.2, radius_max_scale=3.0)
    n = 0
    for run in RUNS:
        seg = copick_io.read_segmentation(root, run, 10.0, SegSelector("predict", "unet", "1"))
        want = localize(seg, [ParticleObject("apo-ferritin", 4, 60.0)], 10.0, settings)["apo-ferritin"]
        got = copick_io.read_picks(root, run, "apo-ferritin", "lbl", "1", 10.0)
        np.testing.assert_allclose(got[np.lexsort(got.T[::-1])],
                                   want.centers_zyx_vox[np.lexsort(want.centers_zyx_vox.T[::-1])], atol=1e-9)
        n += len(got)
    assert n > 0


def test_ntta_above_eight_is_refused_with_the_reason(workdir, monkeypatch, caplog):
    work, _ = workdir
    monkeypatch.chdir(work)
    assert main(["segment", "-c", "config.json", "-mc", "model.yaml", "-mw", "model.pth", "-ntta", "12"]) == 2
    assert "-ntta 12" in caplog.text and "octopi 1.7" in caplog.text and "use -ntta 8" in caplog.text
