"""The CPU numba kernels against their SciPy / scikit-image counterparts, one at a time, on seeded inputs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from kernels.edt import edt_dense
from kernels.label_scan import scan_components
from kernels.opened import component_crops, opened_components
from kernels.watershed_heap import watershed_heap
from tests.localize_sim.volumes import blobs

CROSS = ndi.generate_binary_structure(3, 1)


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to renumbering (0 stays 0)."""
    if not np.array_equal(a == 0, b == 0):
        return False
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return np.unique(pairs[0]).size == pairs.shape[1] == np.unique(pairs[1]).size


@pytest.mark.parametrize("seed", range(8))
def test_scan_matches_scipy_label(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in rng.integers(5, 40, 3))
    label_map = blobs(shape, rng, sigma=rng.uniform(0.6, 2.0))
    value, start, box, voxels = scan_components(label_map, [1, 2, 3])
    for k in (1, 2, 3):
        want, n = ndi.label(label_map == k, structure=CROSS)
        got = np.zeros(shape, np.int64)
        ids = np.flatnonzero(value == k)
        assert ids.size == n
        for i, c in enumerate(ids):
            vox = voxels[start[c] : start[c + 1]]
            got.flat[vox] = i + 1
            zyx = np.stack(np.unravel_index(vox, shape), 1)
            np.testing.assert_array_equal(box[c], np.concatenate([zyx.min(0), zyx.max(0) + 1]))
        assert same_partition(got, want)
        # raster order of first voxels, as scipy numbers them
        firsts = [voxels[start[c] : start[c + 1]].min() for c in ids]
        assert firsts == sorted(firsts)


def test_scan_rejects_non_uint8():
    with pytest.raises(TypeError, match="uint8"):
        scan_components(np.zeros((3, 3, 3), np.int32), [1])


@pytest.mark.parametrize("seed", range(40))
def test_edt_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in rng.integers(1, 16, 3))
    mask = rng.random(shape) < rng.uniform(0.3, 0.995)
    if mask.all():
        mask.flat[int(rng.integers(mask.size))] = False
    np.testing.assert_array_equal(edt_dense(mask), ndi.distance_transform_edt(mask))


@pytest.mark.parametrize("seed", range(8))
def test_opening_matches_scipy(seed):
    rng = np.random.default_rng(100 + seed)
    shape = tuple(int(s) for s in rng.integers(8, 40, 3))
    label_map = blobs(shape, rng, sigma=rng.uniform(0.8, 2.5))
    value, start, box, voxels = scan_components(label_map, [1, 2, 3])
    for k in (1, 2, 3):
        ids = np.flatnonzero(value == k)
        crops = opened_components(shape, voxels, start, box, ids)
        got = np.zeros(shape, np.int64)
        for c in range(crops["obox"].shape[0]):
            got.flat[crops["ovox"][crops["ostart"][c] : crops["ostart"][c + 1]]] = c + 1
        want, _ = ndi.label(ndi.binary_opening(label_map == k, structure=CROSS), structure=CROSS)
        assert same_partition(got, want)


@pytest.mark.parametrize("seed", range(15))
def test_heap_watershed_matches_skimage_with_ties(seed):
    """Integer-valued images: plateaus everywhere, so the result depends on scikit-image's exact heap order."""
    rng = np.random.default_rng(200 + seed)
    shape = tuple(int(s) for s in rng.integers(6, 30, 3))
    mask = blobs(shape, rng, objects=[None], sigma=rng.uniform(1.0, 2.5)) > 0
    image = rng.integers(0, int(rng.integers(1, 4)), shape).astype(np.float64)
    markers = np.zeros(shape, np.int32)
    seeds = np.flatnonzero(mask & (rng.random(shape) < 0.02))
    markers.flat[seeds] = rng.integers(1, 6, seeds.size)  # repeated ids: markers need not be connected
    want = watershed(image, markers, mask=mask, connectivity=1)

    value, start, box, voxels = scan_components(mask.astype(np.uint8), [1])
    crops = component_crops(shape, voxels, start, box)
    got_vox = watershed_heap(image.flat[crops["ovox"]], markers.flat[crops["ovox"]], crops["ovox"], crops)
    got = np.zeros(shape, np.int32)
    got.flat[crops["ovox"]] = got_vox
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("seed", range(20))
def test_level_flood_twin_matches_skimage_when_marker_values_differ(seed):
    """The GPU watershed's CPU twin is scikit-image's flood exactly, unless markers of equal value meet."""
    from kernels.watershed_levels import flood_levels_cpu

    rng = np.random.default_rng(300 + seed)
    shape = tuple(int(s) for s in rng.integers(6, 24, 3))
    mask = blobs(shape, rng, objects=[None], sigma=rng.uniform(1.0, 2.5)) > 0
    key = rng.integers(0, int(rng.integers(2, 5)), shape).astype(np.int32)
    markers = np.zeros(shape, np.int32)
    seeds = np.flatnonzero(mask & (rng.random(shape) < 0.02))
    markers.flat[seeds] = rng.integers(1, 6, seeds.size)
    key.flat[seeds] = -1 - rng.permutation(seeds.size)  # distinct marker values, below every other voxel
    want = watershed(key.astype(np.float64), markers, mask=mask, connectivity=1)
    np.testing.assert_array_equal(flood_levels_cpu(key, markers, mask), want)


def test_level_flood_twin_tie_case_is_what_the_docstring_says():
    """Equal-valued markers: scikit-image's heap pops the later marker first here; we take raster order."""
    from kernels.watershed_levels import flood_levels_cpu

    key = np.array([0, 2, 1, 2, 1], np.int32).reshape(5, 1, 1)
    markers = np.array([1, 2, 3, 0, 4], np.int32).reshape(5, 1, 1)
    mask = np.ones((5, 1, 1), bool)
    assert watershed(key.astype(float), markers, mask=mask).ravel().tolist() == [1, 2, 3, 4, 4]
    assert flood_levels_cpu(key, markers, mask).ravel().tolist() == [1, 2, 3, 3, 4]


@pytest.mark.parametrize("seed", range(6))
def test_region_stats_twin_matches_scipy(seed):
    from kernels.region_stats import region_stats_cpu

    rng = np.random.default_rng(400 + seed)
    shape = tuple(int(s) for s in rng.integers(3, 30, 3))
    labels = rng.integers(0, 8, shape).astype(np.int32)
    stats = region_stats_cpu(labels, 6)  # label 7 is beyond n_regions: ignored
    np.testing.assert_array_equal(stats[1:, 0], np.bincount(labels.ravel(), minlength=8)[1:7])
    present = np.flatnonzero(stats[1:, 0]) + 1
    com = np.array(ndi.center_of_mass(np.ones(shape), labels, present))
    np.testing.assert_allclose(stats[present, 1:] / stats[present, :1], com, atol=1e-9)
