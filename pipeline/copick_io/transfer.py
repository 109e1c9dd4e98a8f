"""Bringing data into a project and taking picks out (``tomopick import-mrc`` and ``export``): new projects, runs
and tomograms, and pick sets in copick's own units (x, y, z Angstrom), without the pipeline's voxel grid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline.copick_io._base import (
    _first,
    _get_run,
    _project_name,
    _remove_quietly,
    _voxel_spacing,
    _where,
    copick,
    log,
)
from pipeline.errors import ProjectError, RunError


def new_project_config(config_path, pickable_objects: list[dict], name: str, description: str) -> Path:
    """Write the configuration JSON of a new filesystem project whose data all live in its overlay,
    ``<config folder>/overlay`` (created); refuses to replace an existing file."""
    from pipeline import atomic

    config_path = Path(config_path)
    if config_path.exists():
        raise ProjectError(f"copick config '{config_path}' exists already; it would not be replaced")
    overlay = config_path.parent.resolve() / "overlay"
    overlay.mkdir(parents=True, exist_ok=True)
    doc = {"config_type": "filesystem", "name": name, "description": description, "version": copick.__version__,
           "pickable_objects": pickable_objects, "overlay_root": f"local://{overlay}",
           "overlay_fs_args": {"auto_mkdir": True}}
    atomic.write_text(config_path, json.dumps(doc, indent=2) + "\n")
    return config_path


def pickable_object_dicts(config_path) -> list[dict]:
    """The ``pickable_objects`` entries of a copick config, as stored (to make a project with the same ones)."""
    try:
        doc = json.loads(Path(config_path).read_text())
        objects = doc["pickable_objects"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ProjectError(f"copick config '{config_path}': cannot read its pickable_objects ({exc})") from None
    if not isinstance(objects, list) or not objects:
        raise ProjectError(f"copick config '{config_path}': 'pickable_objects' is empty")
    return objects


def run_names(root) -> list[str]:
    return [run.name for run in root.runs]


def run_aliases(root) -> dict[str, str]:
    """Other names of runs: a portal run's name on the portal (``TS_5_4``) -> its copick name (the portal run id,
    ``16463``). Empty for filesystem projects."""
    return {run.meta.portal_run_name: run.name for run in root.runs
            if getattr(run.meta, "portal_run_name", None) and run.meta.portal_run_name != run.name}


def has_tomogram(root, run_id: str, voxel_size: float, tomo_alg: str) -> bool:
    run = root.get_run(run_id)
    vs = _voxel_spacing(run, voxel_size) if run is not None else None
    return vs is not None and bool(vs.get_tomograms(tomo_alg))


def tomogram_geometry(root, run_ids, voxel_size: float, tomo_alg: str) -> dict[str, tuple]:
    """run -> (shape_zyx, voxel_size) of tomogram ``tomo_alg@voxel_size`` for the runs that have it."""
    from pipeline.copick_io.volumes import tomogram_shape

    return {rid: (tomogram_shape(root, rid, voxel_size, tomo_alg), float(voxel_size))
            for rid in run_ids if has_tomogram(root, rid, voxel_size, tomo_alg)}


def write_tomogram(root, run_id: str, volume_zyx: np.ndarray, voxel_size: float, tomo_alg: str,
                   levels: int = 3) -> None:
    """Write a float32 tomogram (OME-Zarr, ``levels`` pyramid levels) into run ``run_id`` of the overlay, creating
    the run when it is new. A run that has ``tomo_alg@voxel_size`` already is refused (never overwritten); on any
    failure the tomogram, and the run if this call created it, are removed."""
    if has_tomogram(root, run_id, voxel_size, tomo_alg):
        raise RunError(f"{_project_name(root)}: run '{run_id}' has a tomogram {tomo_alg}@{voxel_size:g} already; "
                       "import under another name (--run-names) or tomogram type (--tomo-alg), or delete it first")
    created = root.get_run(run_id) is None
    run = root.new_run(run_id, exist_ok=True) if created else root.get_run(run_id)
    tomogram = None
    try:
        vs = _voxel_spacing(run, voxel_size) or run.new_voxel_spacing(float(voxel_size), exist_ok=True)
        tomogram = vs.new_tomogram(tomo_alg, exist_ok=True)
        tomogram.from_numpy(np.asarray(volume_zyx, dtype=np.float32), levels=levels)
    except BaseException:
        if tomogram is not None:
            _remove_quietly(tomogram, f"tomogram {tomo_alg}@{voxel_size:g} of run '{run_id}'")
        if created:
            try:
                root.delete_run(run_id)
            except Exception as exc:  # the original failure matters more
                log.error("could not remove the new run '%s' after a failure: %s", run_id, exc)
        raise


def write_picks_ang(root, run_id: str, object_name: str, xyz_ang, user_id: str, session_id: str, *,
                    scores=None, transforms=None) -> None:
    """Write picks given in copick's units, (x, y, z) Angstrom (identity orientations unless ``transforms``);
    removed again on failure."""
    xyz = np.asarray(xyz_ang, dtype=np.float64).reshape(-1, 3)
    if not np.all(np.isfinite(xyz)):
        raise RunError(f"run '{run_id}', object '{object_name}': pick positions contain NaN or inf")
    if transforms is None:
        transforms = np.broadcast_to(np.eye(4), (len(xyz), 4, 4)).copy()
    run = _get_run(root, run_id)
    if root.get_object(object_name) is None:
        raise RunError(f"{_project_name(root)}: no pickable object '{object_name}'")
    picks = run.new_picks(object_name=object_name, session_id=session_id, user_id=user_id, exist_ok=True)
    try:
        picks.from_numpy(xyz, np.asarray(transforms, dtype=np.float64),
                         scores=None if scores is None else np.asarray(scores, dtype=np.float64))
    except BaseException:
        _remove_quietly(picks, f"picks {object_name} {user_id}/{session_id} of run '{run_id}'")
        raise


def read_picks_ang(root, run_id: str, object_name: str, user_id: str, session_id: str | None):
    """(xyz Angstrom (N, 3) particle centres = location + translation, rotations (N, 3, 3), scores (N,)), or
    None when the run has no such pick set (``session_id`` None: the first session of that user)."""
    run = _get_run(root, run_id)
    picks = _first(run.get_picks(object_name=object_name, user_id=user_id, session_id=session_id))
    if picks is None:
        return None
    try:
        positions, transforms = picks.numpy()
        scores = np.asarray(picks.scores(), dtype=np.float64).reshape(-1)
    except Exception as exc:  # copick/pydantic: truncated JSON, malformed points
        raise RunError(f"run '{run_id}', picks {object_name} {user_id}/{session_id}: cannot read {_where(picks)}: "
                       f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    transforms = np.asarray(transforms, dtype=np.float64).reshape(-1, 4, 4)
    return positions + transforms[:, :3, 3], transforms[:, :3, :3], scores
