"""Seeded watershed by synchronous flooding, level by level: the GPU's watershed, with a CPU (njit) twin.

Must approximate ``skimage.segmentation.watershed(image, markers, mask=mask, connectivity=1)`` on integer
priorities ``key`` (the GPU path uses ``key = -round(dist^2)``, which orders voxels exactly as ``-dist``).
scikit-image pops a heap ordered by (priority, age), labels a voxel when it is pushed (when a neighbour is
popped) and gives it priority ``max(own key, that neighbour's priority)``. Here the flood runs level by level
(``level`` = each distinct key, ascending) and, within a level, in synchronous sweeps, which are exactly the
heap's first-in-first-out layers at that priority: in sweep ``t`` every unlabelled mask voxel looks at its 6
neighbours that were labelled before sweep ``t`` and have priority ``<= level`` (the heap has popped them),
takes the label of the one with the lowest (priority, age), and records the sweep, its priority
``max(own key, neighbour's)``, the neighbour's age and the direction. After the sweep, the new voxels get
ages in the order (parent's age, direction in -z, -y, -x, +x, +y, +z): the order the heap pushes them. A level
ends when a sweep labels nothing.

Where it can differ from scikit-image: marker voxels all enter the heap with age 0, so the heap pops markers
of equal value in an order set by its binary-tree layout; here they take raster order. Only floods from
equal-valued markers that meet can differ (plateau ties); the parity tests bound it. The result does not
depend on the order threads run in (a sweep reads only what earlier sweeps wrote, ages are assigned by a
sort), so the CUDA kernel and the CPU twin agree voxel for voxel (tests/localize_sim/sim_kernels.py, under the
CUDA simulator).
"""

from __future__ import annotations

import numpy as np
from numba import cuda, njit

from kernels._index import unravel
from kernels._launch import configure

UNSET = np.int32(2**31 - 1)  # stamp of a voxel not labelled yet


def _consider_source(j, d, t, level, label, stamp, prio, age, best, best_prio, best_age, best_dir):
    """Neighbour ``j`` (reached in direction ``d``) against the best so far: the one the heap pops first wins.

    Compiled twice from this one source: ``_consider`` for the CPU sweep, ``_consider_cuda`` for the CUDA one.
    """
    if stamp[j] >= t or label[j] == 0:
        return best, best_prio, best_age, best_dir
    pj = prio[j]
    if pj > level:
        return best, best_prio, best_age, best_dir
    aj = age[j]
    if best < 0 or pj < best_prio or (pj == best_prio and aj < best_age):
        return j, pj, aj, d
    return best, best_prio, best_age, best_dir


_consider = njit(cache=True, nogil=True, inline="always")(_consider_source)
_consider_cuda = cuda.jit(device=True, inline=True)(_consider_source)


@njit(cache=True, nogil=True)
def _sweep_cpu(fg, key, label, stamp, prio, age, parent_age, pdir, nz, ny, nx, level, t):
    sz = ny * nx
    changed = 0
    for k in range(fg.shape[0]):
        i = fg[k]
        if label[i] != 0:
            continue
        z, y, x = unravel(i, sz, nx)
        best = -1
        bp = np.int32(0)
        ba = np.int64(0)
        bd = 0
        # a voxel is pushed by the neighbour that pops first; that neighbour reached it in direction -offset
        if z > 0:
            best, bp, ba, bd = _consider(i - sz, 5, t, level, label, stamp, prio, age, best, bp, ba, bd)
        if y > 0:
            best, bp, ba, bd = _consider(i - nx, 4, t, level, label, stamp, prio, age, best, bp, ba, bd)
        if x > 0:
            best, bp, ba, bd = _consider(i - 1, 3, t, level, label, stamp, prio, age, best, bp, ba, bd)
        if x < nx - 1:
            best, bp, ba, bd = _consider(i + 1, 2, t, level, label, stamp, prio, age, best, bp, ba, bd)
        if y < ny - 1:
            best, bp, ba, bd = _consider(i + nx, 1, t, level, label, stamp, prio, age, best, bp, ba, bd)
        if z < nz - 1:
            best, bp, ba, bd = _consider(i + sz, 0, t, level, label, stamp, prio, age, best, bp, ba, bd)
        if best >= 0:
            label[i] = label[best]
            prio[i] = max(key[i], bp)
            stamp[i] = t
            parent_age[i] = ba
            pdir[i] = bd
            changed += 1
    return changed


def _assign_ages(fg, stamp, age, parent_age, pdir, t, next_age, xp):
    """Ages of the voxels labelled in sweep ``t``: push order = (parent's age, direction)."""
    new = fg[stamp[fg] == t]
    order = xp.lexsort(xp.stack([pdir[new].astype(xp.int64), parent_age[new]]))
    age[new[order]] = next_age + xp.arange(new.shape[0], dtype=xp.int64)
    return next_age + int(new.shape[0])


def _prepare(key, markers, mask, xp):
    shape = key.shape
    key = xp.ascontiguousarray(key, dtype=xp.int32).reshape(-1)
    mask_flat = xp.ascontiguousarray(mask).reshape(-1).astype(bool)
    label = xp.where(mask_flat, xp.ascontiguousarray(markers).reshape(-1), 0).astype(xp.int32)
    seeds = xp.flatnonzero(label > 0)
    stamp = xp.full(label.shape, int(UNSET), xp.int32)
    stamp[seeds] = 0
    prio = key.copy()
    # markers enter in raster order (scikit-image pushes them so, all with age 0)
    age = xp.zeros(label.shape, xp.int64)
    age[seeds] = xp.arange(seeds.shape[0], dtype=xp.int64) - seeds.shape[0]
    parent_age = xp.zeros(label.shape, xp.int64)
    pdir = xp.zeros(label.shape, xp.int8)
    fg = xp.flatnonzero(mask_flat & (label == 0)).astype(xp.int64)
    return shape, key, label, stamp, prio, age, parent_age, pdir, fg, mask_flat


def flood_levels_cpu(key: np.ndarray, markers: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """CPU twin: int32 region labels (z, y, x); 0 outside the mask and where no marker's flood arrives."""
    shape, key_f, label, stamp, prio, age, parent_age, pdir, fg, mask_flat = _prepare(key, markers, mask, np)
    levels = np.unique(key_f[mask_flat]).astype(np.int32)
    nz, ny, nx = shape
    t = 1
    next_age = 1
    for level in levels:
        while True:
            n_new = _sweep_cpu(fg, key_f, label, stamp, prio, age, parent_age, pdir, nz, ny, nx, np.int32(level), t)
            if n_new:
                next_age = _assign_ages(fg, stamp, age, parent_age, pdir, t, next_age, np)
            t += 1
            if not n_new:
                break
        fg = fg[label[fg] == 0]  # labelled voxels never change again
    return label.reshape(shape)


@cuda.jit
def _sweep_cuda(fg, key, label, stamp, prio, age, parent_age, pdir, nz, ny, nx, level, t, changed):
    k = cuda.grid(1)
    if k >= fg.shape[0]:
        return
    i = fg[k]
    if label[i] != 0:
        return
    sz = ny * nx
    z = i // sz
    rem = i - z * sz
    y = rem // nx
    x = rem - y * nx
    best = -1
    bp = 0
    ba = 0
    bd = 0
    if z > 0:
        best, bp, ba, bd = _consider_cuda(i - sz, 5, t, level, label, stamp, prio, age, best, bp, ba, bd)
    if y > 0:
        best, bp, ba, bd = _consider_cuda(i - nx, 4, t, level, label, stamp, prio, age, best, bp, ba, bd)
    if x > 0:
        best, bp, ba, bd = _consider_cuda(i - 1, 3, t, level, label, stamp, prio, age, best, bp, ba, bd)
    if x < nx - 1:
        best, bp, ba, bd = _consider_cuda(i + 1, 2, t, level, label, stamp, prio, age, best, bp, ba, bd)
    if y < ny - 1:
        best, bp, ba, bd = _consider_cuda(i + nx, 1, t, level, label, stamp, prio, age, best, bp, ba, bd)
    if z < nz - 1:
        best, bp, ba, bd = _consider_cuda(i + sz, 0, t, level, label, stamp, prio, age, best, bp, ba, bd)
    if best >= 0:
        label[i] = label[best]
        ki = key[i]
        prio[i] = ki if ki > bp else bp  # not max(): numba >= 0.66's CUDA target rejects it (numba#10753)
        stamp[i] = t
        parent_age[i] = ba
        pdir[i] = bd
        cuda.atomic.add(changed, 0, 1)


def flood_levels_cuda(key, markers, mask, xp, levels=None, stream=0, threads=256):
    """CUDA flood (same contract as ``flood_levels_cpu``) on device arrays of the array module ``xp``.

    ``xp`` is CuPy on a GPU (numpy under ``NUMBA_ENABLE_CUDASIM=1``); ``levels``: the sorted distinct keys in
    the mask if the caller has them. ``stream``: a numba stream or 0 (the simulator takes only 0).
    """
    shape, key_f, label, stamp, prio, age, parent_age, pdir, fg, mask_flat = _prepare(key, markers, mask, xp)
    if levels is None:
        levels = xp.unique(key_f[mask_flat])
    levels_host = np.asarray(levels.get() if hasattr(levels, "get") else levels, dtype=np.int64)  # host sync
    n_fg = int(fg.shape[0])
    if n_fg == 0:
        return label.reshape(shape)
    changed = xp.zeros(1, xp.int32)
    blocks = (n_fg + threads - 1) // threads
    nz, ny, nx = (int(s) for s in shape)
    launch = configure(_sweep_cuda, blocks, threads, stream)
    t = 1
    next_age = 1
    for level in levels_host:
        while True:
            changed[0] = 0
            launch(fg, key_f, label, stamp, prio, age, parent_age, pdir, nz, ny, nx, np.int32(level), np.int32(t), changed)
            n_new = int(changed[0])  # host sync: one int per sweep
            if n_new:
                next_age = _assign_ages(fg, stamp, age, parent_age, pdir, t, next_age, xp)
            t += 1
            if not n_new:
                break
        fg = fg[label[fg] == 0]  # labelled voxels never change again (host sync: the new length)
        n_fg = int(fg.shape[0])
        if n_fg == 0:
            break
        blocks = (n_fg + threads - 1) // threads
        launch = configure(_sweep_cuda, blocks, threads, stream)
    return label.reshape(shape)
