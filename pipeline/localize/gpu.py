"""GPU localization: the label map stays on the device; only the picks come back.

Same steps as the reference, per class, on CuPy arrays: mask and bounding-box crop; binary opening, maximum
filter and labelling with ``cupyx.scipy.ndimage``; the exact distance transform of cuCIM
(``cucim.core.operations.morphology.distance_transform_edt``, else CuPy's own); our numba CUDA kernels for the
seeded watershed (kernels/watershed_levels.py: synchronous flooding, level by level) and the per-region sizes
and centroids (kernels/region_stats.py). The input may be a CUDA torch tensor (shared through DLPack, no copy)
or a CuPy array.

The distances are rebuilt from the integer squared distances (``round(edt^2)``) as float32 ``sqrt`` of a
float64, exactly as SciPy + octopi's cast produce them, so the markers are the reference's whatever precision
the EDT used. The watershed can differ from scikit-image's only at plateau ties (see the kernel's docstring):
the parity tests bound that (same picks per object, each within 0.5 voxel).

Everything array-side goes through a ``DeviceOps`` bundle, so the same code runs on numpy / SciPy with the
kernels under ``NUMBA_ENABLE_CUDASIM=1`` (tests/localize_sim/).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
from pipeline.localize.methods import LABELS, Method, backend_function

log = logging.getLogger(__name__)


@dataclass
class DeviceOps:
    """Array module, ndimage module, distance transform, copy-to-host, and the two kernels of one backend.

    ``flood(key, markers, mask)`` -> int32 regions; ``stats(regions, n)`` -> (n + 1, 4) count and coordinate
    sums per region (kernels/watershed_levels.py, kernels/region_stats.py); ``release()`` hands cached device
    memory back (CuPy keeps its own pool beside torch's).
    """

    xp: Any
    ndi: Any
    edt: Callable
    to_host: Callable
    flood: Callable
    stats: Callable
    name: str = "cupy"
    release: Callable = lambda: None


def _cuda_kernels(xp):
    from kernels.region_stats import region_stats_cuda
    from kernels.watershed_levels import flood_levels_cuda

    return (
        lambda key, markers, mask: flood_levels_cuda(key, markers, mask, xp),
        lambda regions, n: region_stats_cuda(regions, n, xp),
    )


def cupy_ops() -> DeviceOps:
    """CuPy / cuCIM; imported here so CPU-only machines never import them."""
    import cupy
    import cupyx.scipy.ndimage as cndi

    try:
        from cucim.core.operations.morphology import distance_transform_edt as edt
    except ImportError:  # CuPy >= 13 ships the same PBA+ transform
        edt = cndi.distance_transform_edt
        log.debug("cuCIM not importable; using cupyx.scipy.ndimage.distance_transform_edt")
    return DeviceOps(cupy, cndi, edt, cupy.asnumpy, *_cuda_kernels(cupy), "cupy",
                     cupy.get_default_memory_pool().free_all_blocks)


def host_ops(kernels: str = "cuda") -> DeviceOps:
    """numpy / SciPy standing in for CuPy: the GPU path's logic on the host, for tests. ``kernels``: "cuda"
    launches the CUDA kernels (under ``NUMBA_ENABLE_CUDASIM=1``), "cpu" their njit twins."""
    from scipy import ndimage

    if kernels == "cuda":
        flood, stats = _cuda_kernels(np)
    else:
        from kernels.region_stats import region_stats_cpu
        from kernels.watershed_levels import flood_levels_cpu

        flood, stats = flood_levels_cpu, region_stats_cpu
    return DeviceOps(np, ndimage, ndimage.distance_transform_edt, np.asarray, flood, stats, "host")


def as_device_array(label_map, ops: DeviceOps):
    """A CUDA torch tensor or CuPy array as a C-contiguous uint8 array of ``ops.xp``, without a host copy."""
    from pipeline.errors import RunError

    xp = ops.xp
    module = type(label_map).__module__ or ""
    if module.startswith("torch"):
        label_map = label_map.detach()
        if label_map.is_cuda:
            label_map = xp.from_dlpack(label_map.contiguous())
        else:
            label_map = xp.asarray(label_map.numpy())  # a host tensor: one upload
    elif ops.name == "cupy" and not module.startswith("cupy"):
        label_map = xp.asarray(label_map)  # host array given: one upload
    array = xp.ascontiguousarray(label_map)
    if array.ndim != 3:
        raise RunError(f"localize (gpu): expected a 3-D (z, y, x) label map, got shape {tuple(array.shape)}")
    if array.dtype.kind not in "iub":
        raise RunError(f"localize (gpu): label map of dtype {array.dtype} is not an integer label map; expected "
                       "uint8 class ids (0 = background), e.g. a segmentation from 'tomopick segment'")
    if array.dtype != xp.uint8:
        if array.size:  # as the cpu backend: ids outside 0..255 are refused, not wrapped by the cast
            lo, hi = (int(v) for v in ops.to_host(xp.stack([array.min(), array.max()])))  # host sync: two ints
            if lo < 0 or hi > 255:
                raise RunError(f"localize (gpu): label map values span {lo}..{hi}; class ids must be 0..255 (uint8)")
        array = array.astype(xp.uint8)
    return array


def as_device_probabilities(probabilities, ops: DeviceOps):
    """(classes, z, y, x) probabilities (any float dtype: fp16 from segmentation) as an array of ``ops.xp``,
    without a host copy when they are on the device already."""
    from pipeline.errors import RunError

    xp = ops.xp
    module = type(probabilities).__module__ or ""
    if module.startswith("torch"):
        probabilities = probabilities.detach()
        if probabilities.is_cuda:
            probabilities = xp.from_dlpack(probabilities.contiguous())
        else:
            probabilities = xp.asarray(probabilities.float().numpy())
    elif not module.startswith(xp.__name__):
        probabilities = xp.asarray(probabilities)
    if probabilities.ndim != 4 or probabilities.dtype.kind != "f":
        raise RunError(f"localize (gpu): expected float (classes, z, y, x) probabilities, got "
                       f"{probabilities.dtype} {tuple(probabilities.shape)}")
    return probabilities


def _device_index(label_map) -> int | None:
    """CUDA ordinal of a torch tensor or CuPy array; None for host arrays."""
    module = type(label_map).__module__ or ""
    if module.startswith("torch") and label_map.is_cuda:
        return label_map.device.index
    if module.startswith("cupy"):
        return label_map.device.id
    return None


def on_device_of(label_map, ops: DeviceOps) -> contextlib.ExitStack:
    """Context making the label map's GPU current for torch's DLPack export, CuPy and numba's kernels.

    Each uses the current device, which is GPU 0 unless someone set it: without this a map on cuda:1 fails to
    export or is read across GPUs.
    """
    stack = contextlib.ExitStack()
    index = _device_index(label_map)
    if ops.name == "cupy" and index is not None:
        import cupy

        stack.enter_context(cupy.cuda.Device(index))  # numba launches on the current (primary) context
        if (type(label_map).__module__ or "").startswith("torch"):
            import torch

            stack.enter_context(torch.cuda.device(index))
    return stack


def _cross(xp):
    cross = np.zeros((3, 3, 3), bool)
    cross[1, 1, :] = cross[1, :, 1] = cross[:, 1, 1] = True
    return xp.asarray(cross)


def _bbox(mask, ops: DeviceOps):
    """Half-open bounding box of a device boolean array (one small host copy), or None if empty."""
    xp = ops.xp
    lo, hi = [], []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hit = xp.flatnonzero(mask.any(axis=other))
        if hit.size == 0:  # host sync: the size
            return None
        lo.append(hit[0])
        hi.append(hit[-1] + 1)
    box = ops.to_host(xp.stack(lo + hi))  # host sync: six ints
    return tuple(int(v) for v in box)


def _centroids_from_stats(stats_host: np.ndarray, offset, window: SizeWindow, strict: bool) -> Candidates:
    sizes = stats_host[1:, 0]
    keep = window.keeps(sizes, strict)
    if not keep.any():
        return NO_CANDIDATES
    centers = stats_host[1:, 1:][keep] / sizes[keep, None] + np.asarray(offset, np.float64)
    return Candidates(centers, sizes[keep].astype(np.float64))


def candidates_watershed(label_map, task: Task, settings, ops: DeviceOps) -> Candidates:
    """Candidate centres and region sizes of one class, from a device label map."""
    label, window = task.label, task.window
    xp, ndi = ops.xp, ops.ndi
    mask = label_map == label
    box = _bbox(mask, ops)
    if box is None:
        return NO_CANDIDATES
    crop = mask[box[0] : box[3], box[1] : box[4], box[2] : box[5]]
    del mask
    cross = _cross(xp)
    opened = ndi.binary_opening(crop, structure=cross)
    del crop
    if not bool(opened.any()):  # host sync
        return NO_CANDIDATES
    edt = ops.edt(opened)
    sq = xp.rint(edt.astype(xp.float64) ** 2).astype(xp.int32)
    del edt
    dist = xp.sqrt(sq.astype(xp.float64)).astype(xp.float32)
    local_max = (dist == ndi.maximum_filter(dist, size=int(settings.filter_size), mode="reflect")) & opened
    del dist
    markers, n_markers = ndi.label(local_max, structure=cross)
    n_markers = int(n_markers)  # host sync (CuPy returns a host int)
    del local_max
    if n_markers == 0:
        return NO_CANDIDATES
    regions = ops.flood(-sq, markers.astype(xp.int32, copy=False), opened)
    del sq, markers, opened
    stats = ops.stats(regions, n_markers)
    return _centroids_from_stats(ops.to_host(stats), box[:3], window, strict=False)


def candidates_com(label_map, task: Task, settings, ops: DeviceOps) -> Candidates:
    window = task.window
    components, n = ops.ndi.label(label_map == task.label, structure=_cross(ops.xp))
    n = int(n)  # host sync
    if n == 0:
        return NO_CANDIDATES
    stats = ops.stats(components.astype(ops.xp.int32, copy=False), n)
    return _centroids_from_stats(ops.to_host(stats), (0, 0, 0), window, strict=True)


def _out_of_memory_types():
    types = []
    try:
        import cupy

        types.append(cupy.cuda.memory.OutOfMemoryError)
    except (ImportError, AttributeError):
        pass
    return tuple(types)


def candidates_peaks(probabilities, task: Task, settings, ops: DeviceOps) -> Candidates:
    """The reference's ``peaks`` on the device, whole volume (smoothing and window maxima by cupyx.scipy.ndimage
    with SciPy's defaults); centroids of the plateaus by the region-statistics kernel. Only candidates come back."""
    xp, ndi = ops.xp, ops.ndi
    params = peak_parameters(settings, task)
    coarse = _bin_mean(probabilities[task.label].astype(xp.float32), params.bin, xp)
    smooth = ndi.gaussian_filter(coarse, params.binned_sigma)
    peaks = (smooth == ndi.maximum_filter(smooth, size=params.binned_side)) & (smooth >= params.threshold)
    plateaus, n = ndi.label(peaks, structure=xp.ones((3, 3, 3), dtype=bool))
    n = int(n)  # host sync
    if n == 0:
        return NO_CANDIDATES
    plateaus = plateaus.astype(xp.int32, copy=False)
    stats = ops.to_host(ops.stats(plateaus, n))  # (n + 1, 4): count and coordinate sums
    values = ops.to_host(ndi.maximum(smooth, plateaus, xp.arange(1, n + 1)))
    centers = stats[1:, 1:] / stats[1:, :1]
    def take(rows):  # the few values the sub-voxel refinement needs, gathered on the device
        sel = xp.asarray(rows)
        return ops.to_host(smooth[sel[:, 0], sel[:, 1], sel[:, 2]])

    centers = refine_peaks(centers, neighbour_values(smooth, centers, take))
    return Candidates(params.to_full(centers), np.asarray(values, np.float64).reshape(-1))


def _bin_mean(channel, b: int, xp):
    """``reference.bin_mean`` with the array module ``xp``."""
    if b == 1:
        return channel
    pad = [(0, -s % b) for s in channel.shape]
    padded = xp.pad(channel, pad, mode="symmetric")
    z, y, x = (s // b for s in padded.shape)
    return padded.reshape(z, b, y, b, x, b).mean(axis=(1, 3, 5), dtype=xp.float32)


_CANDIDATES = {"watershed": candidates_watershed, "com": candidates_com, "peaks": candidates_peaks}


def candidates_all(volume, tasks, method: Method, settings, ops: DeviceOps | None = None,
                   progress=None) -> dict[str, Candidates]:
    """``tasks``: Task(name, label, window) -> {name: Candidates}, classes one after another on the device.

    ``volume``: a uint8 label map (z, y, x) as a CUDA torch tensor or CuPy array (a host array is uploaded
    once). ``ops``: the array backend, CuPy's by default (tests pass ``host_ops()``).
    """
    find = backend_function(_CANDIDATES, method, "gpu")
    ops = ops or cupy_ops()
    with on_device_of(volume, ops):
        device_map = (as_device_array(volume, ops) if method.needs == LABELS
                      else as_device_probabilities(volume, ops))
        found = {}
        oom = _out_of_memory_types()
        host = None
        for task in tasks:
            try:
                found[task.name] = find(device_map, task, settings, ops)
                report(progress, len(found), len(tasks))
                continue
            except oom:
                log.warning("localize: GPU out of memory on %s; finishing it on the CPU", task.name)
            # the one fallback of this stage: this class on the CPU (one host copy of the label map). Out of the
            # except block, so the failed attempt's arrays are gone before the pool is emptied.
            ops.release()
            from pipeline.localize import cpu

            host = ops.to_host(device_map) if host is None else host
            found.update(cpu.candidates_all(host, [task], method, settings))
            report(progress, len(found), len(tasks))
        del device_map
        ops.release()  # the pool's blocks back to the driver: torch segments the next tomogram in them
    return found
