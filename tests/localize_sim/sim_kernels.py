"""CUDA kernels of the localization under the numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1).

Not collected by the main pytest run (the simulator must be switched on before numba is imported):
tests/test_localize_cudasim.py runs this file in its own process. Volumes stay small (the simulator runs every
CUDA thread as a Python thread).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":  # pragma: no cover - guarded by the runner
    pytest.skip("needs NUMBA_ENABLE_CUDASIM=1 before numba is imported", allow_module_level=True)

from kernels.region_stats import region_stats_cpu, region_stats_cuda  # noqa: E402
from kernels.watershed_levels import flood_levels_cpu, flood_levels_cuda  # noqa: E402
from pipeline.localize import gpu, localize  # noqa: E402
from tests.localize_sim.volumes import OBJECTS, VOXEL_SIZE, ball, blobs, spheres  # noqa: E402

CROSS = ndi.generate_binary_structure(3, 1)


def _flood_inputs(rng, shape):
    label_map = spheres(shape, rng, n=int(rng.integers(2, 6)), touching=0.7) if rng.random() < 0.5 else blobs(shape, rng)
    mask = ndi.binary_opening(label_map > 0, structure=CROSS)
    dist = ndi.distance_transform_edt(mask).astype(np.float32)
    markers, _ = ndi.label((dist == ndi.maximum_filter(dist, size=int(rng.integers(2, 8)))) & mask, structure=CROSS)
    key = -np.rint(dist.astype(np.float64) ** 2).astype(np.int32)
    return key, markers.astype(np.int32), mask


@pytest.mark.parametrize("seed", range(3))
def test_flood_cuda_equals_cpu_twin(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in rng.integers(8, 12, 3))
    key, markers, mask = _flood_inputs(rng, shape)
    got = flood_levels_cuda(key, markers, mask, np, threads=64)
    np.testing.assert_array_equal(got, flood_levels_cpu(key, markers, mask))
    assert markers.any() and (got[mask] > 0).any()


def test_flood_cuda_tie_case():
    key = np.array([0, 2, 1, 2, 1], np.int32).reshape(5, 1, 1)
    markers = np.array([1, 2, 3, 0, 4], np.int32).reshape(5, 1, 1)
    got = flood_levels_cuda(key, markers, np.ones((5, 1, 1), bool), np, threads=8)
    assert got.ravel().tolist() == [1, 2, 3, 3, 4]


@pytest.mark.parametrize("seed", range(2))
def test_region_stats_cuda_equals_cpu_twin(seed):
    rng = np.random.default_rng(50 + seed)
    shape = tuple(int(s) for s in rng.integers(4, 10, 3))
    labels = rng.integers(0, 6, shape).astype(np.int32)
    got = region_stats_cuda(labels, 5, np, threads=64)
    np.testing.assert_array_equal(got, region_stats_cpu(labels, 5))
    np.testing.assert_array_equal(got[1:, 0], np.bincount(labels.ravel(), minlength=6)[1:])


def _gpu_path_on_host(label_map, method="watershed"):
    return localize(label_map, OBJECTS, VOXEL_SIZE, method=method, ops=gpu.host_ops())


@pytest.mark.parametrize("method", ["watershed", "com"])
def test_gpu_path_known_centres(method):
    """The whole GPU orchestration (numpy/SciPy standing in for CuPy, kernels simulated) finds known spheres."""
    shape = (13, 22, 17)
    label_map = np.zeros(shape, np.uint8)
    centres = {1: (5.0, 5.0, 5.5), 2: (7.0, 16.0, 8.0), 3: (6.2, 6.0, 11.6)}
    radii = {1: 2.6, 2: 3.4, 3: 4.6}
    for label, c in centres.items():
        label_map[ball(shape, c, radii[label])] = label
    picks = _gpu_path_on_host(label_map, method)
    for obj in OBJECTS:
        got = picks[obj.name].centers_zyx_vox
        assert got.shape == (1, 3), (obj.name, got)
        assert np.linalg.norm(got[0] - centres[obj.label]) < 0.5


@pytest.mark.parametrize("seed", [1])
def test_gpu_path_matches_reference_on_spheres(seed):
    """Touching spheres (the synthetic data's kind): same picks as the reference, each within 0.5 voxel."""
    rng = np.random.default_rng(70 + seed)
    label_map = spheres((16, 19, 18), rng, n=6, touching=0.6, scale=(0.6, 0.9))
    ref = localize(label_map, OBJECTS, VOXEL_SIZE, backend="reference")
    got = _gpu_path_on_host(label_map)
    assert sum(len(p) for p in ref.values()) >= 3
    for name in ref:
        a, b = ref[name].centers_zyx_vox, got[name].centers_zyx_vox
        assert a.shape == b.shape, name
        if len(a):
            assert cKDTree(b).query(a)[0].max() <= 0.5, name
