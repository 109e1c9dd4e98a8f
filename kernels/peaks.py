"""Watershed markers: 6-connected components of ``(dist == maximum_filter(dist, size=f)) & opened``.

Must match SciPy on the class's bounding-box crop: ``scipy.ndimage.maximum_filter(dist, size=f)`` (window
offsets ``-(f // 2) .. (f - 1) // 2`` per axis, mode "reflect" = half-sample symmetric at the crop's faces)
and ``scipy.ndimage.label`` (up to renumbering). A voxel's window can reach into other opened components of
the same class, so each component's window crop gathers the distances of every component whose box meets
it; it is clipped to the class box, where the reflection happens, exactly as in SciPy.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from kernels._index import unravel


@njit(cache=True, nogil=True)
def _reflect(i, lo, hi):
    """SciPy 'reflect' (d c b a | a b c d | d c b a) of index i into [lo, hi)."""
    n = hi - lo
    j = (i - lo) % (2 * n)
    if j >= n:
        j = 2 * n - 1 - j
    return lo + j


@njit(cache=True, nogil=True)
def _max_1d(src, dst, n_lines_a, n_lines_b, axis, lo_g, n_valid, cls_lo, cls_hi, h0, h1):
    """Sliding max along ``axis`` of a 3-D crop whose first valid index is global ``lo_g``."""
    for a in range(n_lines_a):
        for b in range(n_lines_b):
            for i in range(n_valid):
                g = lo_g + i
                best = -np.inf
                for j in range(g - h0, g + h1 + 1):
                    r = _reflect(j, cls_lo, cls_hi) - lo_g
                    if r < 0:
                        r = 0  # crop face inside the class box: only non-members' values land here
                    elif r >= n_valid:
                        r = n_valid - 1
                    if axis == 0:
                        val = src[r, a, b]
                    elif axis == 1:
                        val = src[a, r, b]
                    else:
                        val = src[a, b, r]
                    if val > best:
                        best = val
                if axis == 0:
                    dst[i, a, b] = best
                elif axis == 1:
                    dst[a, i, b] = best
                else:
                    dst[a, b, i] = best


@njit(cache=True, nogil=True)
def _markers(ny, nx, class_box, filter_size, ovox, ostart, obox, map_start, index_map, local, dist_vox, marker_vox):
    sz = ny * nx
    n = obox.shape[0]
    h0 = filter_size // 2
    h1 = (filter_size - 1) // 2
    n_markers = 0
    for c in range(n):
        lo = np.empty(3, np.int64)
        hi = np.empty(3, np.int64)
        for ax in range(3):
            lo[ax] = max(obox[c, ax] - h0, class_box[ax])
            hi[ax] = min(obox[c, ax + 3] + h1, class_box[ax + 3])
        ez = hi[0] - lo[0]
        ey = hi[1] - lo[1]
        ex = hi[2] - lo[2]
        tmp = np.zeros((ez, ey, ex), np.float32)
        for d in range(n):
            if (obox[d, 0] >= hi[0] or obox[d, 3] <= lo[0] or obox[d, 1] >= hi[1] or obox[d, 4] <= lo[1]
                    or obox[d, 2] >= hi[2] or obox[d, 5] <= lo[2]):
                continue
            for t in range(ostart[d], ostart[d + 1]):
                j = ovox[t]
                z, y, x = unravel(j, sz, nx)
                if lo[0] <= z < hi[0] and lo[1] <= y < hi[1] and lo[2] <= x < hi[2]:
                    tmp[z - lo[0], y - lo[1], x - lo[2]] = dist_vox[t]
        tmp2 = np.empty_like(tmp)
        _max_1d(tmp, tmp2, ey, ex, 0, lo[0], ez, class_box[0], class_box[3], h0, h1)
        _max_1d(tmp2, tmp, ez, ex, 1, lo[1], ey, class_box[1], class_box[4], h0, h1)
        _max_1d(tmp, tmp2, ez, ey, 2, lo[2], ex, class_box[2], class_box[5], h0, h1)
        # local maxima of this component, then their 6-connected components (via the padded index map)
        dy = obox[c, 4] - obox[c, 1] + 2
        dx = obox[c, 5] - obox[c, 2] + 2
        for t in range(ostart[c], ostart[c + 1]):
            j = ovox[t]
            z, y, x = unravel(j, sz, nx)
            if dist_vox[t] == tmp2[z - lo[0], y - lo[1], x - lo[2]]:
                marker_vox[t] = -1  # local maximum, not yet labelled
        base = map_start[c]
        offs = np.array([-dy * dx, -dx, -1, 1, dx, dy * dx], np.int64)
        queue = np.empty(ostart[c + 1] - ostart[c], np.int64)
        for t in range(ostart[c], ostart[c + 1]):
            if marker_vox[t] != -1:
                continue
            n_markers += 1
            marker_vox[t] = n_markers
            head = 0
            tail = 1
            queue[0] = t
            while head < tail:
                u = queue[head]
                head += 1
                for k in range(6):
                    w = index_map[base + local[u] + offs[k]]
                    if w >= 0 and marker_vox[w] == -1:
                        marker_vox[w] = n_markers
                        queue[tail] = w
                        tail += 1
    return n_markers


def marker_components(shape_zyx, class_box, filter_size: int, crops: dict, dist_vox: np.ndarray):
    """Marker id (1..n, 0 = none) of every opened voxel, aligned with ``crops['ovox']``; and n."""
    _, ny, nx = (int(s) for s in shape_zyx)
    marker_vox = np.zeros(crops["ovox"].shape[0], np.int32)
    n = _markers(
        ny, nx, np.asarray(class_box, np.int64), int(filter_size), crops["ovox"], crops["ostart"], crops["obox"],
        crops["map_start"], crops["index_map"], crops["local"], dist_vox, marker_vox,
    )
    return marker_vox, int(n)
