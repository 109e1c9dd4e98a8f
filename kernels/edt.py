"""Exact Euclidean distance transform on small crops (Felzenszwalb & Huttenlocher lower envelopes).

Must match ``scipy.ndimage.distance_transform_edt`` exactly (then cast to float32, as octopi does): both are
exact, and the square root is taken of the same integer squared distance in float64. As in SciPy, nothing
outside the array counts as background.

``edt_components`` gives each voxel of each opened component (see kernels/opened.py) the distance it has in
the class's bounding-box crop: the nearest voxel that is not in the component always lies inside the
component's bounding box grown by one voxel (a closer non-member would make the digital ball around the voxel,
which is 6-connected and all foreground, reach outside the component), so one crop per component suffices,
clipped to the class's bounding box where SciPy's array ends.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from kernels._index import unravel

_INF = np.inf


@njit(cache=True, nogil=True)
def _envelope_1d(f, n, out, v, zb):
    """out[q] = min_p (q - p)^2 + f[p] over sites with finite f (inf where there is none)."""
    k = -1
    for q in range(n):
        fq = f[q]
        if fq == _INF:
            continue
        if k < 0:
            k = 0
            v[0] = q
            zb[0] = -_INF
            zb[1] = _INF
            continue
        p = v[k]
        s = ((fq + q * q) - (f[p] + p * p)) / (2.0 * (q - p))
        while s <= zb[k]:  # zb[0] = -inf ends this before k < 0
            k -= 1
            p = v[k]
            s = ((fq + q * q) - (f[p] + p * p)) / (2.0 * (q - p))
        k += 1
        v[k] = q
        zb[k] = s
        zb[k + 1] = _INF
    if k < 0:
        for q in range(n):
            out[q] = _INF
        return
    k = 0
    for q in range(n):
        while zb[k + 1] < q:
            k += 1
        p = v[k]
        out[q] = (q - p) * (q - p) + f[p]


@njit(cache=True, nogil=True)
def edt_sq_inplace(work):
    """``work``: float64 (z, y, x), 0 at background, inf at foreground -> squared distances, in place."""
    nz, ny, nx = work.shape
    m = max(nz, ny, nx)
    f = np.empty(m, np.float64)
    out = np.empty(m, np.float64)
    v = np.empty(m, np.int64)
    zb = np.empty(m + 1, np.float64)
    for a in range(nz):
        for b in range(ny):
            for q in range(nx):
                f[q] = work[a, b, q]
            _envelope_1d(f, nx, out, v, zb)
            for q in range(nx):
                work[a, b, q] = out[q]
    for a in range(nz):
        for c in range(nx):
            for q in range(ny):
                f[q] = work[a, q, c]
            _envelope_1d(f, ny, out, v, zb)
            for q in range(ny):
                work[a, q, c] = out[q]
    for b in range(ny):
        for c in range(nx):
            for q in range(nz):
                f[q] = work[q, b, c]
            _envelope_1d(f, nz, out, v, zb)
            for q in range(nz):
                work[q, b, c] = out[q]


def edt_dense(mask: np.ndarray) -> np.ndarray:
    """Distance transform of a whole (small) boolean array, float64; ``scipy.ndimage.distance_transform_edt``'s
    twin wherever the array has a background voxel (for tests and small crops)."""
    work = np.where(np.asarray(mask, bool), np.inf, 0.0)
    edt_sq_inplace(work)
    return np.sqrt(work)


@njit(cache=True, nogil=True)
def _edt_components(ny, nx, class_box, ovox, ostart, obox, dist_vox):
    sz = ny * nx
    n = obox.shape[0]
    for c in range(n):
        # component box grown by one voxel, clipped to the class box (where SciPy's array ends)
        lz = max(obox[c, 0] - 1, class_box[0])
        ly = max(obox[c, 1] - 1, class_box[1])
        lx = max(obox[c, 2] - 1, class_box[2])
        hz = min(obox[c, 3] + 1, class_box[3])
        hy = min(obox[c, 4] + 1, class_box[4])
        hx = min(obox[c, 5] + 1, class_box[5])
        work = np.zeros((hz - lz, hy - ly, hx - lx), np.float64)
        for t in range(ostart[c], ostart[c + 1]):
            j = ovox[t]
            z, y, x = unravel(j, sz, nx)
            work[z - lz, y - ly, x - lx] = _INF
        edt_sq_inplace(work)
        for t in range(ostart[c], ostart[c + 1]):
            j = ovox[t]
            z, y, x = unravel(j, sz, nx)
            dist_vox[t] = np.float32(np.sqrt(work[z - lz, y - ly, x - lx]))


def edt_components(shape_zyx, class_box, crops: dict) -> np.ndarray:
    """float32 distance of every opened voxel (aligned with ``crops['ovox']``), as in the class-box crop."""
    _, ny, nx = (int(s) for s in shape_zyx)
    dist_vox = np.zeros(crops["ovox"].shape[0], np.float32)
    _edt_components(ny, nx, np.asarray(class_box, np.int64), crops["ovox"], crops["ostart"], crops["obox"], dist_vox)
    return dist_vox
