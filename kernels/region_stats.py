"""Per-region voxel counts and coordinate sums of an int label volume: a CUDA kernel and its CPU twin.

Must match ``numpy.bincount(labels)`` and ``scipy.ndimage.center_of_mass(ones, labels, index)`` (centroid =
sums / count) for regions 1..n_regions; label 0 and labels above ``n_regions`` are ignored. The CUDA kernel
accumulates with float64 atomics (sums of integers below 2^53 are exact, so the result does not depend on
the order of the additions and equals the CPU twin exactly).
"""

from __future__ import annotations

import numpy as np
from numba import cuda, njit

from kernels._index import unravel
from kernels._launch import configure


@njit(cache=True, nogil=True)
def _stats_cpu(labels, ny, nx, n_regions, out):
    sz = ny * nx
    for i in range(labels.shape[0]):
        lab = labels[i]
        if lab <= 0 or lab > n_regions:
            continue
        z, y, x = unravel(i, sz, nx)
        out[lab, 0] += 1.0
        out[lab, 1] += z
        out[lab, 2] += y
        out[lab, 3] += x


def region_stats_cpu(labels: np.ndarray, n_regions: int) -> np.ndarray:
    """(n_regions + 1, 4) float64: count, sum z, sum y, sum x per label (row 0 unused)."""
    out = np.zeros((int(n_regions) + 1, 4), np.float64)
    _, ny, nx = labels.shape
    _stats_cpu(np.ascontiguousarray(labels).reshape(-1), ny, nx, int(n_regions), out)
    return out


@cuda.jit
def _stats_cuda(labels, index, ny, nx, n_regions, out):
    k = cuda.grid(1)
    if k >= index.shape[0]:
        return
    i = index[k]
    lab = labels[i]
    if lab <= 0 or lab > n_regions:
        return
    sz = ny * nx
    z = i // sz
    rem = i - z * sz
    y = rem // nx
    x = rem - y * nx
    cuda.atomic.add(out, (lab, 0), 1.0)
    cuda.atomic.add(out, (lab, 1), float(z))
    cuda.atomic.add(out, (lab, 2), float(y))
    cuda.atomic.add(out, (lab, 3), float(x))


def region_stats_cuda(labels, n_regions: int, xp, stream=0, threads=256):
    """CUDA twin of ``region_stats_cpu`` on a device array of module ``xp``; the result stays on the device.

    ``n_regions`` is passed in (the caller knows it from labelling) so no host sync is needed here.
    """
    flat = xp.ascontiguousarray(labels).reshape(-1)
    out = xp.zeros((int(n_regions) + 1, 4), xp.float64)
    if n_regions == 0:
        return out
    index = xp.flatnonzero(flat)  # one thread per labelled voxel, not per voxel of the crop
    n = int(index.shape[0])  # host sync: the launch size
    if n == 0:
        return out
    _, ny, nx = (int(s) for s in labels.shape)
    blocks = (n + threads - 1) // threads
    launch = configure(_stats_cuda, blocks, threads, stream)
    launch(flat, index, ny, nx, int(n_regions), out)
    return out
