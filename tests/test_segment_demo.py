"""The shipped demo model (configs/models/demo_unet.*): loads as an octopi model, and fast mode agrees with compat."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import SegmentConfig
from pipeline.models import load_ensemble, read_model_config
from pipeline.segment import segment_volume
from pipeline.synthetic import CZII_OBJECTS, synth_run_arrays

MODELS = Path(__file__).resolve().parents[1] / "configs" / "models"
CONFIG, WEIGHTS = MODELS / "demo_unet.yaml", MODELS / "demo_unet.pth"


@pytest.fixture(scope="module")
def ensemble():
    return load_ensemble(str(CONFIG), str(WEIGHTS), device="cpu")


def test_demo_model_is_an_octopi_unet(ensemble):
    cfg = read_model_config(CONFIG)
    assert cfg.architecture == "Unet" and cfg.num_classes == 7
    assert ensemble.labels == {o["name"]: o["label"] for o in CZII_OBJECTS}
    assert WEIGHTS.stat().st_size <= 5 * 1024 * 1024


@pytest.mark.parametrize("seed,shape", [(501, (64, 112, 96)), (502, (70, 96, 130))])
def test_fast_agrees_with_compat_and_finds_particles(ensemble, seed, shape):
    tomo, truth, _ = synth_run_arrays(shape, seed=seed)
    compat = segment_volume(tomo, ensemble, SegmentConfig(mode="compat", ntta=4), device="cpu").label_map.numpy()
    fast = segment_volume(tomo, ensemble, SegmentConfig(ntta=4), device="cpu").label_map.numpy()
    assert fast.shape == compat.shape == shape
    assert (fast == compat).mean() >= 0.99
    # both segment the particles: foreground overlap with the ground-truth spheres
    for labels in (compat, fast):
        fg, gt = labels > 0, truth > 0
        dice = 2 * (fg & gt).sum() / (fg.sum() + gt.sum())
        assert dice > 0.6, dice
