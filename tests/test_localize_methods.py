"""Localization as methods x backends: one registry, one backend signature, labels or probabilities in."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.errors import ConfigError, RunError
from pipeline.localize import cpu, gpu, localize, reference
from pipeline.localize.methods import LABELS, get_method, method_names
from tests.localize_sim.volumes import OBJECTS, VOXEL_SIZE, spheres


def test_every_method_has_every_backend():
    for name in method_names():
        for backend in (reference, cpu, gpu):
            assert name in backend._CANDIDATES, (name, backend.__name__)


@pytest.mark.parametrize("backend", ["reference", "cpu", "auto"])
def test_an_unknown_method_is_an_error_never_com(backend):
    with pytest.raises(ConfigError, match=r"method 'peaks!': expected one of watershed, com"):
        localize(np.zeros((6, 6, 6), np.uint8), OBJECTS, VOXEL_SIZE, method="peaks!", backend=backend)
    with pytest.raises(ConfigError, match="expected one of"):
        get_method(None)


def test_unknown_setting_names_the_fields():
    with pytest.raises(ConfigError, match="LocalizeConfig"):
        localize(np.zeros((6, 6, 6), np.uint8), OBJECTS, VOXEL_SIZE, no_such_knob=3)


def _probabilities(label_map, rng, classes=4):
    """Class probabilities whose argmax is ``label_map`` (random margins, so ties cannot decide it)."""
    logits = rng.normal(0, 1, (classes, *label_map.shape)).astype(np.float32)
    onehot = np.eye(classes, dtype=np.float32)[label_map].transpose(3, 0, 1, 2)
    logits += 20 * onehot
    e = np.exp(logits - logits.max(axis=0))
    return e / e.sum(axis=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("method", ["watershed", "com"])
def test_probabilities_in_give_the_label_map_picks(seed, method):
    """A label-map method given class probabilities (host numpy or torch) picks from their argmax."""
    rng = np.random.default_rng(100 + seed)
    label_map = spheres((26, 31, 29), rng, n=8)
    probs = _probabilities(label_map, rng)
    assert np.array_equal(probs.argmax(axis=0), label_map)
    want = localize(label_map, OBJECTS, VOXEL_SIZE, method=method, backend="cpu")
    assert sum(len(p) for p in want.values()) > 0
    for given in (probs, torch.from_numpy(probs)):
        got = localize(given, OBJECTS, VOXEL_SIZE, method=method)
        for name in want:
            np.testing.assert_array_equal(got[name].centers_zyx_vox, want[name].centers_zyx_vox)
    ops_got = localize(probs, OBJECTS, VOXEL_SIZE, method=method, ops=gpu.host_ops("cpu"))
    assert {k: len(v) for k, v in ops_got.items()} == {k: len(v) for k, v in want.items()}


def test_labels_methods_need_no_probabilities_and_refuse_2d():
    assert get_method("watershed").needs == LABELS
    with pytest.raises(RunError, match="3-D"):
        localize(np.zeros((5, 5), np.uint8), OBJECTS, VOXEL_SIZE)
