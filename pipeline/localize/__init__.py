"""Localization: label map -> particle centres per object (spec section 4), on three interchangeable backends.

``reference`` (SciPy / scikit-image, octopi's semantics, slow: the yardstick), ``cpu`` (numba kernels on
per-component crops, threads) and ``gpu`` (CuPy / cuCIM and numba CUDA kernels on a label map that stays on
the device). All three return the same type from the same arguments; see ``localize``.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from pipeline.errors import DeviceError, RunError
from pipeline.localize.common import Picks, check_objects, check_parameters, finalize, size_window

log = logging.getLogger(__name__)

__all__ = ["Picks", "localize", "choose_backend"]


def _is_device_array(label_map) -> bool:
    module = type(label_map).__module__ or ""
    if module.startswith("cupy"):
        return True
    if module.startswith("torch"):
        return bool(getattr(label_map, "is_cuda", False))
    return False


def choose_backend(label_map, backend: str = "auto") -> tuple[str, str]:
    """(backend, reason). ``auto``: gpu when the label map is already on a CUDA device and CuPy imports, else cpu."""
    if backend != "auto":
        return backend, f"asked for {backend}"
    if _is_device_array(label_map):
        from pipeline.device import cupy_available

        if cupy_available():
            return "gpu", "auto: label map is on a CUDA device and CuPy is available"
        return "cpu", "auto: label map is on a CUDA device but CuPy is not importable; copying it to the host"
    return "cpu", "auto: label map is in host memory"


def _to_host_uint8(label_map) -> np.ndarray:
    module = type(label_map).__module__ or ""
    if module.startswith("torch"):
        label_map = label_map.detach().cpu().numpy()
    elif module.startswith("cupy"):
        label_map = label_map.get()
    array = np.asarray(label_map)
    if array.ndim != 3:
        raise RunError(f"localize: expected a 3-D (z, y, x) label map, got shape {array.shape}")
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype.kind not in "iub":
        raise RunError(
            f"localize: label map of dtype {array.dtype} is not an integer label map; expected uint8 class ids "
            "(0 = background), e.g. a segmentation from 'tomopick segment'"
        )
    if array.size and (array.min() < 0 or array.max() > 255):
        raise RunError(
            f"localize: label map values span {array.min()}..{array.max()}; class ids must be 0..255 (uint8)"
        )
    return np.ascontiguousarray(array, dtype=np.uint8)


def localize(
    label_map,
    objects,
    voxel_size: float,
    *,
    method: str = "watershed",
    filter_size: int = 10,
    radius_min_scale: float = 0.5,
    radius_max_scale: float = 1.0,
    backend: str = "auto",
    n_procs: int = 8,
) -> dict[str, Picks]:
    """Particle centres of each object in one label map: ``{object name: Picks}`` (every object present).

    ``label_map``: uint8 (z, y, x) class ids; a numpy array, or for ``backend="gpu"`` a CUDA torch tensor or
    a CuPy array (it never leaves the device; only the picks come back). ``objects``: ParticleObjects
    (label, radius in Angstrom). ``r_min/r_max = radius * radius_{min,max}_scale / voxel_size`` voxels bound
    the region sizes (``4/3 pi r^3``) and ``r_min`` is the merge distance. ``backend``: ``auto`` (gpu when the
    label map is on a CUDA device and CuPy imports, else cpu), ``reference``, ``cpu`` or ``gpu``.
    ``n_procs``: worker threads of the cpu backend (classes in parallel). Scores: see ``Picks``.
    """
    check_parameters(method, filter_size, radius_min_scale, radius_max_scale, voxel_size, backend)
    objects = check_objects(objects)
    chosen, reason = choose_backend(label_map, backend)
    log.debug("localize backend %s (%s)", chosen, reason)
    windows = {obj.name: size_window(obj, voxel_size, radius_min_scale, radius_max_scale) for obj in objects}
    tasks = [(obj.name, int(obj.label), windows[obj.name]) for obj in objects]
    t0 = time.perf_counter()
    if chosen == "gpu":
        if not _is_device_array(label_map):
            from pipeline.device import cupy_available

            if not cupy_available():
                raise DeviceError(
                    "localize backend 'gpu' asked for, but CuPy is not importable or sees no GPU; "
                    "install the 'gpu' extra (cupy-cuda12x, cucim-cu12) or use backend 'cpu'"
                )
        from pipeline.localize import gpu

        shape, found = gpu.candidates_all(label_map, tasks, method, int(filter_size))
    else:
        host = _to_host_uint8(label_map)
        shape = host.shape
        if chosen == "reference":
            from pipeline.localize import reference

            found = {
                name: reference.candidates(host, label, method, int(filter_size) if method == "watershed" else 0, w)
                for name, label, w in tasks
            }
        else:
            from pipeline.localize import cpu

            found = cpu.candidates_all(host, tasks, method, int(filter_size), int(n_procs))
    picks = {name: finalize(found[name][0], found[name][1], shape, windows[name]) for name, _, _ in tasks}
    log.debug(
        "localize %s/%s: %s in %.2f s", chosen, method, ", ".join(f"{k} {len(v)}" for k, v in picks.items()),
        time.perf_counter() - t0,
    )
    return picks
