"""Localization: a label map (or class probabilities) -> particle centres per object (spec section 4).

Methods x backends. A method (``methods.py``: watershed, com on label maps; peaks on class probabilities) says
what it needs and what its score is;
a backend implements every method with one signature, ``candidates_all(volume, tasks, method, settings, ops)
-> {name: Candidates}``: ``reference`` (SciPy / scikit-image, octopi's semantics, slow: the yardstick), ``cpu``
(numba kernels on per-component crops, threads) and ``gpu`` (CuPy / cuCIM and numba CUDA kernels on a volume
that stays on the device). ``localize`` prepares the input for the method, picks the backend and does what all
share (merge, border rule, scores, in ``common.py``).
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np

from pipeline.errors import ConfigError, DeviceError, RunError
from pipeline.localize.common import Picks, Task, check_objects, check_parameters, finalize, size_window
from pipeline.localize.methods import LABELS, PROBABILITIES, get_method

log = logging.getLogger(__name__)

__all__ = ["Picks", "localize", "choose_backend", "is_device_array"]


def is_device_array(volume) -> bool:
    """True for a CUDA torch tensor or a CuPy array."""
    module = type(volume).__module__ or ""
    if module.startswith("cupy"):
        return True
    if module.startswith("torch"):
        return bool(getattr(volume, "is_cuda", False))
    return False


def choose_backend(volume, backend: str = "auto") -> tuple[str, str]:
    """(backend, reason). ``auto``: gpu when the volume is already on a CUDA device and CuPy imports, else cpu."""
    if backend != "auto":
        return backend, f"asked for {backend}"
    if is_device_array(volume):
        from pipeline.device import cupy_available

        if cupy_available():
            return "gpu", "auto: the volume is on a CUDA device and CuPy is available"
        return "cpu", "auto: the volume is on a CUDA device but CuPy is not importable; copying it to the host"
    return "cpu", "auto: the volume is in host memory"


def _to_host(volume) -> np.ndarray:
    """A torch tensor (any device), CuPy array or array-like as a numpy array: CuPy refuses ``np.asarray``
    (its ``__array__`` raises TypeError), so a device array is copied back explicitly."""
    module = type(volume).__module__ or ""
    if module.startswith("torch"):
        volume = volume.detach()
        return (volume.float() if str(volume.dtype) == "torch.bfloat16" else volume).cpu().numpy()  # numpy has no bf16
    if module.startswith("cupy"):
        return volume.get()
    return np.asarray(volume)


def _to_host_uint8(label_map) -> np.ndarray:
    array = _to_host(label_map)
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


def _argmax_labels(probabilities):
    """(classes, z, y, x) probabilities -> uint8 label map, on the array's own device (torch, CuPy or numpy)."""
    module = type(probabilities).__module__ or ""
    if module.startswith("torch"):
        import torch

        return torch.argmax(probabilities, dim=0).to(torch.uint8)
    if module.startswith("cupy"):
        import cupy

        return cupy.argmax(probabilities, axis=0).astype(cupy.uint8)
    return np.argmax(np.asarray(probabilities), axis=0).astype(np.uint8)


def prepare_input(volume, needs: str):
    """The volume a method needs: a label map (class probabilities are argmax-ed where they are) or the
    (classes, z, y, x) probabilities themselves."""
    ndim = len(getattr(volume, "shape", ()))
    if needs == LABELS:
        return _argmax_labels(volume) if ndim == 4 else volume
    if ndim != 4:
        raise RunError(f"localize: this method needs class probabilities (classes, z, y, x), got an array of shape "
                       f"{tuple(getattr(volume, 'shape', ()))}; segment with probabilities or use a label-map method")
    return volume


def _backend_module(name: str):
    if name == "reference":
        from pipeline.localize import reference as module
    elif name == "cpu":
        from pipeline.localize import cpu as module
    else:
        from pipeline.localize import gpu as module
    return module


def localize(volume, objects, voxel_size: float, settings=None, *, backend: str = "auto", ops=None,
             progress=None, **overrides) -> dict[str, Picks]:
    """Particle centres of each object in one volume: ``{object name: Picks}`` (every object present).

    ``volume``: a (z, y, x) integer label map of class ids, or (classes, z, y, x) class probabilities; a numpy
    array or torch tensor, or for the gpu backend a CUDA torch tensor / CuPy array (it never leaves the device;
    only the picks come back). ``objects``: ParticleObjects (label, radius in Angstrom). ``settings``: a
    ``pipeline.config.LocalizeConfig`` (method, filter_size, radius scales, n_procs); ``overrides`` replace its
    fields by name (``method="com"``). ``r_min/r_max = radius * radius_{min,max}_scale / voxel_size`` voxels
    bound the region sizes (``4/3 pi r^3``) and ``r_min`` is the merge distance. ``backend``: ``auto`` (gpu
    when the volume is on a CUDA device and CuPy imports, else cpu), ``reference``, ``cpu`` or ``gpu``;
    ``ops``: the gpu backend's array operations (tests run its logic on the host with ``gpu.host_ops()``).
    ``progress(done, total)``: called as each object class is finished. Scores: see ``Picks``.
    """
    from pipeline.config import LocalizeConfig

    settings = settings if settings is not None else LocalizeConfig()
    try:
        settings = dataclasses.replace(settings, **overrides)
    except TypeError as exc:
        raise ConfigError(f"localize: {exc}; settings are the fields of LocalizeConfig") from None
    check_parameters(settings.method, settings.filter_size, settings.radius_min_scale, settings.radius_max_scale,
                     voxel_size, backend)
    method = get_method(settings.method)
    objects = check_objects(objects)
    volume = prepare_input(volume, method.needs)
    chosen, reason = ("gpu", "gpu operations given") if ops is not None else choose_backend(volume, backend)
    log.debug("localize backend %s (%s)", chosen, reason)
    tasks = [Task(obj.name, int(obj.label),
                  size_window(obj, voxel_size, settings.radius_min_scale, settings.radius_max_scale))
             for obj in objects]
    t0 = time.perf_counter()
    if chosen == "gpu":
        if ops is None and not is_device_array(volume):
            from pipeline.device import cupy_available

            if not cupy_available():
                raise DeviceError(
                    "localize backend 'gpu' asked for, but CuPy is not importable or sees no GPU; "
                    "install the 'gpu' extra (cupy-cuda12x, cucim-cu12) or use backend 'cpu'"
                )
    elif method.needs == LABELS:
        volume = _to_host_uint8(volume)
    elif method.needs == PROBABILITIES and not isinstance(volume, np.ndarray):
        volume = _to_host(volume)  # a CuPy array too: np.asarray refuses it
    shape = tuple(int(s) for s in volume.shape[-3:])
    found = _backend_module(chosen).candidates_all(volume, tasks, method, settings, ops=ops, progress=progress)
    picks = {t.name: finalize(found[t.name].centers_zyx_vox, found[t.name].sizes, shape, t.window, method.score)
             for t in tasks}
    if method.name == "peaks" and settings.overlap_check:
        from pipeline.localize.overlaps import drop_claimed_by_smaller

        picks, dropped = drop_claimed_by_smaller(picks, tasks, volume)
        if dropped:
            log.debug("peaks on particles of a smaller class, dropped: %s",
                     ", ".join(f"{name} {n}" for name, n in dropped.items()))
    log.debug(
        "localize %s/%s: %s in %.2f s", chosen, method.name, ", ".join(f"{k} {len(v)}" for k, v in picks.items()),
        time.perf_counter() - t0,
    )
    return picks
