"""Tomograms and multilabel segmentations of a copick project as numpy (z, y, x) arrays: read chunk by chunk
(a missing or damaged chunk is an error, never zeros), written whole or removed again on failure."""

from __future__ import annotations

import numpy as np

from pipeline.copick_io._base import _first, _get_run, _remove_quietly, _voxel_spacing, _where
from pipeline.copick_io.project import _select_runs
from pipeline.errors import RunError
from pipeline.selectors import SegSelector


def _tomogram(root, run_id: str, voxel_size: float, tomo_alg: str):
    run = _get_run(root, run_id)
    vs = _voxel_spacing(run, voxel_size)
    if vs is None:
        have = sorted(v.voxel_size for v in run.voxel_spacings)
        raise RunError(f"run '{run_id}': no voxel spacing {voxel_size:g} A (it has {have}); check --voxel-size")
    tomo = _first(vs.get_tomograms(tomo_alg))
    if tomo is None:
        have = sorted(t.tomo_type for t in vs.tomograms)
        raise RunError(
            f"run '{run_id}': no tomogram '{tomo_alg}' at {voxel_size:g} A (it has {have}); check --tomo-alg"
        )
    return tomo



def _zarr_level0(copick_obj):
    import zarr

    group = zarr.open(copick_obj.zarr(), mode="r")
    return group["0"]



def _missing_chunks(arr) -> list[str]:
    """Chunk keys of a zarr array that are absent from its store: zarr would read them as its fill value
    (zeros), silently. Checked by listing the store once (``nchunks_initialized``) and only then key by key."""
    import itertools
    import math

    if arr.nchunks_initialized >= arr.nchunks:
        return []
    grid = [range(math.ceil(s / c)) for s, c in zip(arr.shape, arr.chunks)]
    store = arr.chunk_store if arr.chunk_store is not None else arr.store
    prefix = f"{arr.path}/" if arr.path else ""
    sep = getattr(arr, "_dimension_separator", None) or "."
    return [key for key in (prefix + sep.join(map(str, idx)) for idx in itertools.product(*grid))
            if key not in store]


def read_array(copick_obj, what: str, dtype) -> np.ndarray:
    """Level 0 of a copick tomogram or segmentation as a numpy array of ``dtype``, read chunk slab by chunk slab.

    A missing chunk (zarr would read zeros) or an unreadable one (corrupt compression, a missing ``.zattrs`` or
    level) is a RunError naming ``what`` and the store's path, never zeros or a bare traceback.
    """
    where = _where(copick_obj)
    try:
        arr = _zarr_level0(copick_obj)
        missing = _missing_chunks(arr)
        if missing:
            raise RunError(f"{what}: {len(missing)} of {arr.nchunks} chunks of array '0' are missing from {where} "
                           f"(e.g. {', '.join(missing[:3])}); zarr would read them as zeros. Re-write or re-download "
                           "it")
        if arr.ndim != 3:
            raise RunError(f"{what} has shape {arr.shape} at {where}, expected 3 axes (z, y, x)")
        out = np.empty(arr.shape, dtype=dtype)
        step = int(arr.chunks[0]) if arr.chunks else 64
        for z0 in range(0, arr.shape[0], step):
            out[z0:z0 + step] = arr[z0:z0 + step]
        return out
    except RunError:
        raise
    except Exception as exc:  # zarr / numcodecs raise KeyError, ValueError, RuntimeError ("blosc decompression")
        raise RunError(f"{what}: cannot read {where}: {type(exc).__name__}: {exc}; the store is damaged or "
                       "incomplete, re-write or re-download it") from None


def tomogram_shape(root, run_id: str, voxel_size: float, tomo_alg: str) -> tuple[int, int, int]:
    return tuple(int(s) for s in _zarr_level0(_tomogram(root, run_id, voxel_size, tomo_alg)).shape)


def read_tomogram(root, run_id: str, voxel_size: float, tomo_alg: str) -> np.ndarray:
    """The full-resolution tomogram as a float32 (z, y, x) array (read chunk by chunk, one output buffer)."""
    tomo = _tomogram(root, run_id, voxel_size, tomo_alg)
    return read_array(tomo, f"run '{run_id}': tomogram {tomo_alg}@{voxel_size:g}", np.float32)


# ----------------------------------------------------------------------------------------------------------------
# segmentations


def _find_segmentation(run, voxel_size: float, seg: SegSelector):
    return _first(run.get_segmentations(
        name=seg.name, user_id=seg.user_id, session_id=seg.session_id, voxel_size=float(voxel_size),
        is_multilabel=True,
    ))


def segmentation_exists(root, run_id: str, voxel_size: float, seg: SegSelector) -> bool:
    return _find_segmentation(_get_run(root, run_id), voxel_size, seg) is not None


def write_segmentation(root, run_id: str, label_map_zyx: np.ndarray, voxel_size: float, seg: SegSelector) -> None:
    """Write a uint8 label map as multilabel segmentation ``seg``; on any failure the segmentation is removed."""
    label_map = np.asarray(label_map_zyx)
    if label_map.ndim != 3:
        raise RunError(f"run '{run_id}': label map has shape {label_map.shape}, expected (z, y, x)")
    if label_map.dtype != np.uint8:
        if label_map.size and (label_map.min() < 0 or label_map.max() > 255):
            raise RunError(f"run '{run_id}': label map values outside 0..255 cannot be stored as uint8")
        label_map = label_map.astype(np.uint8)
    run = _get_run(root, run_id)
    if _voxel_spacing(run, voxel_size) is None:
        run.new_voxel_spacing(voxel_size, exist_ok=True)
    old = _find_segmentation(run, voxel_size, seg)
    if old is not None:
        old.delete()  # overwrite = remove, then write fresh; never a mix of old and new chunks
    copick_seg = run.new_segmentation(
        voxel_size=voxel_size, name=seg.name, session_id=seg.session_id, is_multilabel=True,
        user_id=seg.user_id, exist_ok=True,
    )
    try:
        copick_seg.from_numpy(label_map, dtype=np.uint8)
    except BaseException:
        _remove_quietly(copick_seg, f"segmentation {seg.uri()} of run '{run_id}'")
        raise


def remove_segmentation(root, run_id: str, voxel_size: float, seg: SegSelector) -> bool:
    """Delete segmentation ``seg`` of a run if present (used to undo a run's partial output); True if removed."""
    copick_seg = _find_segmentation(_get_run(root, run_id), voxel_size, seg)
    if copick_seg is None:
        return False
    copick_seg.delete()
    return True


def read_segmentation(root, run_id: str, voxel_size: float, seg: SegSelector) -> np.ndarray:
    """The multilabel segmentation ``seg`` of a run as uint8 (z, y, x); RunError if it is missing."""
    run = _get_run(root, run_id)
    copick_seg = _find_segmentation(run, voxel_size, seg)
    if copick_seg is None:
        raise RunError(
            f"run '{run_id}': no multilabel segmentation {seg.uri()} at {voxel_size:g} A; "
            "run `tomopick segment` first or check --seg-info/--seg-uri"
        )
    return read_array(copick_seg, f"run '{run_id}': segmentation {seg.uri()}", np.uint8)


def runs_with_segmentation(root, voxel_size: float, seg: SegSelector, run_ids=None) -> tuple[list[str], dict[str, str]]:
    candidates, skipped = _select_runs(root, run_ids)
    found = []
    for rid in candidates:
        if _find_segmentation(root.get_run(rid), voxel_size, seg) is None:
            skipped[rid] = f"no segmentation {seg.uri()} at {voxel_size:g} A"
        else:
            found.append(rid)
    return found, skipped


