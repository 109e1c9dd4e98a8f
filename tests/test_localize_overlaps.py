"""peaks' overlap check: a larger class's peak on a particle a smaller class claims, too small for the larger
class, is dropped (pipeline/localize/overlaps.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.config import LocalizeConfig
from pipeline.localize import gpu, localize
from pipeline.localize import overlaps as ov
from pipeline.localize.common import Picks, Task, size_window
from tests.localize_sim.volumes import OBJECTS, VOXEL_SIZE, ball
from tests.test_localize_peaks import probabilities_of

TASKS = [Task(o.name, o.label, size_window(o, VOXEL_SIZE, 0.5, 1.0)) for o in OBJECTS]
RADIUS = {t.name: t.window.radius for t in TASKS}  # small 3.5, medium 5.5, large 8 voxels


def fill_reference(volume, center, radius):
    """Plain: the whole volume's argmax, every voxel's distance to the rounded centre."""
    labels = np.argmax(volume, axis=0) if volume.ndim == 4 else volume
    zz, yy, xx = np.indices(labels.shape)
    c = np.rint(center)
    inside = (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= radius**2
    return float((labels[inside] != 0).mean()) if inside.any() else 0.0


@pytest.mark.parametrize("seed", range(3))
def test_foreground_fill_equals_a_plain_count_on_random_volumes(seed):
    rng = np.random.default_rng(900 + seed)
    shape = tuple(int(s) for s in rng.integers(14, 30, 3))
    probs = rng.random((4, *shape)).astype(np.float16)
    probs[0] *= rng.uniform(0.8, 1.6)  # a background channel that wins about half the voxels
    labels = np.argmax(probs, axis=0).astype(np.uint8)
    for _ in range(25):
        center = rng.uniform(-2, np.array(shape) + 2)  # some centres at or past the border: the sphere is clipped
        radius = float(rng.uniform(0.5, 7.0))
        want = fill_reference(probs, center, radius)
        assert ov.foreground_fill(probs, center, radius) == pytest.approx(want, abs=1e-12)
        assert ov.foreground_fill(labels, center, radius) == pytest.approx(want, abs=1e-12)
        assert ov.foreground_fill(torch.from_numpy(probs), center, radius) == pytest.approx(want, abs=1e-12)
        bf16 = torch.from_numpy(probs).to(torch.bfloat16)  # numpy has no bf16: the crop goes through float32
        assert ov.foreground_fill(bf16, center, radius) == pytest.approx(
            fill_reference(bf16.float().numpy(), center, radius), abs=1e-12)


def drop_reference(picks, tasks, volume):
    """The rule written out plainly, peak by peak."""
    out = {}
    for large in tasks:
        r = RADIUS[large.name]
        mine = picks[large.name]
        claimed = []
        for c in mine.centers_zyx_vox:
            claimed.append(any(RADIUS[t.name] <= ov.SMALLER * r and np.linalg.norm(o - c) <= ov.CLAIM_DISTANCE * r
                               for t in tasks for o in picks[t.name].centers_zyx_vox))
        ref = [fill_reference(volume, c, ov.FILL_RADIUS * r) for c, s, cl in
               zip(mine.centers_zyx_vox, mine.scores, claimed) if s >= ov.CONFIDENT and not cl]
        keep = [True] * len(mine)
        if len(ref) >= ov.MIN_REFERENCE:
            keep = [not cl or fill_reference(volume, c, ov.FILL_RADIUS * r) >= ov.FILL_FRACTION * np.median(ref)
                    for c, cl in zip(mine.centers_zyx_vox, claimed)]
        out[large.name] = np.array(keep, bool)
    return out


@pytest.mark.parametrize("seed", range(4))
def test_drop_equals_the_rule_written_out_on_random_picks(seed):
    rng = np.random.default_rng(950 + seed)
    shape = (24, 40, 40)
    label_map = np.zeros(shape, np.uint8)
    picks = {}
    for task in TASKS:  # particles of every class, segmented at a random share of their radius
        centers = rng.uniform(4, np.array(shape) - 4, (int(rng.integers(2, 7)), 3))
        for c in centers:
            label_map[ball(shape, c, RADIUS[task.name] * rng.uniform(0.3, 0.9))] = task.label
        # peaks at the particles, and a few near other classes' particles (the confusions)
        picks[task.name] = Picks(centers + rng.normal(0, 0.7, centers.shape), rng.uniform(0.3, 1.0, len(centers)))
    for task in TASKS[1:]:
        host = picks[TASKS[0].name].centers_zyx_vox
        extra = host[rng.integers(0, len(host), 2)] + rng.normal(0, 1.0, (2, 3))
        picks[task.name] = Picks(np.vstack([picks[task.name].centers_zyx_vox, extra]),
                                 np.concatenate([picks[task.name].scores, rng.uniform(0.3, 1.0, 2)]))
    probs = probabilities_of(label_map, rng)
    want = drop_reference(picks, TASKS, probs)
    kept, dropped = ov.drop_claimed_by_smaller(picks, TASKS, probs)
    for task in TASKS:
        np.testing.assert_array_equal(kept[task.name].centers_zyx_vox, picks[task.name].centers_zyx_vox[want[task.name]])
        np.testing.assert_array_equal(kept[task.name].scores, picks[task.name].scores[want[task.name]])
        assert dropped.get(task.name, 0) == int((~want[task.name]).sum())
    assert not (~want[TASKS[0].name]).any()  # the smallest class has no smaller one to yield to


def _scene():
    """Four whole large particles, the 4th with a (false) small-class peak inside it, and one small particle
    that the large class also claims (a confusion): label map and the peaks a picker would give."""
    shape = (40, 64, 96)
    label_map = np.zeros(shape, np.uint8)
    large_at = np.array([[20, 16, 16], [20, 16, 48], [20, 48, 16], [20, 48, 48]], float)
    for c in large_at:
        label_map[ball(shape, c, 0.85 * RADIUS["large"])] = 3
    small_at = np.array([[20, 32, 80], [20, 48, 48 + 4.0]], float)  # alone; inside the 4th large particle
    for c in small_at:
        label_map[ball(shape, c, 0.85 * RADIUS["small"])] = 1
    picks = {
        "small": Picks(small_at.copy(), np.array([0.9, 0.8])),
        "medium": Picks(),
        "large": Picks(np.vstack([large_at, small_at[:1] + [0, 0, 1.0]]), np.array([0.95, 0.9, 0.9, 0.9, 0.85])),
    }
    return label_map, picks


def test_a_larger_class_peak_on_a_small_particle_goes_and_a_whole_large_particle_stays():
    label_map, picks = _scene()
    kept, dropped = ov.drop_claimed_by_smaller(picks, TASKS, label_map)
    assert dropped == {"large": 1}
    np.testing.assert_array_equal(kept["large"].centers_zyx_vox, picks["large"].centers_zyx_vox[:4])  # the 4th: claimed, whole
    assert kept["small"] is picks["small"] and len(kept["medium"]) == 0


def test_without_two_confident_unclaimed_peaks_to_measure_by_nothing_is_dropped():
    label_map, picks = _scene()
    picks["large"] = Picks(picks["large"].centers_zyx_vox, np.array([0.95, 0.3, 0.3, 0.9, 0.85]))  # one reference
    kept, dropped = ov.drop_claimed_by_smaller(picks, TASKS, label_map)
    assert dropped == {} and len(kept["large"]) == 5


def test_localize_applies_it_to_peaks_on_every_backend_and_can_be_switched_off():
    rng = np.random.default_rng(5)
    label_map, picks = _scene()
    probs = probabilities_of(label_map, rng, blur=1.0)
    # the confusion: the large class also fills the lone small particle, a little less than the small class
    small_particle = ball(label_map.shape, picks["small"].centers_zyx_vox[0], 0.85 * RADIUS["small"])
    probs[3][small_particle] = (probs[1][small_particle].astype(np.float32) * 0.9).astype(np.float16)
    settings = LocalizeConfig(method="peaks", thresholds={"default": 0.15})  # the smoothed confusion peaks at ~0.23
    off = localize(probs, OBJECTS, VOXEL_SIZE, settings, backend="cpu", overlap_check=False)
    assert np.linalg.norm(off["large"].centers_zyx_vox - picks["small"].centers_zyx_vox[0], axis=1).min() < 2
    for got in (localize(probs, OBJECTS, VOXEL_SIZE, settings, backend="cpu"),
                localize(probs, OBJECTS, VOXEL_SIZE, settings, backend="reference"),
                localize(probs, OBJECTS, VOXEL_SIZE, settings, ops=gpu.host_ops("cpu"))):
        assert len(got["large"]) == len(off["large"]) - 1
        assert np.linalg.norm(got["large"].centers_zyx_vox - picks["small"].centers_zyx_vox[0], axis=1).min() > 5
        assert len(got["small"]) == len(off["small"])


def test_only_the_classes_picked_claim():
    """README: with pick_objects naming the large class alone, nothing claims its peaks: its picks are those of
    the check switched off, the confusion on the small particle included."""
    rng = np.random.default_rng(5)
    label_map, picks = _scene()
    probs = probabilities_of(label_map, rng, blur=1.0)
    small_particle = ball(label_map.shape, picks["small"].centers_zyx_vox[0], 0.85 * RADIUS["small"])
    probs[3][small_particle] = (probs[1][small_particle].astype(np.float32) * 0.9).astype(np.float16)
    settings = LocalizeConfig(method="peaks", thresholds={"default": 0.15})
    large = [o for o in OBJECTS if o.name == "large"]
    alone = localize(probs, large, VOXEL_SIZE, settings, backend="cpu")["large"]
    off = localize(probs, OBJECTS, VOXEL_SIZE, settings, backend="cpu", overlap_check=False)["large"]
    every = localize(probs, OBJECTS, VOXEL_SIZE, settings, backend="cpu")["large"]
    np.testing.assert_array_equal(alone.centers_zyx_vox, off.centers_zyx_vox)
    assert len(every) == len(alone) - 1
