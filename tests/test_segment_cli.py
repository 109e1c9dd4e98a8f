"""`tomopick segment` end to end on a tiny synthetic copick project (CPU, one worker)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from pipeline import copick_io, overlay_files
from pipeline.cli import main
from pipeline.selectors import SegSelector
from pipeline.synthetic import CZII_OBJECTS, make_synthetic_project

LABELS = {o["name"]: o["label"] for o in CZII_OBJECTS}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("segcli")
    config = make_synthetic_project(tmp / "proj", runs=2, shape=(20, 36, 30), seed=4)
    model = {"architecture": "Unet", "num_classes": 7, "dim_in": 16, "channels": [4, 8, 8], "strides": [2, 1],
             "num_res_units": 1, "dropout": 0.0}
    model_yaml = tmp / "model.yaml"
    model_yaml.write_text(yaml.safe_dump({"model": model, "labels": LABELS}))
    from pipeline.models import build_network, read_model_config

    torch.manual_seed(0)
    weights = tmp / "model.pth"
    torch.save(build_network(read_model_config(model_yaml)).state_dict(), weights)
    return str(config), str(model_yaml), str(weights), tmp


def test_segment_writes_segmentations_and_log(project):
    config, model_yaml, weights, _ = project
    rc = main(["segment", "-c", config, "-mc", model_yaml, "-mw", weights, "--device", "cpu", "--ntta", "2",
               "-alg", "wbp", "-vs", "10", "-seginfo", "predict,octopi,1"])
    assert rc == 0
    root = copick_io.open_project(config)
    seg = SegSelector("predict", "octopi", "1")
    runs, _ = copick_io.runs_with_tomogram(root, 10.0, "wbp")
    assert len(runs) == 2
    from pipeline.config import SegmentConfig
    from pipeline.models import load_ensemble
    from pipeline.segment import segment_volume

    ens = load_ensemble(model_yaml, weights, device="cpu")
    for rid in runs:
        tomo = copick_io.read_tomogram(root, rid, 10.0, "wbp")
        written = copick_io.read_segmentation(root, rid, 10.0, seg)
        assert written.dtype == np.uint8 and written.shape == tomo.shape == (20, 36, 30)
        direct = segment_volume(tomo, ens, SegmentConfig(mode="fast", ntta=2), device="cpu").label_map.numpy()
        np.testing.assert_array_equal(written, direct)
    assert overlay_files.read_segmentation_labels(root, seg) == LABELS
    params = yaml.safe_load(overlay_files.segmentation_log_path(root, seg).read_text())
    assert params["labels"] == LABELS
    assert params["parameters"] == {"sw_bs": 4, "overlap": 0.5, "ntta": 2}
    assert params["outputs"] == {"seg_name": "predict", "seg_user_id": "octopi", "seg_session_id": "1"}
    assert params["tomopick"]["mode"] == "fast" and params["model"]["weights"] == [weights]


def test_segment_uri_spelling_run_subset_and_probabilities(project, tmp_path):
    config, model_yaml, weights, _ = project
    root = copick_io.open_project(config)
    runs, _ = copick_io.runs_with_tomogram(root, 10.0, "wbp")
    rc = main(["segment", "-c", config, "-mc", model_yaml, "-mw", f"{weights},{weights}", "--device", "cpu",
               "--tomo-uri", "wbp@10.0", "--seg-uri", "pred:me/7", "-runs", f"{runs[1]},nope", "--ntta", "1",
               "--mode", "compat", "--save-probabilities", str(tmp_path / "probs")])
    assert rc == 0
    seg = SegSelector("pred", "me", "7")
    root = copick_io.open_project(config)
    assert copick_io.read_segmentation(root, runs[1], 10.0, seg).shape == (20, 36, 30)
    assert not copick_io.segmentation_exists(root, runs[0], 10.0, seg)
    import h5py

    with h5py.File(tmp_path / "probs" / f"{runs[1]}.h5") as fh:
        assert fh["probabilities"].shape == (7, 20, 36, 30)


def test_segment_refuses_disagreeing_selectors(project, caplog):
    config, model_yaml, weights, _ = project
    rc = main(["segment", "-c", config, "-mc", model_yaml, "-mw", weights, "--device", "cpu",
               "-alg", "denoised", "--tomo-uri", "wbp@10.0"])
    assert rc == 2 and "disagrees" in caplog.text


def test_segment_refuses_labels_that_disagree_with_project(project, caplog):
    config, model_yaml, weights, tmp = project
    doc = yaml.safe_load(open(model_yaml))
    doc["labels"] = dict(doc["labels"], ribosome=1, **{"apo-ferritin": 4})
    swapped = tmp / "swapped.yaml"
    swapped.write_text(yaml.safe_dump(doc))
    rc = main(["segment", "-c", config, "-mc", str(swapped), "-mw", weights, "--device", "cpu"])
    assert rc == 2 and "labels disagree with the copick config" in caplog.text


def test_segment_no_matching_tomogram(project, caplog):
    config, model_yaml, weights, _ = project
    rc = main(["segment", "-c", config, "-mc", model_yaml, "-mw", weights, "--device", "cpu", "-alg", "denoised"])
    assert rc == 2 and "no run" in caplog.text and "denoised@10" in caplog.text
