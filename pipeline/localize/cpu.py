"""Fast CPU localization: the reference's picks from sparse, per-component work in numba kernels.

One labelling pass finds the 6-connected components of every wanted class at once (kernels/label_scan.py);
after that nothing touches a whole-volume array. Per class: open each component and split it
(kernels/opened.py), distance transform per opened component on its bounding box grown by one voxel
(kernels/edt.py), maximum filter on each component's window crop fed with its neighbours' distances
(kernels/peaks.py), one priority flood for the whole class (kernels/watershed_heap.py), then sizes and
centroids by ``bincount`` over the component voxels. Each step is exact with respect to the reference on the
class's bounding-box crop (see each kernel's docstring), so the picks are the reference's picks up to float
summation order in the centroids.

Classes run in ``n_procs`` worker threads: the kernels release the GIL (``nogil=True``), so threads give the
parallelism of processes without copying or sharing the label map, and nothing has to be spawn-safe.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from pipeline.localize.common import (
    NO_CANDIDATES,
    Candidates,
    SizeWindow,
    Task,
    neighbour_values,
    peak_parameters,
    refine_peaks,
    report,
)
from pipeline.localize.methods import PROBABILITIES, Method, backend_function

log = logging.getLogger(__name__)


def scan(label_map: np.ndarray, labels):
    """The one labelling pass: raw 6-connected components of every class in ``labels``."""
    from kernels.label_scan import scan_components

    return scan_components(label_map, labels)


def _coords(flat_index: np.ndarray, shape_zyx) -> np.ndarray:
    return np.stack(np.unravel_index(flat_index, shape_zyx), axis=1).astype(np.float64)


def candidates_watershed(shape_zyx, components, task: Task, settings) -> Candidates:
    """Candidate centres (N, 3) and region sizes (N,) of one class from the scan's components."""
    label, window = task.label, task.window
    from kernels.edt import edt_components
    from kernels.opened import opened_components
    from kernels.peaks import marker_components
    from kernels.watershed_heap import watershed_heap

    comp_value, comp_start, comp_bbox, voxels = components
    ids = np.flatnonzero(comp_value == label)
    if ids.size == 0:
        return NO_CANDIDATES
    class_box = np.concatenate([comp_bbox[ids, :3].min(axis=0), comp_bbox[ids, 3:].max(axis=0)])
    crops = opened_components(shape_zyx, voxels, comp_start, comp_bbox, ids)
    if crops["ovox"].size == 0:
        return NO_CANDIDATES
    dist_vox = edt_components(shape_zyx, class_box, crops)
    marker_vox, n_markers = marker_components(shape_zyx, class_box, int(settings.filter_size), crops, dist_vox)
    if n_markers == 0:
        return NO_CANDIDATES
    region = watershed_heap(-dist_vox.astype(np.float64), marker_vox, crops["ovox"], crops)
    return region_centroids(region, n_markers, crops["ovox"], shape_zyx, window, strict=False)


def candidates_com(shape_zyx, components, task: Task, settings) -> Candidates:
    label, window = task.label, task.window
    comp_value, comp_start, _, voxels = components
    ids = np.flatnonzero(comp_value == label)
    if ids.size == 0:
        return NO_CANDIDATES
    sizes = (comp_start[ids + 1] - comp_start[ids]).astype(np.float64)
    ids = ids[window.keeps(sizes, strict=True)]
    if ids.size == 0:
        return NO_CANDIDATES
    counts = comp_start[ids + 1] - comp_start[ids]
    member = np.repeat(np.arange(ids.size), counts)
    flat = np.concatenate([voxels[comp_start[i] : comp_start[i + 1]] for i in ids])
    coords = _coords(flat, shape_zyx)
    centers = np.stack([np.bincount(member, weights=coords[:, a], minlength=ids.size) for a in range(3)], axis=1)
    return Candidates(centers / counts[:, None], counts.astype(np.float64))


def region_centroids(region_vox, n_regions, flat_index, shape_zyx, window: SizeWindow, strict: bool) -> Candidates:
    """Sizes and unweighted centroids of regions 1..n given per-voxel region ids; keep those in the window."""
    sizes = np.bincount(region_vox, minlength=n_regions + 1)[1:].astype(np.float64)
    keep = window.keeps(sizes, strict)
    if not keep.any():
        return NO_CANDIDATES
    coords = _coords(flat_index, shape_zyx)
    sums = np.stack(
        [np.bincount(region_vox, weights=coords[:, a], minlength=n_regions + 1)[1:] for a in range(3)], axis=1
    )
    return Candidates(sums[keep] / sizes[keep, None], sizes[keep])


def candidates_peaks(probabilities: np.ndarray, task: Task, settings) -> Candidates:
    """The reference's ``peaks`` with numba kernels (kernels/smooth.py): block means read straight from float16,
    separable smoothing and window maxima, parallel over z, in float32; the peak voxels are few, so their
    plateaus are grouped sparsely. The reference's candidates up to float32 rounding of the smoothed values."""
    from kernels.smooth import bin_mean, plateau_candidates, smooth_and_peaks

    params = peak_parameters(settings, task)
    coarse = bin_mean(probabilities[task.label], params.bin)
    index, values, smooth = smooth_and_peaks(coarse, params.binned_sigma, params.binned_side, params.threshold)
    centers, values = plateau_candidates(index, values, coarse.shape)
    if not len(values):
        return NO_CANDIDATES
    centers = refine_peaks(centers, neighbour_values(smooth, centers))
    return Candidates(params.to_full(centers), values)


_CANDIDATES = {"watershed": candidates_watershed, "com": candidates_com, "peaks": candidates_peaks}


def candidates_all(volume: np.ndarray, tasks, method: Method, settings, ops=None,
                   progress=None) -> dict[str, Candidates]:
    """``tasks``: Task(name, label, window) -> {name: Candidates}; classes spread over ``settings.n_procs``
    threads. ``volume``: a host uint8 label map (z, y, x), or (classes, z, y, x) probabilities for ``peaks``.
    ``ops`` is the gpu backend's; unused here. ``progress(done, total)`` as each class is finished."""
    find = backend_function(_CANDIDATES, method, "cpu")
    found: dict[str, Candidates] = {}
    if method.needs == PROBABILITIES:  # one class at a time: its kernels use every core
        for task in tasks:
            found[task.name] = find(volume, task, settings)
            report(progress, len(found), len(tasks))
        return found
    shape = volume.shape
    components = scan(volume, [t.label for t in tasks])
    comp_value, comp_start = components[0], components[1]
    sizes = np.bincount(comp_value, weights=np.diff(comp_start), minlength=256) if comp_value.size else np.zeros(256)

    def one(task):
        return task.name, find(shape, components, task, settings)

    # biggest classes first, so the last one to finish is a small one
    ordered = sorted(tasks, key=lambda t: -sizes[t.label])
    workers = max(1, min(int(settings.n_procs), len(ordered)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="localize") as pool:
        for name, cands in pool.map(one, ordered):  # in order, as each class is finished
            found[name] = cands
            report(progress, len(found), len(tasks))
    return found
