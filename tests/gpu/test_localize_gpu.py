"""Localization on a real GPU: the full-size synthetic label map, reference vs gpu; skipped without one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from pipeline.localize import localize
from pipeline.objects import ParticleObject
from pipeline.synthetic import CZII_OBJECTS, FULL_SHAPE, synth_run_arrays
from tests.localize_sim.volumes import OBJECTS, VOXEL_SIZE, ball

cupy = pytest.importorskip("cupy")  # the gpu extra (CuPy, cuCIM): the GPU localization needs it
CZII = [ParticleObject(o["name"], o["label"], o["radius"], o["weight"]) for o in CZII_OBJECTS]


@pytest.fixture(scope="module")
def full_label_map():
    return synth_run_arrays(FULL_SHAPE, seed=0)[1]


@pytest.mark.parametrize("method", ["watershed", "com"])
def test_full_size_gpu_matches_cpu(full_label_map, method):
    want = localize(full_label_map, CZII, 10.0, method=method, backend="cpu", n_procs=4)
    device_map = torch.from_numpy(full_label_map).cuda()
    got = localize(device_map, CZII, 10.0, method=method)  # auto -> gpu for a CUDA tensor
    assert sum(len(p) for p in want.values()) > 300
    for name in want:
        a, b = want[name].centers_zyx_vox, got[name].centers_zyx_vox
        assert a.shape == b.shape, name
        if len(a):
            dist, match = cKDTree(b).query(a)
            assert dist.max() <= 0.5, name
            assert np.unique(match).size == len(a)


def test_cupy_input_and_known_centres():
    shape = (37, 64, 51)
    label_map = np.zeros(shape, np.uint8)
    centres = {1: (10.0, 12.0, 40.0), 2: (25.0, 50.0, 10.0), 3: (18.0, 30.0, 25.0)}
    for obj in OBJECTS:
        label_map[ball(shape, centres[obj.label], obj.radius / VOXEL_SIZE * 0.9)] = obj.label
    picks = localize(cupy.asarray(label_map), OBJECTS, VOXEL_SIZE, backend="gpu")
    for obj in OBJECTS:
        got = picks[obj.name].centers_zyx_vox
        assert got.shape == (1, 3)
        assert np.linalg.norm(got[0] - centres[obj.label]) < 1e-6


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
@pytest.mark.parametrize("as_cupy", [False, True])
def test_label_map_on_the_second_gpu(as_cupy):
    """A map on cuda:1 is localized there (DLPack export, CuPy and numba on its device), whatever is current,
    with the picks it gets on cuda:0."""
    shape = (37, 64, 51)
    rng = np.random.default_rng(11)
    from tests.localize_sim.volumes import spheres

    label_map = spheres(shape, rng, n=12, touching=0.5)
    want = localize(torch.from_numpy(label_map).to("cuda:0"), OBJECTS, VOXEL_SIZE, backend="gpu")
    assert sum(len(p) for p in want.values()) > 0
    if as_cupy:
        with cupy.cuda.Device(1):
            device_map = cupy.asarray(label_map)
    else:
        device_map = torch.from_numpy(label_map).to("cuda:1")
    assert torch.cuda.current_device() == 0 and cupy.cuda.runtime.getDevice() == 0
    got = localize(device_map, OBJECTS, VOXEL_SIZE, backend="gpu")
    assert cupy.cuda.runtime.getDevice() == 0  # the caller's current device is left as it was
    for name in want:  # the same algorithm on another GPU: the same picks
        np.testing.assert_allclose(got[name].centers_zyx_vox, want[name].centers_zyx_vox, atol=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_cuda_kernels_on_cupy_arrays_equal_their_cpu_twins(seed):
    """The flood and region statistics launched on CuPy arrays (numba on the CUDA array interface): voxel for
    voxel the njit twins' result, as under the simulator."""
    from scipy import ndimage as ndi

    from kernels.region_stats import region_stats_cpu, region_stats_cuda
    from kernels.watershed_levels import flood_levels_cpu, flood_levels_cuda
    from tests.localize_sim.volumes import spheres

    rng = np.random.default_rng(40 + seed)
    cross = ndi.generate_binary_structure(3, 1)
    mask = ndi.binary_opening(spheres((37, 64, 51), rng, n=20, touching=0.6) > 0, structure=cross)
    dist = ndi.distance_transform_edt(mask).astype(np.float32)
    markers, n = ndi.label((dist == ndi.maximum_filter(dist, size=5)) & mask, structure=cross)
    key = -np.rint(dist.astype(np.float64) ** 2).astype(np.int32)
    markers = markers.astype(np.int32)
    got = flood_levels_cuda(cupy.asarray(key), cupy.asarray(markers), cupy.asarray(mask), cupy)
    want = flood_levels_cpu(key, markers, mask)
    assert isinstance(got, cupy.ndarray) and n > 3
    np.testing.assert_array_equal(got.get(), want)
    np.testing.assert_array_equal(region_stats_cuda(got, n, cupy).get(), region_stats_cpu(want, n))


def test_peaks_on_gpu_matches_cpu():
    """The peaks method on CUDA fp16 probabilities (what segmentation hands over) against the cpu backend."""
    from pipeline.config import LocalizeConfig
    from tests.localize_sim.volumes import spheres
    from tests.test_localize_peaks import probabilities_of

    rng = np.random.default_rng(17)
    label_map = spheres((37, 64, 51), rng, n=14, touching=0.5)
    probs = probabilities_of(label_map, rng)
    settings = LocalizeConfig(method="peaks", thresholds={"default": 0.4})
    want = localize(probs, OBJECTS, VOXEL_SIZE, settings, backend="cpu")
    got = localize(torch.from_numpy(probs).cuda(), OBJECTS, VOXEL_SIZE, settings)  # auto -> gpu
    assert sum(len(p) for p in want.values()) > 0
    for name in want:
        a, b = want[name], got[name]
        assert len(a) == len(b), name
        if len(a):
            dist, match = cKDTree(b.centers_zyx_vox).query(a.centers_zyx_vox)
            assert dist.max() <= 0.5, name
            np.testing.assert_allclose(b.scores[match], a.scores, atol=1e-3)
