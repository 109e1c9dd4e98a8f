"""Seeded watershed of ``-dist`` inside the opened mask: scikit-image's priority flood, reproduced.

Must match ``skimage.segmentation.watershed(-dist, markers, mask=opened, connectivity=1)`` (scikit-image 0.2x,
no compactness, no watershed line) voxel for voxel, plateau ties included: the same binary heap ordered by
(value, age) with strict comparisons, marker voxels pushed first in raster order with age 0, neighbours
visited in the order -z, -y, -x, +x, +y, +z and labelled when pushed, the age counter shared by the whole
class. Working on the ragged crop set (kernels/opened.py) instead of the dense crop changes nothing: the
flood never crosses between opened components, and the one heap holds every component's voxels, so even
ties between age-0 markers of different components break the same way. (tests/test_localize_kernels.py
checks this against scikit-image on tie-heavy integer images.)
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _smaller(hv, ha, i, j):
    if hv[i] != hv[j]:
        return hv[i] < hv[j]
    return ha[i] < ha[j]


@njit(cache=True, nogil=True)
def _swap(hv, ha, hi, i, j):
    tv = hv[i]
    hv[i] = hv[j]
    hv[j] = tv
    ta = ha[i]
    ha[i] = ha[j]
    ha[j] = ta
    ti = hi[i]
    hi[i] = hi[j]
    hi[j] = ti


@njit(cache=True, nogil=True)
def _push(hv, ha, hi, items, value, age, index):
    child = items
    hv[child] = value
    ha[child] = age
    hi[child] = index
    items += 1
    while child > 0:
        parent = (child + 1) // 2 - 1
        if _smaller(hv, ha, child, parent):
            _swap(hv, ha, hi, child, parent)
            child = parent
        else:
            break
    return items


@njit(cache=True, nogil=True)
def _watershed(value_vox, marker_order, label_vox, obox, map_start, index_map, local, comp_of):
    n = value_vox.shape[0]
    # each voxel is pushed at most once (labelled when pushed), so the heap never exceeds n items
    hv = np.empty(max(n, 1), np.float64)
    ha = np.empty(max(n, 1), np.int64)
    hi = np.empty(max(n, 1), np.int64)
    items = 0
    for m in range(marker_order.shape[0]):
        t = marker_order[m]
        items = _push(hv, ha, hi, items, value_vox[t], 0, t)
    age = 1
    offs = np.empty(6, np.int64)
    while items > 0:
        t = hi[0]
        popped_value = hv[0]
        # pop: move the last item to the root and sift down (scikit-image's heappop)
        items -= 1
        if items > 0:
            _swap(hv, ha, hi, 0, items)
            i = 0
            smallest = 0
            while True:
                left = 2 * i + 1
                right = 2 * i + 2
                if left < items:
                    if _smaller(hv, ha, left, i):
                        smallest = left
                    if right < items and _smaller(hv, ha, right, smallest):
                        smallest = right
                else:
                    break
                if smallest == i:
                    break
                _swap(hv, ha, hi, i, smallest)
                i = smallest
        c = comp_of[t]
        dy = obox[c, 4] - obox[c, 1] + 2
        dx = obox[c, 5] - obox[c, 2] + 2
        offs[0] = -dy * dx
        offs[1] = -dx
        offs[2] = -1
        offs[3] = 1
        offs[4] = dx
        offs[5] = dy * dx
        base = map_start[c] + local[t]
        lab = label_vox[t]
        for k in range(6):
            w = index_map[base + offs[k]]
            if w < 0 or label_vox[w] != 0:
                continue
            age += 1
            label_vox[w] = lab
            # a neighbour costs at least what the voxel that reached it cost (as scikit-image 0.26 does)
            items = _push(hv, ha, hi, items, max(value_vox[w], popped_value), age, w)


def watershed_heap(value_vox: np.ndarray, marker_vox: np.ndarray, marker_flat_index: np.ndarray, crops: dict) -> np.ndarray:
    """Region label of every opened voxel (aligned with ``crops['ovox']``), 0 where no marker's flood arrives.

    ``value_vox``: float64 image value per voxel (``-dist``); ``marker_vox``: marker id per voxel (0 = none);
    ``marker_flat_index``: the voxels' flat indices in the volume, which give the raster push order.
    """
    label_vox = marker_vox.astype(np.int32, copy=True)
    seeds = np.flatnonzero(marker_vox)
    order = seeds[np.argsort(marker_flat_index[seeds], kind="stable")].astype(np.int64)
    _watershed(
        np.ascontiguousarray(value_vox, np.float64), order, label_vox, crops["obox"], crops["map_start"],
        crops["index_map"], crops["local"], crops["comp_of"],
    )
    return label_vox
