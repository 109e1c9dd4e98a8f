"""All copick I/O of the pipeline: the only module that imports copick.

Inside the pipeline everything is (z, y, x) voxels; copick stores picks as (x, y, z) Angstrom. The conversion
lives here and nowhere else: ``xyz_ang = zyx_vox[:, ::-1] * voxel_size`` (voxel centres on integer indices).

Writes are safe: a segmentation or pick set is computed completely before it is written, and an exception (or
Ctrl-C) in the middle of a write removes what was started, so nothing half-written ever looks complete.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from pipeline.errors import ProjectError, RunError
from pipeline.objects import ParticleObject
from pipeline.selectors import SegSelector

log = logging.getLogger(__name__)


def _import_copick():
    """Import copick without letting it reconfigure logging.

    copick's ``get_logger`` calls ``basicConfig(force=True)`` with a rich handler whenever one of its modules is
    imported, which would override what run_all.py / the CLI set up (a library must not configure logging).
    We import the modules we use with the root logger saved and restored, then make the remaining lazy
    ``get_logger`` calls plain ``logging.getLogger``.
    """
    import importlib
    import sys

    root_logger = logging.getLogger()
    handlers, level = root_logger.handlers[:], root_logger.level
    try:
        module = importlib.import_module("copick")
        for name in ("copick.util.log", "copick.ops.open", "copick.impl.filesystem", "copick.impl.overlay",
                     "copick.util.ome"):
            importlib.import_module(name)
    finally:
        root_logger.handlers[:] = handlers
        root_logger.setLevel(level)

    def quiet_get_logger(name, debug=False):
        return logging.getLogger(name)

    for mod_name, mod in list(sys.modules.items()):
        if mod_name.startswith("copick") and getattr(mod, "get_logger", None) is not None:
            mod.get_logger = quiet_get_logger
    return module


copick = _import_copick()



# ----------------------------------------------------------------------------------------------------------------
# coordinates


def zyx_vox_to_xyz_ang(centers_zyx_vox: np.ndarray, voxel_size: float) -> np.ndarray:
    centers = np.asarray(centers_zyx_vox, dtype=np.float64).reshape(-1, 3)
    return centers[:, ::-1] * float(voxel_size)


def xyz_ang_to_zyx_vox(picks_xyz_ang: np.ndarray, voxel_size: float) -> np.ndarray:
    picks = np.asarray(picks_xyz_ang, dtype=np.float64).reshape(-1, 3)
    return picks[:, ::-1] / float(voxel_size)


# ----------------------------------------------------------------------------------------------------------------
# project


def open_project(config_path):
    """Open a copick project from its configuration JSON; errors name the path and what is wrong."""
    path = Path(config_path)
    if not path.is_file():
        raise ProjectError(
            f"copick config '{path}': no such file; pass the project's configuration JSON (e.g. -c config.json)"
        )
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProjectError(f"copick config '{path}': not valid JSON ({exc}); pass a copick configuration JSON") from None
    if not isinstance(data, dict) or "pickable_objects" not in data:
        raise ProjectError(
            f"copick config '{path}': not a copick configuration (no 'pickable_objects' key); "
            "pass the project's configuration JSON, e.g. the one `tomopick synth` or `copick new` wrote"
        )
    if data.get("config_type", "filesystem") == "filesystem" and not data.get("overlay_root"):
        raise ProjectError(f"copick config '{path}': filesystem project without 'overlay_root'; add one (local://DIR)")
    try:
        root = copick.from_file(str(path))
    except Exception as exc:  # copick/pydantic raise many types for malformed configs
        raise ProjectError(f"copick config '{path}': copick cannot open it: {exc}") from exc
    root._tomopick_config_path = str(path)  # for messages and provenance
    return root


def _project_name(root) -> str:
    return getattr(root, "_tomopick_config_path", None) or "copick project"


def overlay_root(root) -> Path:
    """Local directory of the writable overlay root (``local://`` or a plain path)."""
    uri = root.config.overlay_root
    for prefix in ("local://", "file://"):
        if uri.startswith(prefix):
            uri = uri[len(prefix):]
    return Path(uri)


def particle_objects(root) -> list[ParticleObject]:
    """The project's particle objects (``is_particle``), sorted by label; weight from ``metadata['weight']``."""
    objects = []
    for obj in root.pickable_objects:
        if not obj.is_particle:
            continue
        if obj.label is None or obj.radius is None:
            raise ProjectError(
                f"{_project_name(root)}: particle object '{obj.name}' has no "
                f"{'label' if obj.label is None else 'radius'}; add it to the pickable_objects entry"
            )
        weight = (obj.metadata or {}).get("weight", 1)
        try:
            weight = float(weight)
        except (TypeError, ValueError):
            raise ProjectError(
                f"{_project_name(root)}: object '{obj.name}' has metadata weight {weight!r}, not a number"
            ) from None
        objects.append(ParticleObject(obj.name, int(obj.label), float(obj.radius), weight))
    return sorted(objects, key=lambda o: o.label)


def _get_run(root, run_id: str):
    run = root.get_run(run_id)
    if run is None:
        raise RunError(f"{_project_name(root)}: no run named '{run_id}'; check --run-ids against the project's runs")
    return run


def _tomogram(root, run_id: str, voxel_size: float, tomo_alg: str):
    run = _get_run(root, run_id)
    vs = run.get_voxel_spacing(float(voxel_size))
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


def _select_runs(root, run_ids):
    names = [r.name for r in root.runs]
    if run_ids is None:
        return names, {}
    known = set(names)
    wanted, skipped = [], {}
    for rid in run_ids:
        if rid in known:
            wanted.append(rid)
        else:
            skipped[rid] = "no such run in the project"
    return wanted, skipped


def tomogram_inventory(root) -> dict[str, int]:
    """``{"ALG@VOXEL_SIZE": number of runs that have it}`` over the whole project (for error messages)."""
    found: dict[str, int] = {}
    for run in root.runs:
        for vs in run.voxel_spacings:
            for tomo in vs.tomograms:
                key = f"{tomo.tomo_type}@{float(vs.voxel_size):g}"
                found[key] = found.get(key, 0) + 1
    return dict(sorted(found.items()))


def segmentation_inventory(root) -> dict[str, int]:
    """``{"NAME:USER/SESSION@VOXEL_SIZE": number of runs that have it}`` over the project (multilabel only)."""
    found: dict[str, int] = {}
    for run in root.runs:
        for seg in run.get_segmentations(is_multilabel=True):
            key = f"{seg.name}:{seg.user_id}/{seg.session_id}@{float(seg.voxel_size):g}"
            found[key] = found.get(key, 0) + 1
    return dict(sorted(found.items()))


def runs_with_tomogram(root, voxel_size: float, tomo_alg: str, run_ids=None) -> tuple[list[str], dict[str, str]]:
    """Runs that have tomogram ``tomo_alg@voxel_size``; the others map to the reason they were skipped."""
    candidates, skipped = _select_runs(root, run_ids)
    found = []
    for rid in candidates:
        vs = root.get_run(rid).get_voxel_spacing(float(voxel_size))
        if vs is None:
            skipped[rid] = f"no voxel spacing {voxel_size:g} A"
        elif not vs.get_tomograms(tomo_alg):
            skipped[rid] = f"no tomogram '{tomo_alg}' at {voxel_size:g} A"
        else:
            found.append(rid)
    return found, skipped


def _zarr_level0(copick_obj):
    import zarr

    group = zarr.open(copick_obj.zarr(), mode="r")
    return group["0"]


def _where(copick_obj) -> str:
    """The file or store behind a copick object, for messages (tomograms have no ``path``: the overlay's, or the
    static root's for a read-only one)."""
    path = getattr(copick_obj, "path", None)
    if not path and hasattr(copick_obj, "read_only"):
        path = copick_obj.static_path if copick_obj.read_only else copick_obj.overlay_path
    return str(path or copick_obj)


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


def _first(items):
    return items[0] if items else None


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
    if run.get_voxel_spacing(float(voxel_size)) is None:
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


def _remove_quietly(copick_obj, what: str) -> None:
    try:
        copick_obj.delete()
        log.warning("removed the partly written %s after a failure", what)
    except Exception as exc:  # the original failure matters more than this one
        log.error("could not remove the partly written %s: %s", what, exc)


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


# ----------------------------------------------------------------------------------------------------------------
# picks


def write_picks(
    root, run_id: str, object_name: str, centers_zyx_vox, voxel_size: float, user_id: str, session_id: str,
    scores=None,
) -> None:
    """Write picks given as (z, y, x) voxel centres: copick gets (x, y, z) Angstrom and identity transforms."""
    centers = np.asarray(centers_zyx_vox, dtype=np.float64).reshape(-1, 3)
    if not np.all(np.isfinite(centers)):
        raise RunError(f"run '{run_id}', object '{object_name}': pick positions contain NaN or inf")
    picks_xyz_ang = zyx_vox_to_xyz_ang(centers, voxel_size)
    transforms = np.broadcast_to(np.eye(4), (len(centers), 4, 4)).copy()
    if scores is not None:
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        if scores.shape[0] != len(centers):
            raise ValueError(f"{len(scores)} scores for {len(centers)} picks")
    run = _get_run(root, run_id)
    if root.get_object(object_name) is None:
        raise RunError(f"{_project_name(root)}: no pickable object '{object_name}'; check --pick-objects")
    copick_picks = run.new_picks(object_name=object_name, session_id=session_id, user_id=user_id, exist_ok=True)
    try:
        copick_picks.from_numpy(picks_xyz_ang, transforms, scores=scores)
    except BaseException:
        _remove_quietly(copick_picks, f"picks {object_name} {user_id}/{session_id} of run '{run_id}'")
        raise


def _find_picks(run, object_name: str, user_id: str, session_id: str):
    return _first(run.get_picks(object_name=object_name, user_id=user_id, session_id=session_id))


def picks_exist(root, run_id: str, object_name: str, user_id: str, session_id: str) -> bool:
    return _find_picks(_get_run(root, run_id), object_name, user_id, session_id) is not None


def remove_picks(root, run_id: str, object_name: str, user_id: str, session_id: str) -> bool:
    """Delete a pick set if present (used to undo a run's partial output); True if removed."""
    copick_picks = _find_picks(_get_run(root, run_id), object_name, user_id, session_id)
    if copick_picks is None:
        return False
    copick_picks.delete()
    return True


def read_picks(root, run_id: str, object_name: str, user_id: str, session_id: str, voxel_size: float) -> np.ndarray:
    """Particle centres as (N, 3) float64 (z, y, x) voxels; location plus the transform's translation.

    Missing picks give an empty (0, 3) array (octopi: no GT -> every prediction is a FP).
    """
    run = _get_run(root, run_id)
    what = f"run '{run_id}', object '{object_name}', picks {user_id}/{session_id if session_id is not None else '*'}"
    try:
        copick_picks = _find_picks(run, object_name, user_id, session_id)
        if copick_picks is None:
            return np.zeros((0, 3), dtype=np.float64)
        picks_xyz_ang = np.asarray(copick_picks.full_positions(), dtype=np.float64).reshape(-1, 3)
    except Exception as exc:  # copick/pydantic: truncated JSON, "points": null, malformed points
        where = _where(copick_picks) if "copick_picks" in locals() and copick_picks is not None else "its file"
        raise RunError(f"{what}: cannot read {where}: {type(exc).__name__}: {str(exc).splitlines()[0]}; fix or "
                       "remove the file") from None
    if not np.all(np.isfinite(picks_xyz_ang)):
        bad = int((~np.isfinite(picks_xyz_ang)).any(axis=1).sum())
        raise RunError(f"{what}: {bad} of {len(picks_xyz_ang)} points in {_where(copick_picks)} have NaN or "
                       "infinite coordinates; fix or remove them")
    if len(picks_xyz_ang) == 0:
        return np.zeros((0, 3), dtype=np.float64)
    return xyz_ang_to_zyx_vox(picks_xyz_ang, voxel_size)


def read_raw_picks(root, run_id: str, object_name: str, user_id: str, session_id: str):
    """A pick set exactly as stored: (positions xyz Angstrom, transforms, scores), or None when absent (to put
    it back after a failed rewrite)."""
    copick_picks = _find_picks(_get_run(root, run_id), object_name, user_id, session_id)
    if copick_picks is None:
        return None
    positions, transforms = copick_picks.numpy()
    return np.asarray(positions), np.asarray(transforms), np.asarray(copick_picks.scores())


def write_raw_picks(root, run_id: str, object_name: str, user_id: str, session_id: str, raw) -> None:
    """Write back a pick set read by ``read_raw_picks``."""
    positions, transforms, scores = raw
    run = _get_run(root, run_id)
    copick_picks = run.new_picks(object_name=object_name, session_id=session_id, user_id=user_id, exist_ok=True)
    copick_picks.from_numpy(positions, transforms, scores=scores if len(scores) == len(positions) else None)


def pick_sets(root, run_ids=None) -> dict[tuple[str, str], int]:
    """``{(user, session): number of pick files}`` in the runs (all when None): what a typo'd id can be told."""
    found: dict[tuple[str, str], int] = {}
    for run in root.runs:
        if run_ids is not None and run.name not in run_ids:
            continue
        for picks in run.picks:
            key = (str(picks.user_id), str(picks.session_id))
            found[key] = found.get(key, 0) + 1
    return dict(sorted(found.items()))


def read_pick_scores(root, run_id: str, object_name: str, user_id: str, session_id: str) -> np.ndarray:
    copick_picks = _find_picks(_get_run(root, run_id), object_name, user_id, session_id)
    if copick_picks is None:
        return np.zeros(0, dtype=np.float64)
    return copick_picks.scores()
