"""Shared localization rules: merge within r_min, the 0.5% border, scores, parameter checks, backend choice."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.sparse.csgraph import connected_components
from scipy.spatial.distance import cdist

from pipeline.errors import ConfigError, DeviceError, RunError
from pipeline.localize import choose_backend, localize
from pipeline.localize.common import Picks, finalize, inside_border, merge_close_picks, size_window
from pipeline.objects import ParticleObject
from tests.localize_sim.volumes import OBJECTS, VOXEL_SIZE


def brute_force_merge(points, sizes, r):
    """octopi's rule written the slow way: dense distance graph (<= r), components, means."""
    adjacency = cdist(points, points) <= r
    n, group = connected_components(adjacency, directed=False)
    centres = np.array([points[group == g].mean(axis=0) for g in range(n)])
    return centres, np.array([sizes[group == g].sum() for g in range(n)])


@pytest.mark.parametrize("seed", range(20))
def test_merge_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 60))
    points = rng.uniform(0, 30, (n, 3))
    # exact duplicates and pairs at exactly r (the threshold is inclusive)
    if n > 4:
        points[1] = points[0]
        points[3] = points[2] + np.array([0.0, 0.0, 2.5])
    sizes = rng.uniform(1, 10, n)
    got, got_sizes = merge_close_picks(points, sizes, 2.5)
    want, want_sizes = brute_force_merge(points, sizes, 2.5) if n else (np.empty((0, 3)), np.empty(0))
    assert got.shape == want.shape
    order_got, order_want = np.lexsort(got.T), np.lexsort(want.T)
    np.testing.assert_allclose(got[order_got], want[order_want], atol=1e-12)
    np.testing.assert_allclose(got_sizes[order_got], want_sizes[order_want], atol=1e-9)


def test_merge_is_transitive_and_inclusive():
    points = np.array([[0.0, 0, 0], [0, 0, 2.0], [0, 0, 4.0], [0, 0, 6.01]])
    got, sizes = merge_close_picks(points, np.ones(4), 2.0)
    np.testing.assert_allclose(got, [[0, 0, 2.0], [0, 0, 6.01]])
    np.testing.assert_allclose(sizes, [3, 1])


def test_border_rule_per_axis_inclusive():
    shape = (200, 400, 1000)  # margins 1, 2, 5 voxels
    pts = np.array([
        [1.0, 2.0, 5.0],  # exactly on every margin: kept
        [0.999, 200, 500],  # z too close
        [100, 398.0, 500],  # y = n - margin: kept
        [100, 398.01, 500],  # y beyond
        [100, 200, 4.99],  # x too close
        [199.0, 398.0, 995.0],  # upper bounds exactly: kept
    ])
    np.testing.assert_array_equal(inside_border(pts, shape), [True, False, True, False, False, True])


def test_finalize_scores_are_size_over_sphere_volume():
    obj = ParticleObject("x", 1, 60.0)
    window = size_window(obj, 10.0, 0.5, 1.0)
    v = 4 / 3 * np.pi * 6.0**3
    assert window.v_sphere == pytest.approx(v)
    assert window.v_min == pytest.approx(4 / 3 * np.pi * 3.0**3)
    picks = finalize(np.array([[10.0, 10, 10], [10, 10, 11], [30, 30, 30]]), np.array([v / 2, v / 4, v]), (50, 50, 50), window)
    order = np.argsort(picks.centers_zyx_vox[:, 2])
    np.testing.assert_allclose(picks.centers_zyx_vox[order], [[10, 10, 10.5], [30, 30, 30]])
    np.testing.assert_allclose(picks.scores[order], [0.75, 1.0])
    assert isinstance(picks, Picks) and len(picks) == 2


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(method="blob"), "method 'blob'"),
        (dict(filter_size=0), "filter_size 0"),
        (dict(filter_size=2.5), "filter_size 2.5"),
        (dict(radius_min_scale=-1), "radius_min_scale -1"),
        (dict(backend="tpu"), "backend 'tpu'"),
    ],
)
def test_bad_parameters_are_named(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        localize(np.zeros((4, 4, 4), np.uint8), OBJECTS, VOXEL_SIZE, **kwargs)


def test_bad_label_maps_and_objects():
    with pytest.raises(RunError, match="3-D"):
        localize(np.zeros((4, 4), np.uint8), OBJECTS, VOXEL_SIZE)
    with pytest.raises(RunError, match="not an integer label map"):
        localize(np.zeros((4, 4, 4), np.float32), OBJECTS, VOXEL_SIZE)
    with pytest.raises(RunError, match="0..255"):
        localize(np.full((4, 4, 4), 300, np.int32), OBJECTS, VOXEL_SIZE)
    with pytest.raises(ConfigError, match="label 300"):
        localize(np.zeros((4, 4, 4), np.uint8), [ParticleObject("a", 300, 10.0)], VOXEL_SIZE)
    with pytest.raises(ConfigError, match="listed twice"):
        localize(np.zeros((4, 4, 4), np.uint8), [OBJECTS[0], OBJECTS[0]], VOXEL_SIZE)


def test_wider_integer_label_maps_are_accepted():
    rng = np.random.default_rng(0)
    from tests.localize_sim.volumes import spheres

    lm = spheres((30, 30, 30), rng, n=8)
    a = localize(lm, OBJECTS, VOXEL_SIZE, backend="cpu")
    b = localize(lm.astype(np.int64), OBJECTS, VOXEL_SIZE, backend="cpu")
    for k in a:
        np.testing.assert_array_equal(a[k].centers_zyx_vox, b[k].centers_zyx_vox)


def test_backend_choice():
    assert choose_backend(np.zeros((2, 2, 2), np.uint8))[0] == "cpu"
    assert choose_backend(np.zeros((2, 2, 2), np.uint8), "reference")[0] == "reference"
    torch = pytest.importorskip("torch")
    assert choose_backend(torch.zeros((2, 2, 2), dtype=torch.uint8))[0] == "cpu"


def test_torch_cpu_tensor_input():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    from tests.localize_sim.volumes import spheres

    lm = spheres((30, 32, 34), rng, n=10)
    a = localize(lm, OBJECTS, VOXEL_SIZE, backend="cpu")
    b = localize(torch.from_numpy(lm), OBJECTS, VOXEL_SIZE)
    for k in a:
        np.testing.assert_array_equal(a[k].centers_zyx_vox, b[k].centers_zyx_vox)


def test_gpu_backend_without_cupy_fails_with_reason():
    try:
        import cupy  # noqa: F401

        pytest.skip("CuPy is importable here")
    except ImportError:
        pass
    with pytest.raises(DeviceError, match="CuPy"):
        localize(np.zeros((4, 4, 4), np.uint8), OBJECTS, VOXEL_SIZE, backend="gpu")


class FakeCupyArray:
    """Stands in for a ``cupy.ndarray`` where the CPU backends meet one: CuPy refuses implicit conversion
    (``cupy/_core/core.pyx``: ``__array__`` raises TypeError) and is copied back with ``.get()`` only."""

    __module__ = "cupy._core.core"

    def __init__(self, array):
        self._array = np.asarray(array)
        self.shape, self.ndim, self.dtype = self._array.shape, self._array.ndim, self._array.dtype

    def get(self):
        return self._array.copy()

    def __array__(self, dtype=None, copy=None):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct a "
                        "NumPy array explicitly.")


@pytest.mark.parametrize("method", ["watershed", "peaks"])
def test_cupy_input_on_the_cpu_backend_is_copied_back_explicitly(method):
    """A CuPy label map or CuPy probabilities with backend cpu: the same picks as the numpy array, not
    CuPy's TypeError from np.asarray."""
    from tests.localize_sim.volumes import spheres
    from tests.test_localize_peaks import probabilities_of

    rng = np.random.default_rng(12)
    label_map = spheres((30, 32, 34), rng, n=10)
    volume = label_map if method == "watershed" else probabilities_of(label_map, rng)
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.asarray(FakeCupyArray(volume))  # the stand-in refuses as CuPy does
    want = localize(volume, OBJECTS, VOXEL_SIZE, method=method, backend="cpu")
    got = localize(FakeCupyArray(volume), OBJECTS, VOXEL_SIZE, method=method, backend="cpu")
    assert sum(len(p) for p in want.values()) > 0
    for name in want:
        np.testing.assert_array_equal(got[name].centers_zyx_vox, want[name].centers_zyx_vox)
