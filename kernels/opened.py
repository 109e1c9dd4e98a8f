"""Binary opening (6-connected cross, once) of each raw component, split into the opened mask's components.

Matches ``scipy.ndimage.binary_opening(mask, structure=cross)`` followed by ``scipy.ndimage.label`` on the
class's bounding-box crop, up to renumbering: opening one 6-connected component never touches another (the
eroded set of a component, dilated by the cross, stays inside that component), and the cross-erosion treats
everything outside the component as background, which is what SciPy's ``border_value=0`` does at the crop's
faces.

Output is a "ragged crop set": opened component c has voxels ``ovox[ostart[c]:ostart[c+1]]`` (flat indices in
the volume), a half-open bounding box ``obox[c]``, and an index map over its bounding box padded by one voxel
(``map_start[c]``, shape ``obox extents + 2``) holding each voxel's position in ``ovox`` or -1, so neighbours
are found without bounds checks.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from kernels._index import unravel
from kernels.label_scan import _grow_box, _grow_i64


@njit(cache=True, nogil=True)
def _open_split(ny, nx, voxels, comp_start, comp_bbox, comp_ids):
    sz = ny * nx
    total = 0
    for c in comp_ids:
        total += comp_start[c + 1] - comp_start[c]
    ovox = np.empty(total, np.int64)
    cap = 64
    ostart = np.empty(cap, np.int64)
    obox = np.empty((cap, 6), np.int64)
    nout = 0
    pos = 0
    for c in comp_ids:
        z0 = comp_bbox[c, 0]
        y0 = comp_bbox[c, 1]
        x0 = comp_bbox[c, 2]
        dz = comp_bbox[c, 3] - z0 + 2
        dy = comp_bbox[c, 4] - y0 + 2
        dx = comp_bbox[c, 5] - x0 + 2
        if dz < 5 or dy < 5 or dx < 5:
            continue  # thinner than 3 voxels along an axis: the erosion is empty
        m = np.zeros((dz, dy, dx), np.uint8)
        a0 = comp_start[c]
        a1 = comp_start[c + 1]
        for t in range(a0, a1):
            j = voxels[t]
            z, y, x = unravel(j, sz, nx)
            m[z - z0 + 1, y - y0 + 1, x - x0 + 1] = 1
        e = np.zeros((dz, dy, dx), np.uint8)
        any_eroded = False
        for t in range(a0, a1):
            j = voxels[t]
            z, y, x = unravel(j, sz, nx)
            a = z - z0 + 1
            b = y - y0 + 1
            d = x - x0 + 1
            if m[a - 1, b, d] and m[a + 1, b, d] and m[a, b - 1, d] and m[a, b + 1, d] and m[a, b, d - 1] and m[a, b, d + 1]:
                e[a, b, d] = 1
                any_eroded = True
        if not any_eroded:
            continue
        # opened = eroded dilated by the cross (a subset of the component); mark with 2 in m
        for t in range(a0, a1):
            j = voxels[t]
            z, y, x = unravel(j, sz, nx)
            a = z - z0 + 1
            b = y - y0 + 1
            d = x - x0 + 1
            if e[a, b, d] or e[a - 1, b, d] or e[a + 1, b, d] or e[a, b - 1, d] or e[a, b + 1, d] or e[a, b, d - 1] or e[a, b, d + 1]:
                m[a, b, d] = 2
        # split the opened voxels into 6-connected components (breadth first, seeds in raster order)
        for t in range(a0, a1):
            j = voxels[t]
            z, y, x = unravel(j, sz, nx)
            if m[z - z0 + 1, y - y0 + 1, x - x0 + 1] != 2:
                continue
            if nout == cap:
                cap *= 2
                ostart = _grow_i64(ostart, cap)
                obox = _grow_box(obox, cap)
            start = pos
            m[z - z0 + 1, y - y0 + 1, x - x0 + 1] = 3
            ovox[pos] = j
            pos += 1
            head = start
            bz0 = z
            by0 = y
            bx0 = x
            bz1 = z
            by1 = y
            bx1 = x
            while head < pos:
                k = ovox[head]
                head += 1
                kz = k // sz
                krem = k - kz * sz
                ky = krem // nx
                kx = krem - ky * nx
                bz0 = min(bz0, kz)
                by0 = min(by0, ky)
                bx0 = min(bx0, kx)
                bz1 = max(bz1, kz)
                by1 = max(by1, ky)
                bx1 = max(bx1, kx)
                a = kz - z0 + 1
                b = ky - y0 + 1
                d = kx - x0 + 1
                if m[a - 1, b, d] == 2:
                    m[a - 1, b, d] = 3
                    ovox[pos] = k - sz
                    pos += 1
                if m[a, b - 1, d] == 2:
                    m[a, b - 1, d] = 3
                    ovox[pos] = k - nx
                    pos += 1
                if m[a, b, d - 1] == 2:
                    m[a, b, d - 1] = 3
                    ovox[pos] = k - 1
                    pos += 1
                if m[a, b, d + 1] == 2:
                    m[a, b, d + 1] = 3
                    ovox[pos] = k + 1
                    pos += 1
                if m[a, b + 1, d] == 2:
                    m[a, b + 1, d] = 3
                    ovox[pos] = k + nx
                    pos += 1
                if m[a + 1, b, d] == 2:
                    m[a + 1, b, d] = 3
                    ovox[pos] = k + sz
                    pos += 1
            ostart[nout] = start
            obox[nout, 0] = bz0
            obox[nout, 1] = by0
            obox[nout, 2] = bx0
            obox[nout, 3] = bz1 + 1
            obox[nout, 4] = by1 + 1
            obox[nout, 5] = bx1 + 1
            nout += 1
    starts = np.empty(nout + 1, np.int64)
    starts[:nout] = ostart[:nout]
    starts[nout] = pos
    return ovox[:pos].copy(), starts, obox[:nout].copy()


@njit(cache=True, nogil=True)
def _index_maps(ny, nx, ovox, ostart, obox):
    n = obox.shape[0]
    map_start = np.empty(n + 1, np.int64)
    total = 0
    for c in range(n):
        map_start[c] = total
        total += (obox[c, 3] - obox[c, 0] + 2) * (obox[c, 4] - obox[c, 1] + 2) * (obox[c, 5] - obox[c, 2] + 2)
    map_start[n] = total
    index_map = np.full(total, -1, np.int32)
    local = np.empty(ovox.shape[0], np.int64)
    comp_of = np.empty(ovox.shape[0], np.int32)
    sz = ny * nx
    for c in range(n):
        dy = obox[c, 4] - obox[c, 1] + 2
        dx = obox[c, 5] - obox[c, 2] + 2
        for t in range(ostart[c], ostart[c + 1]):
            j = ovox[t]
            z, y, x = unravel(j, sz, nx)
            li = ((z - obox[c, 0] + 1) * dy + (y - obox[c, 1] + 1)) * dx + (x - obox[c, 2] + 1)
            local[t] = li
            comp_of[t] = c
            index_map[map_start[c] + li] = t
    return map_start, index_map, local, comp_of


def opened_components(shape_zyx, voxels, comp_start, comp_bbox, comp_ids):
    """Open each raw component in ``comp_ids`` and split the result; returns a dict (the ragged crop set).

    Keys: ``ovox, ostart, obox`` (see module doc), ``map_start, index_map`` (padded index maps), ``local``
    (each voxel's flat index inside its padded map) and ``comp_of`` (each voxel's opened component).
    """
    _, ny, nx = (int(s) for s in shape_zyx)
    comp_ids = np.ascontiguousarray(comp_ids, dtype=np.int64)
    ovox, ostart, obox = _open_split(ny, nx, voxels, comp_start, comp_bbox, comp_ids)
    map_start, index_map, local, comp_of = _index_maps(ny, nx, ovox, ostart, obox)
    return dict(
        ovox=ovox, ostart=ostart, obox=obox, map_start=map_start, index_map=index_map, local=local, comp_of=comp_of
    )


def component_crops(shape_zyx, voxels, comp_start, comp_bbox) -> dict:
    """The same ragged crop set for components taken as they are (no opening): for tests and the ``com`` path."""
    _, ny, nx = (int(s) for s in shape_zyx)
    ovox = np.ascontiguousarray(voxels, np.int64)
    ostart = np.ascontiguousarray(comp_start, np.int64)
    obox = np.ascontiguousarray(comp_bbox, np.int64)
    map_start, index_map, local, comp_of = _index_maps(ny, nx, ovox, ostart, obox)
    return dict(
        ovox=ovox, ostart=ostart, obox=obox, map_start=map_start, index_map=index_map, local=local, comp_of=comp_of
    )
