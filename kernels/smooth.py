"""Separable Gaussian smoothing and maximum filter of a float32 volume, and its local maxima: the CPU kernels of
the ``peaks`` method, parallel over z.

They must match ``scipy.ndimage.gaussian_filter(x, sigma, truncate=TRUNCATE)`` and ``maximum_filter(x, size)``
(mode "reflect", SciPy's: ``d c b a | a b c d``) up to float32 rounding: SciPy sums in float64, these sum in
float32, tap by tap in the same order for every voxel, so a constant region stays exactly constant (a
saturated plateau stays a plateau). Each pass runs with the contiguous x axis innermost, where LLVM vectorizes.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

TRUNCATE = 4.0  # SciPy's default: the kernel reaches int(4 sigma + 0.5) voxels
# float16 -> float32 for every bit pattern (numba has no float16 on the CPU): 256 KiB, stays in cache
_HALF = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32)


def gaussian_weights(sigma: float, truncate: float = TRUNCATE) -> np.ndarray:
    """SciPy's ``_gaussian_kernel1d`` (order 0) as float32: exp(-x^2 / 2 sigma^2) normalised to sum 1."""
    radius = int(truncate * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 / (float(sigma) ** 2) * x**2)
    return (w / w.sum()).astype(np.float32)


@njit(cache=True, inline="always")
def _reflect(j, n):
    """SciPy's "reflect" index (the edge voxel repeated): -1 -> 0, n -> n - 1; also for j beyond one length."""
    period = 2 * n
    j = j % period
    if j < 0:
        j += period
    return j if j < n else period - 1 - j


@njit(cache=True, parallel=True, nogil=True)
def _bin_u16(bits, half, b, zi, yi, xi, out):
    """Mean of each b x b x b block of a float16 volume (given as its uint16 bits) into ``out`` (float32).
    ``zi, yi, xi``: the source index of each position on the padded grid (SciPy's reflect past the far faces,
    as ``reference.bin_mean`` pads)."""
    oz, oy, ox = out.shape
    scale = np.float32(1.0 / (b * b * b))
    for z in prange(oz):
        acc = np.zeros(ox, np.float32)
        for y in range(oy):
            acc[:] = 0.0
            for dz in range(b):
                plane = bits[zi[z * b + dz]]
                for dy in range(b):
                    line = plane[yi[y * b + dy]]
                    for x in range(ox):
                        for dx in range(b):
                            acc[x] += half[line[xi[x * b + dx]]]
            for x in range(ox):
                out[z, y, x] = acc[x] * scale


def _reflected(n: int, length: int) -> np.ndarray:
    """Indices 0..length-1 of an axis of n voxels, past its end reflected as SciPy's "reflect" (edge repeated)."""
    j = np.arange(length) % (2 * n)
    return np.where(j < n, j, 2 * n - 1 - j).astype(np.int64)


def bin_mean(channel: np.ndarray, b: int) -> np.ndarray:
    """Block means (float32) of a float16 or float32 channel; ``b == 1``: the channel as float32."""
    shape = tuple(-(-s // b) for s in channel.shape)
    if channel.dtype == np.float16:
        out = np.empty(shape, np.float32)
        zi, yi, xi = (_reflected(n, o * b) for n, o in zip(channel.shape, shape))
        _bin_u16(np.ascontiguousarray(channel).view(np.uint16), _HALF, b, zi, yi, xi, out)
        return out
    channel = np.ascontiguousarray(channel, dtype=np.float32)
    if b == 1:
        return channel.copy()
    from pipeline.localize.reference import bin_mean as numpy_bin_mean

    return numpy_bin_mean(channel, b)


@njit(cache=True, parallel=True, nogil=True)
def _conv_x(src, dst, w):
    nz, ny, nx = src.shape
    r = (w.shape[0] - 1) // 2
    for z in prange(nz):
        row = np.empty(nx + 2 * r, np.float32)
        for y in range(ny):
            for i in range(nx + 2 * r):
                row[i] = src[z, y, _reflect(i - r, nx)]
            out = dst[z, y]
            for i in range(nx):
                out[i] = 0.0
            for k in range(w.shape[0]):
                wk = w[k]
                for i in range(nx):
                    out[i] += wk * row[i + k]


@njit(cache=True, parallel=True, nogil=True)
def _conv_y(src, dst, w):
    nz, ny, nx = src.shape
    r = (w.shape[0] - 1) // 2
    for z in prange(nz):
        for y in range(ny):
            out = dst[z, y]
            for i in range(nx):
                out[i] = 0.0
            for k in range(w.shape[0]):
                wk = w[k]
                line = src[z, _reflect(y + k - r, ny)]
                for i in range(nx):
                    out[i] += wk * line[i]


@njit(cache=True, parallel=True, nogil=True)
def _conv_z(src, dst, w):
    nz, ny, nx = src.shape
    r = (w.shape[0] - 1) // 2
    for z in prange(nz):
        out = dst[z]
        for y in range(ny):
            for i in range(nx):
                out[y, i] = 0.0
        for k in range(w.shape[0]):
            wk = w[k]
            plane = src[_reflect(z + k - r, nz)]
            for y in range(ny):
                for i in range(nx):
                    out[y, i] += wk * plane[y, i]


@njit(cache=True, parallel=True, nogil=True)
def _max_x(src, dst, size):
    nz, ny, nx = src.shape
    lo = size // 2
    for z in prange(nz):
        row = np.empty(nx + size, np.float32)
        for y in range(ny):
            line = src[z, y]
            # reflected values repeat in-range ones: pad with the edge values, the max over the window is the same
            for i in range(nx + size):
                row[i] = line[min(max(i - lo, 0), nx - 1)]
            out = dst[z, y]
            for i in range(nx):
                out[i] = row[i]
            for k in range(1, size):
                for i in range(nx):
                    v = row[i + k]
                    out[i] = v if v > out[i] else out[i]


@njit(cache=True, parallel=True, nogil=True)
def _max_y(src, dst, size):
    nz, ny, nx = src.shape
    lo = size // 2
    for z in prange(nz):
        for y in range(ny):
            out = dst[z, y]
            a = max(y - lo, 0)
            b = min(y - lo + size, ny)
            for i in range(nx):
                out[i] = src[z, a, i]
            for yy in range(a + 1, b):
                line = src[z, yy]
                for i in range(nx):
                    if line[i] > out[i]:
                        out[i] = line[i]


@njit(cache=True, parallel=True, nogil=True)
def _max_z(src, dst, size):
    nz, ny, nx = src.shape
    lo = size // 2
    for z in prange(nz):
        a = max(z - lo, 0)
        b = min(z - lo + size, nz)
        out = dst[z]
        for y in range(ny):
            for i in range(nx):
                out[y, i] = src[a, y, i]
        for zz in range(a + 1, b):
            plane = src[zz]
            for y in range(ny):
                for i in range(nx):
                    if plane[y, i] > out[y, i]:
                        out[y, i] = plane[y, i]


@njit(cache=True, nogil=True)
def _peak_voxels(smooth, maxed, threshold):
    """Flat indices of voxels equal to their window's maximum and >= threshold (raster order)."""
    flat_s = smooth.reshape(-1)
    flat_m = maxed.reshape(-1)
    n = 0
    for i in range(flat_s.shape[0]):
        if flat_s[i] >= threshold and flat_s[i] == flat_m[i]:
            n += 1
    out = np.empty(n, np.int64)
    n = 0
    for i in range(flat_s.shape[0]):
        if flat_s[i] >= threshold and flat_s[i] == flat_m[i]:
            out[n] = i
            n += 1
    return out


def smooth_and_peaks(src: np.ndarray, sigma: float, side: int, threshold: float):
    """(flat indices of the peak voxels, their smoothed values, the smoothed channel) of a float32 channel (which
    the passes overwrite)."""
    tmp = np.empty_like(src)
    w = gaussian_weights(sigma)
    _conv_x(src, tmp, w)
    _conv_y(tmp, src, w)
    _conv_z(src, tmp, w)  # tmp: the smoothed channel
    smooth = tmp
    _max_x(smooth, src, side)
    maxed = np.empty_like(src)
    _max_y(src, maxed, side)
    _max_z(maxed, src, side)  # src: the window maxima
    index = _peak_voxels(smooth, src, np.float32(threshold))
    return index, smooth.reshape(-1)[index].astype(np.float64), smooth


def plateau_candidates(index: np.ndarray, values: np.ndarray, shape):
    """Group peak voxels into 26-connected plateaus (neighbours at distance <= sqrt(3): exactly the 26) ->
    (centroids (N, 3), values (N,)), plateaus ordered by their first voxel in raster order."""
    if index.size == 0:
        return np.empty((0, 3)), np.empty(0)
    coords = np.stack(np.unravel_index(index, shape), axis=1).astype(np.float64)
    if index.size == 1:
        return coords, values
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    pairs = np.array(sorted(cKDTree(coords).query_pairs(math.sqrt(3) + 1e-9)), dtype=np.int64).reshape(-1, 2)
    n = index.size
    graph = coo_matrix((np.ones(pairs.shape[0]), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    n_groups, group = connected_components(graph, directed=False)
    counts = np.bincount(group, minlength=n_groups).astype(np.float64)
    centers = np.stack([np.bincount(group, weights=coords[:, a], minlength=n_groups) for a in range(3)], axis=1)
    top = np.full(n_groups, -np.inf)
    np.maximum.at(top, group, values)
    return centers / counts[:, None], top
