"""Pick sets of a copick project: (z, y, x) voxels in the pipeline, (x, y, z) Angstrom in copick."""

from __future__ import annotations

import numpy as np

from pipeline.copick_io._base import _first, _get_run, _project_name, _remove_quietly, _where
from pipeline.copick_io.coords import xyz_ang_to_zyx_vox, zyx_vox_to_xyz_ang
from pipeline.errors import RunError


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
    return read_scored_picks(root, run_id, object_name, user_id, session_id, voxel_size)[0]


def read_scored_picks(root, run_id: str, object_name: str, user_id: str, session_id: str, voxel_size: float):
    """(centres (N, 3) z, y, x voxels, scores (N,)) as ``read_picks``; copick gives 1.0 to a point without score."""
    run = _get_run(root, run_id)
    what = f"run '{run_id}', object '{object_name}', picks {user_id}/{session_id if session_id is not None else '*'}"
    copick_picks = None
    try:
        copick_picks = _find_picks(run, object_name, user_id, session_id)
        if copick_picks is None:
            return np.zeros((0, 3), dtype=np.float64), np.zeros(0, dtype=np.float64)
        picks_xyz_ang = np.asarray(copick_picks.full_positions(), dtype=np.float64).reshape(-1, 3)
        scores = np.asarray(copick_picks.scores(), dtype=np.float64).reshape(-1)
    except Exception as exc:  # copick/pydantic: truncated JSON, "points": null, malformed points
        where = _where(copick_picks) if copick_picks is not None else "its file"
        raise RunError(f"{what}: cannot read {where}: {type(exc).__name__}: {str(exc).splitlines()[0]}; fix or "
                       "remove the file") from None
    if not np.all(np.isfinite(picks_xyz_ang)):
        bad = int((~np.isfinite(picks_xyz_ang)).any(axis=1).sum())
        raise RunError(f"{what}: {bad} of {len(picks_xyz_ang)} points in {_where(copick_picks)} have NaN or "
                       "infinite coordinates; fix or remove them")
    if len(picks_xyz_ang) == 0:
        return np.zeros((0, 3), dtype=np.float64), np.zeros(0, dtype=np.float64)
    return xyz_ang_to_zyx_vox(picks_xyz_ang, voxel_size), scores


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


def runs_with_pick_set(root, run_ids, user_id: str, session_id: str | None) -> list[str]:
    """The runs of ``run_ids`` (in that order) that have a pick file of ``user_id`` / ``session_id`` (None: any
    session), empty or not: the runs annotated by that user."""
    wanted = set(run_ids)
    found = set()
    for run in root.runs:
        if run.name not in wanted:
            continue
        if any(str(p.user_id) == user_id and (session_id is None or str(p.session_id) == str(session_id))
               for p in run.picks):
            found.add(run.name)
    return [r for r in run_ids if r in found]


def read_pick_scores(root, run_id: str, object_name: str, user_id: str, session_id: str) -> np.ndarray:
    copick_picks = _find_picks(_get_run(root, run_id), object_name, user_id, session_id)
    if copick_picks is None:
        return np.zeros(0, dtype=np.float64)
    return copick_picks.scores()
