"""One pass over a label map: 6-connected components of equal nonzero values, for every wanted class at once.

Matches ``scipy.ndimage.label(label_map == k)`` for each class k up to renumbering (tests/test_localize_kernels.py).
The output is sparse: each component's voxels as flat indices (breadth-first order), its class value, and its
bounding box, so later stages never allocate whole-volume arrays beyond a bit-packed visited map (n / 8 bytes).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from kernels._index import unravel


@njit(cache=True, nogil=True)
def _grow_i64(a, new_len):
    out = np.empty(new_len, np.int64)
    out[: a.shape[0]] = a
    return out


@njit(cache=True, nogil=True)
def _grow_box(a, new_len):
    out = np.empty((new_len, 6), np.int64)
    out[: a.shape[0]] = a
    return out


@njit(cache=True, nogil=True)
def _visit(flat, visited, voxels, pos, k, v):
    if flat[k] == v and ((visited[k >> 3] >> (k & 7)) & 1) == 0:
        visited[k >> 3] = visited[k >> 3] | np.uint8(1 << (k & 7))
        voxels[pos] = k
        return pos + 1
    return pos


@njit(cache=True, nogil=True)
def _scan(flat, nz, ny, nx, wanted):
    n = flat.size
    nfg = 0
    for i in range(n):
        if wanted[flat[i]]:
            nfg += 1
    voxels = np.empty(nfg, np.int64)
    visited = np.zeros(n // 8 + 1, np.uint8)
    cap = 256
    comp_value = np.empty(cap, np.int64)
    comp_start = np.empty(cap, np.int64)
    bbox = np.empty((cap, 6), np.int64)
    ncomp = 0
    pos = 0
    sz = ny * nx
    for i in range(n):
        v = flat[i]
        if not wanted[v]:
            continue
        if ((visited[i >> 3] >> (i & 7)) & 1) != 0:
            continue
        if ncomp == cap:
            cap *= 2
            comp_value = _grow_i64(comp_value, cap)
            comp_start = _grow_i64(comp_start, cap)
            bbox = _grow_box(bbox, cap)
        start = pos
        visited[i >> 3] = visited[i >> 3] | np.uint8(1 << (i & 7))
        voxels[pos] = i
        pos += 1
        z0 = nz
        y0 = ny
        x0 = nx
        z1 = -1
        y1 = -1
        x1 = -1
        head = start
        while head < pos:
            j = voxels[head]
            head += 1
            z, y, x = unravel(j, sz, nx)
            z0 = min(z0, z)
            y0 = min(y0, y)
            x0 = min(x0, x)
            z1 = max(z1, z)
            y1 = max(y1, y)
            x1 = max(x1, x)
            if z > 0:
                pos = _visit(flat, visited, voxels, pos, j - sz, v)
            if y > 0:
                pos = _visit(flat, visited, voxels, pos, j - nx, v)
            if x > 0:
                pos = _visit(flat, visited, voxels, pos, j - 1, v)
            if x < nx - 1:
                pos = _visit(flat, visited, voxels, pos, j + 1, v)
            if y < ny - 1:
                pos = _visit(flat, visited, voxels, pos, j + nx, v)
            if z < nz - 1:
                pos = _visit(flat, visited, voxels, pos, j + sz, v)
        comp_value[ncomp] = v
        comp_start[ncomp] = start
        bbox[ncomp, 0] = z0
        bbox[ncomp, 1] = y0
        bbox[ncomp, 2] = x0
        bbox[ncomp, 3] = z1 + 1
        bbox[ncomp, 4] = y1 + 1
        bbox[ncomp, 5] = x1 + 1
        ncomp += 1
    starts = np.empty(ncomp + 1, np.int64)
    starts[:ncomp] = comp_start[:ncomp]
    starts[ncomp] = pos
    return comp_value[:ncomp].copy(), starts, bbox[:ncomp].copy(), voxels


def scan_components(label_map: np.ndarray, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """6-connected components of each value in ``labels`` (1..255) of a uint8 (z, y, x) label map.

    Returns ``(comp_value (C,), comp_start (C+1,), comp_bbox (C, 6) as z0, y0, x0, z1, y1, x1 half-open,
    voxels (sum of sizes,) flat indices)``; component c's voxels are ``voxels[comp_start[c]:comp_start[c+1]]``.
    Components come in raster order of their first voxel (as ``scipy.ndimage.label`` numbers them).
    """
    label_map = np.ascontiguousarray(label_map)
    if label_map.dtype != np.uint8 or label_map.ndim != 3:
        raise TypeError(f"scan_components: expected a 3-D uint8 label map, got {label_map.dtype} {label_map.shape}")
    wanted = np.zeros(256, np.bool_)
    for value in labels:
        if 1 <= int(value) <= 255:
            wanted[int(value)] = True
    nz, ny, nx = label_map.shape
    return _scan(label_map.ravel(), nz, ny, nx, wanted)
