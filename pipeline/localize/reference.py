"""Localization written plainly with SciPy / scikit-image: octopi 1.7's semantics, the yardstick.

Spec section 4, one class at a time, on whole-volume arrays (slow, memory-hungry, obviously right):

- ``watershed``: mask = (label_map == label) cropped to its bounding box; binary opening with the 6-connected
  cross; Euclidean distance transform (float32, as octopi); markers = 6-connected components of
  ``(dist == maximum_filter(dist, size=filter_size)) & opened`` (mode "reflect" at the crop's faces, SciPy's
  default); ``skimage.segmentation.watershed(-dist, markers, mask=opened)`` (6-connectivity); regions with
  ``V_min <= voxels <= V_max``; centroid + crop offset.
- ``com``: 6-connected components of the mask with ``V_min < voxels < V_max`` (strict); centroid. Unlike
  octopi 1.7 (whose ``com`` picks come out with x and z swapped), the result is (z, y, x).
- ``peaks`` (ours, on class probabilities): Gaussian smoothing, local maxima above a threshold, one candidate
  per plateau of maxima (see ``candidates_peaks``).

The fast backends must give the same picks (see tests/test_localize_parity.py).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

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
from pipeline.localize.methods import Method, backend_function

CROSS = ndi.generate_binary_structure(3, 1)
CUBE = np.ones((3, 3, 3), bool)


def candidates_watershed(label_map: np.ndarray, task: Task, settings) -> Candidates:
    """Candidate centres (N, 3) zyx voxels and region sizes (N,) of one class, before merge / border rules."""
    label, window = task.label, task.window
    mask = label_map == label
    slices = ndi.find_objects(mask.view(np.uint8))
    if not slices or slices[0] is None:
        return NO_CANDIDATES
    crop = slices[0]
    offset = np.array([s.start for s in crop], dtype=np.float64)
    opened = ndi.binary_opening(mask[crop], structure=CROSS)
    del mask
    if not opened.any():
        return NO_CANDIDATES
    dist = ndi.distance_transform_edt(opened).astype(np.float32)
    local_max = (dist == ndi.maximum_filter(dist, size=int(settings.filter_size))) & opened
    markers, n_markers = ndi.label(local_max, structure=CROSS)
    if n_markers == 0:
        return NO_CANDIDATES
    from skimage.segmentation import watershed

    regions = watershed(-dist, markers=markers, mask=opened, connectivity=1)
    return _region_centroids(regions, n_markers, offset, window, strict=False)


def candidates_com(label_map: np.ndarray, task: Task, settings) -> Candidates:
    """Candidate centres and sizes of one class by connected components (sizes strictly inside the window)."""
    window = task.window
    components, n = ndi.label(label_map == task.label, structure=CROSS)
    if n == 0:
        return NO_CANDIDATES
    return _region_centroids(components, n, np.zeros(3), window, strict=True)


def _region_centroids(regions: np.ndarray, n_regions: int, offset: np.ndarray, window: SizeWindow, strict: bool):
    sizes = np.bincount(regions.ravel(), minlength=n_regions + 1)[1:]
    if strict:
        keep = (sizes > window.v_min) & (sizes < window.v_max)
    else:
        keep = (sizes >= window.v_min) & (sizes <= window.v_max)
    index = np.flatnonzero(keep) + 1
    if index.size == 0:
        return NO_CANDIDATES
    centers = np.asarray(ndi.center_of_mass(np.ones(regions.shape, np.float32), regions, index), np.float64)
    return Candidates(centers.reshape(-1, 3) + offset, sizes[keep].astype(np.float64))


def bin_mean(channel: np.ndarray, b: int) -> np.ndarray:
    """Means of b x b x b blocks (float32), the far faces padded by SciPy's reflect to a multiple of b."""
    channel = np.asarray(channel, dtype=np.float32)
    if b == 1:
        return channel.copy()
    pad = [(0, -s % b) for s in channel.shape]
    padded = np.pad(channel, pad, mode="symmetric")
    z, y, x = (s // b for s in padded.shape)
    return padded.reshape(z, b, y, b, x, b).mean(axis=(1, 3, 5), dtype=np.float32)


def candidates_peaks(probabilities: np.ndarray, task: Task, settings) -> Candidates:
    """Peaks of one class's probability (channel ``task.label``), on the whole volume: means over blocks of
    ``bin`` voxels (see ``PeakParameters``), Gaussian smoothing (SciPy's reflect mode and truncate 4), voxels
    equal to the maximum of their window and >= the threshold; each 26-connected group of them (a plateau: its
    voxels are equal) is one candidate at its centroid, valued at its probability."""
    params = peak_parameters(settings, task)
    coarse = bin_mean(probabilities[task.label], params.bin)
    smooth = ndi.gaussian_filter(coarse, params.binned_sigma)
    peaks = (smooth == ndi.maximum_filter(smooth, size=params.binned_side)) & (smooth >= params.threshold)
    plateaus, n = ndi.label(peaks, structure=CUBE)
    if n == 0:
        return NO_CANDIDATES
    index = np.arange(1, n + 1)
    centers = np.asarray(ndi.center_of_mass(peaks, plateaus, index), np.float64).reshape(-1, 3)
    centers = refine_peaks(centers, neighbour_values(smooth, centers))
    return Candidates(params.to_full(centers), np.asarray(ndi.maximum(smooth, plateaus, index), np.float64))


_CANDIDATES = {"watershed": candidates_watershed, "com": candidates_com, "peaks": candidates_peaks}


def candidates_all(volume: np.ndarray, tasks, method: Method, settings, ops=None,
                   progress=None) -> dict[str, Candidates]:
    """``tasks``: Task(name, label, window) -> {name: Candidates}, one class after another on whole-volume
    arrays. ``volume``: a host uint8 label map (z, y, x), or (classes, z, y, x) probabilities for ``peaks``.
    ``ops`` is the gpu backend's; unused here. ``progress(done, total)`` as each class is finished."""
    find = backend_function(_CANDIDATES, method, "reference")
    found = {}
    for t in tasks:
        found[t.name] = find(volume, t, settings)
        report(progress, len(found), len(tasks))
    return found
