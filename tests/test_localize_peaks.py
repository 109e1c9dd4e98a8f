"""The peaks method: local maxima of smoothed class probabilities, on the reference, cpu and gpu (host twin)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from pipeline.config import LocalizeConfig, config_from_dict
from pipeline.errors import ConfigError, RunError
from pipeline.localize import gpu, localize
from pipeline.localize.common import Task, peak_parameters, size_window
from tests.localize_sim.volumes import OBJECTS, VOXEL_SIZE, spheres


def probabilities_of(label_map, rng, classes=4, blur=1.5, margin=3.0, dtype=np.float16):
    """Softmax probabilities whose blurred logits favour ``label_map``'s classes: peaked inside particles."""
    logits = rng.normal(0, 0.5, (classes, *label_map.shape)).astype(np.float32)
    logits += margin * np.eye(classes, dtype=np.float32)[label_map].transpose(3, 0, 1, 2)
    logits = ndi.gaussian_filter(logits, (0, blur, blur, blur))
    e = np.exp(logits - logits.max(axis=0))
    return (e / e.sum(axis=0)).astype(dtype)


def sorted_rows(a):
    return a[np.lexsort(a.T[::-1])] if len(a) else a


@pytest.mark.parametrize("seed", range(4))
def test_cpu_and_gpu_twin_equal_the_reference(seed):
    """Fresh random volumes (non-cubic, touching particles, some thresholds low enough to keep noise peaks)."""
    rng = np.random.default_rng(300 + seed)
    shape = tuple(int(s) for s in rng.integers(28, 56, 3))
    label_map = spheres(shape, rng, n=int(rng.integers(6, 16)), touching=0.5)
    probs = probabilities_of(label_map, rng)
    settings = LocalizeConfig(method="peaks", thresholds={"default": float(rng.uniform(0.2, 0.6)), "small": 0.25},
                              smoothing={"default": float(rng.uniform(0.15, 0.4))},
                              peak_window={"default": float(rng.uniform(0.6, 2.0))})
    ref = localize(probs, OBJECTS, VOXEL_SIZE, settings, backend="reference")
    assert sum(len(p) for p in ref.values()) > 0
    for got in (localize(probs, OBJECTS, VOXEL_SIZE, settings, backend="cpu", n_procs=2),
                localize(probs, OBJECTS, VOXEL_SIZE, settings, ops=gpu.host_ops("cpu"))):
        for name in ref:
            a, b = ref[name], got[name]
            order_a, order_b = np.lexsort(a.centers_zyx_vox.T[::-1]), np.lexsort(b.centers_zyx_vox.T[::-1])
            np.testing.assert_allclose(b.centers_zyx_vox[order_b], a.centers_zyx_vox[order_a], atol=1e-4)  # float32 sums
            np.testing.assert_allclose(b.scores[order_b], a.scores[order_a], atol=1e-7)


def test_known_centres_and_scores_in_a_non_cubic_volume():
    """Gaussian bumps of known heights at known centres, one class each: one pick per bump, at its centre,
    scored with the smoothed peak probability."""
    shape = (37, 64, 51)
    z, y, x = np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij")
    probs = np.zeros((4, *shape), np.float32)
    centres = {1: [(10.0, 14.0, 12.0), (25.0, 40.0, 30.0)], 2: [(18.0, 50.0, 9.0)], 3: [(20.0, 22.0, 38.0)]}
    heights = {1: [0.9, 0.6], 2: [0.8], 3: [0.7]}
    for label, cs in centres.items():
        for (cz, cy, cx), h in zip(cs, heights[label]):
            probs[label] = np.maximum(probs[label], h * np.exp(-((z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2) / 8.0))
    settings = LocalizeConfig(method="peaks", thresholds={"default": 0.3}, smoothing={"default": 0.1})
    for backend in ("reference", "cpu"):
        picks = localize(probs, OBJECTS, VOXEL_SIZE, settings, backend=backend)
        for obj in OBJECTS:
            got = picks[obj.name]
            want = np.array(centres[obj.label])
            assert got.centers_zyx_vox.shape == want.shape, (backend, obj.name)
            d, i = cKDTree(got.centers_zyx_vox).query(want)
            assert d.max() < 0.01, (backend, obj.name, d)
            # the score is the smoothed peak: a Gaussian bump (variance 4) smoothed with sigma s keeps
            # (4 / (4 + s^2))^(3/2) of its height
            s = 0.1 * obj.radius / VOXEL_SIZE
            np.testing.assert_allclose(got.scores[i], np.array(heights[obj.label]) * (4 / (4 + s**2)) ** 1.5,
                                       rtol=0.05)  # sigma < 1 voxel: the discrete kernel is coarse


def test_a_saturated_plateau_gives_one_pick_not_hundreds():
    """Probability 1 over a whole ball: smoothing leaves a flat top whose voxels all tie; one pick, at its centre."""
    shape = (40, 44, 42)
    ball = np.zeros(shape, bool)
    ball[10:30, 12:32, 11:31] = True  # a 20^3 block of certainty
    probs = np.zeros((4, *shape), np.float32)
    probs[3][ball] = 1.0
    settings = LocalizeConfig(method="peaks", smoothing={"default": 0.05}, peak_window={"default": 0.5})
    for backend in ("reference", "cpu"):
        got = localize(probs, OBJECTS, VOXEL_SIZE, settings, backend=backend)["large"]
        assert len(got) == 1, (backend, len(got))
        np.testing.assert_allclose(got.centers_zyx_vox[0], (19.5, 21.5, 20.5), atol=1e-9)
        assert got.scores[0] == pytest.approx(1.0, abs=1e-5)


def test_per_class_thresholds():
    rng = np.random.default_rng(9)
    label_map = spheres((40, 48, 44), rng, n=12)
    probs = probabilities_of(label_map, rng)
    low = localize(probs, OBJECTS, VOXEL_SIZE, method="peaks", thresholds={"default": 0.2}, backend="cpu")
    mixed = localize(probs, OBJECTS, VOXEL_SIZE, method="peaks", thresholds={"default": 0.2, "medium": 0.99},
                     backend="cpu")
    assert len(low["medium"]) > 0 and len(mixed["medium"]) == 0
    for name in ("small", "large"):
        np.testing.assert_array_equal(mixed[name].centers_zyx_vox, low[name].centers_zyx_vox)
    assert all(np.all(p.scores >= 0.2) for p in low.values())


def test_parameters_follow_the_radius():
    obj = OBJECTS[2]
    task = Task(obj.name, obj.label, size_window(obj, VOXEL_SIZE, 0.5, 1.0))
    p = peak_parameters(LocalizeConfig(smoothing={"default": 0.25}, peak_window={"default": 1.0}), task)
    radius = obj.radius / VOXEL_SIZE
    assert p.sigma == pytest.approx(0.25 * radius) and p.side % 2 == 1 and abs(p.side - radius) <= 1
    assert p.threshold == LocalizeConfig().thresholds["default"]


def test_peaks_needs_probabilities():
    with pytest.raises(RunError, match="needs class probabilities"):
        localize(np.zeros((8, 8, 8), np.uint8), OBJECTS, VOXEL_SIZE, method="peaks")


@pytest.mark.parametrize("given, want", [
    ("0.4", {"default": 0.4}),
    ("ribosome=0.5,default=0.2", {"default": 0.2, "ribosome": 0.5}),
    ({"ribosome": 0.6}, {"default": 0.25, "ribosome": 0.6}),  # the default stays the config's
    (0.35, {"default": 0.35}),
])
def test_threshold_spellings(given, want):
    cfg = config_from_dict({"copick_config": "x.json", "stages": ["localize"],
                            "localize": {"method": "peaks", "thresholds": given, "probabilities": "p"}},
                           check_files=False)
    assert cfg.localize.thresholds == want


@pytest.mark.parametrize("block", [{"thresholds": 1.5}, {"thresholds": "a=b"}, {"smoothing": -1},
                                   {"peak_window": 0}])
def test_bad_peak_settings_are_refused(block):
    with pytest.raises(ConfigError, match="localize"):
        config_from_dict({"copick_config": "x.json", "stages": ["localize"], "localize": block}, check_files=False)


@pytest.mark.parametrize("seed", range(3))
def test_smoothing_and_window_maximum_kernels_equal_scipy(seed):
    """kernels/smooth.py against scipy.ndimage on random non-cubic volumes, also sides shorter than the kernel
    (SciPy's reflect then folds more than once)."""
    from kernels.smooth import _conv_x, _conv_y, _conv_z, _max_x, _max_y, _max_z, gaussian_weights

    rng = np.random.default_rng(40 + seed)
    shape = (int(rng.integers(3, 20)), int(rng.integers(5, 33)), int(rng.integers(7, 41)))
    x = rng.random(shape, dtype=np.float32)
    sigma, side = float(rng.uniform(0.6, 3.5)), int(rng.integers(1, 8)) * 2 + 1
    w = gaussian_weights(sigma)
    a, b = np.empty_like(x), np.empty_like(x)
    _conv_x(x, a, w)
    _conv_y(a, b, w)
    _conv_z(b, a, w)
    np.testing.assert_allclose(a, ndi.gaussian_filter(x, sigma), atol=2e-6)
    _max_x(x, a, side)
    _max_y(a, b, side)
    _max_z(b, a, side)
    np.testing.assert_array_equal(a, ndi.maximum_filter(x, size=side))


def test_block_means_keep_the_centres_within_half_a_block():
    """Default settings on large objects: the work runs on 2^3 / 3^3 block means; the picks stay within
    bin / 2 (+ rounding) of the true centres, on the reference and the cpu backend alike."""
    from pipeline.objects import ParticleObject

    objects = [ParticleObject("big", 1, 120.0), ParticleObject("huge", 2, 150.0)]  # radius 12 / 15 voxels
    shape = (61, 97, 83)
    z, y, x = np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij")
    rng = np.random.default_rng(5)
    probs = np.zeros((3, *shape), np.float16)
    centres = {1: rng.uniform(15, 45, (2, 3)) * [1, 1.5, 1.3], 2: rng.uniform(18, 42, (1, 3)) * [1, 1.6, 1.4]}
    for label, cs in centres.items():
        for c in cs:
            bump = 0.9 * np.exp(-((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) / (2 * 6.0**2))
            probs[label] = np.maximum(probs[label], bump.astype(np.float16))
    for backend in ("reference", "cpu"):
        picks = localize(probs, objects, VOXEL_SIZE, backend=backend, method="peaks")
        for obj in objects:
            got = picks[obj.name].centers_zyx_vox
            assert got.shape == centres[obj.label].shape, (backend, obj.name, got)
            assert cKDTree(got).query(centres[obj.label])[0].max() < 1.5, (backend, obj.name)
